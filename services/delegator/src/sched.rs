//! Pure scheduling rules: which job to lease from, and how big a lease may be.

use rand::Rng;

/// Job ids in a weighted random order (Efraimidis–Spirakis sampling without replacement):
/// a job of weight 3 comes first about three times as often as one of weight 1, and every
/// job with weight > 0 comes first sometimes, so none starves.
pub fn weighted_order(jobs: &[(i64, i32)], rng: &mut impl Rng) -> Vec<i64> {
    let mut keyed: Vec<(f64, i64)> = jobs
        .iter()
        .map(|&(id, w)| {
            let u: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
            (u.powf(1.0 / w.max(1) as f64), id)
        })
        .collect();
    keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
    keyed.into_iter().map(|(_, id)| id).collect()
}

/// URLs handed out for a chunk: whole (up to `max_urls`) while it is healthy, then halved
/// with each failure beyond `split_after`, down to a single URL, so a poison URL ends up alone.
pub fn lease_size(chunk_size: i64, failures: i32, split_after: i32, max_urls: i64) -> i64 {
    let base = chunk_size.min(max_urls).max(1);
    if failures < split_after {
        return base;
    }
    let halvings = (failures - split_after + 1).min(62) as u32;
    (chunk_size >> halvings).max(1).min(base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn weights_share_leases_without_starvation() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let jobs = [(1, 3), (2, 1), (3, 0)];
        let mut first = [0usize; 4];
        for _ in 0..10_000 {
            let order = weighted_order(&jobs, &mut rng);
            assert_eq!(order.len(), 3);
            first[order[0] as usize] += 1;
        }
        // Weights 3:1:1 (0 counts as 1) => 60% / 20% / 20%.
        assert!((5700..6300).contains(&first[1]), "{first:?}");
        assert!((1700..2300).contains(&first[2]), "{first:?}");
        assert!((1700..2300).contains(&first[3]), "{first:?}");
    }

    #[test]
    fn failing_chunks_shrink_to_single_urls() {
        assert_eq!(lease_size(500, 0, 3, 100_000), 500);
        assert_eq!(lease_size(500, 2, 3, 100_000), 500);
        assert_eq!(lease_size(500, 3, 3, 100_000), 250);
        assert_eq!(lease_size(500, 4, 3, 100_000), 125);
        assert_eq!(lease_size(500, 11, 3, 100_000), 1);
        assert_eq!(lease_size(500, 90, 3, 100_000), 1);
        assert_eq!(lease_size(500, 0, 3, 20), 20);
    }
}
