//! Model ids and the A/B rule: which model detects a URL, a job's model or, for an A/B job,
//! its second model for a share of the URLs, fixed per URL id so that every lease of the URL
//! (re-issues, retries) goes to the same model and the share holds in any slice of the input.

/// Characters a model id may hold (it travels in Consul tags and file names).
pub fn valid_model_id(id: &str) -> bool {
    id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The Consul tag of detectors serving `model_id` (see `discovery::Target`).
pub fn consul_tag(model_id: &str) -> String {
    format!("model-{model_id}")
}

/// The model for `url_id`: `alt` when the URL's hash falls in the first `alt_share` of the
/// hash space, else `model`.
pub fn model_for<'a>(url_id: i64, model: &'a str, alt: &'a str, alt_share: f64) -> &'a str {
    if alt.is_empty() || alt_share <= 0.0 {
        return model;
    }
    // splitmix64: consecutive ids spread evenly over [0, 1).
    let mut z = (url_id as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
    if unit < alt_share {
        alt
    } else {
        model
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_holds_in_every_slice_and_each_url_keeps_its_model() {
        let count = |ids: std::ops::Range<i64>| ids.filter(|&i| model_for(i, "a", "b", 0.1) == "b").count();
        // Binomial(100,000, 0.1): sd 95; a 5 sd bound.
        let n = count(crate::url_id(3, 0)..crate::url_id(3, 100_000));
        assert!((10_000 - 475..=10_000 + 475).contains(&n), "{n} of 100,000");
        let m = count(crate::url_id(9, 5_000_000)..crate::url_id(9, 5_100_000));
        assert!((10_000 - 475..=10_000 + 475).contains(&m), "{m} of 100,000 later in a job");
        assert_eq!(model_for(42, "a", "b", 0.1), model_for(42, "a", "b", 0.1));
        assert_eq!(model_for(42, "a", "", 0.5), "a");
        assert!((0..1000).all(|i| model_for(i, "a", "b", 1.0) == "b"));
        assert!((0..1000).all(|i| model_for(i, "a", "b", 0.0) == "a"));
    }

    #[test]
    fn model_ids_are_tag_and_file_safe() {
        assert!(valid_model_id("retinaface-mnet025-320-v1"));
        assert!(valid_model_id(""));
        assert!(!valid_model_id("a b") && !valid_model_id("a/b") && !valid_model_id(&"x".repeat(65)));
    }
}
