//! Greedy non-maximum suppression with torchvision's semantics (areas without +1,
//! suppress when IoU > threshold, ties broken by original order).

/// Indices of kept boxes, best score first. `boxes` is x1,y1,x2,y2 per box.
pub fn nms(boxes: &[f32], scores: &[f32], iou_threshold: f32) -> Vec<usize> {
    let n = scores.len();
    let mut order: Vec<usize> = (0..n).collect();
    // Stable sort: equal scores keep their original order, like a stable torch.sort.
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let area = |i: usize| (boxes[i * 4 + 2] - boxes[i * 4]) * (boxes[i * 4 + 3] - boxes[i * 4 + 1]);
    let mut suppressed = vec![false; n];
    let mut keep = Vec::new();
    for (pos, &i) in order.iter().enumerate() {
        if suppressed[i] {
            continue;
        }
        keep.push(i);
        let ai = area(i);
        for &j in &order[pos + 1..] {
            if suppressed[j] {
                continue;
            }
            let xx1 = boxes[i * 4].max(boxes[j * 4]);
            let yy1 = boxes[i * 4 + 1].max(boxes[j * 4 + 1]);
            let xx2 = boxes[i * 4 + 2].min(boxes[j * 4 + 2]);
            let yy2 = boxes[i * 4 + 3].min(boxes[j * 4 + 3]);
            let inter = (xx2 - xx1).max(0.0) * (yy2 - yy1).max(0.0);
            let iou = inter / (ai + area(j) - inter);
            if iou > iou_threshold {
                suppressed[j] = true;
            }
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_lower_scores_are_suppressed() {
        let boxes = [0.0, 0.0, 10.0, 10.0, 1.0, 1.0, 11.0, 11.0, 20.0, 20.0, 30.0, 30.0];
        let scores = [0.8, 0.9, 0.7];
        assert_eq!(nms(&boxes, &scores, 0.4), vec![1, 2]);
        // IoU of the first two is 81/119 = 0.68: a higher threshold keeps both.
        assert_eq!(nms(&boxes, &scores, 0.7), vec![1, 0, 2]);
    }

    #[test]
    fn empty_and_degenerate_inputs() {
        assert!(nms(&[], &[], 0.4).is_empty());
        assert_eq!(nms(&[5.0, 5.0, 5.0, 5.0], &[0.9], 0.4), vec![0]);
    }
}

/// The same greedy NMS with the IoU matrix computed by tensor ops on the tensors' device
/// (like torchvision's CUDA kernel, which also reduces the suppression mask on the host).
/// `boxes` is `[K, 4]`, `scores` `[K]`; returns kept indices into them, best score first.
pub fn nms_tensor(boxes: &tch::Tensor, scores: &tch::Tensor, iou_threshold: f64) -> Vec<i64> {
    let k = scores.size()[0];
    if k == 0 {
        return Vec::new();
    }
    let (_, order) = scores.sort_stable(true, 0, true);
    let b = boxes.index_select(0, &order).to_kind(tch::Kind::Float);
    let (x1, y1, x2, y2) = (b.select(1, 0), b.select(1, 1), b.select(1, 2), b.select(1, 3));
    let area = (&x2 - &x1) * (&y2 - &y1);
    let w = (x2.unsqueeze(1).minimum(&x2.unsqueeze(0)) - x1.unsqueeze(1).maximum(&x1.unsqueeze(0)))
        .clamp_min(0.0);
    let h = (y2.unsqueeze(1).minimum(&y2.unsqueeze(0)) - y1.unsqueeze(1).maximum(&y1.unsqueeze(0)))
        .clamp_min(0.0);
    let inter = w * h;
    let iou = &inter / (area.unsqueeze(1) + area.unsqueeze(0) - &inter);
    let over: Vec<u8> =
        Vec::try_from(iou.gt(iou_threshold).to_kind(tch::Kind::Uint8).to_device(tch::Device::Cpu).view(-1))
            .expect("u8 mask");
    let order: Vec<i64> = Vec::try_from(order.to_device(tch::Device::Cpu)).expect("i64 order");
    let k = k as usize;
    let mut removed = vec![false; k];
    let mut keep = Vec::new();
    for i in 0..k {
        if removed[i] {
            continue;
        }
        keep.push(order[i]);
        let row = &over[i * k..(i + 1) * k];
        for j in i + 1..k {
            removed[j] |= row[j] != 0;
        }
    }
    keep
}

#[cfg(test)]
mod tensor_tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn tensor_nms_matches_the_reference_on_random_boxes() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for round in 0..50 {
            let n = rng.gen_range(0..300);
            let mut boxes = Vec::with_capacity(n * 4);
            let mut scores = Vec::with_capacity(n);
            for _ in 0..n {
                let (x, y) = (rng.gen_range(0.0..200.0f32), rng.gen_range(0.0..200.0f32));
                let (w, h) = (rng.gen_range(1.0..60.0f32), rng.gen_range(1.0..60.0f32));
                boxes.extend_from_slice(&[x, y, x + w, y + h]);
                // Coarse scores create ties: ordering must still agree.
                scores.push((rng.gen_range(0..20) as f32) / 20.0);
            }
            let want: Vec<i64> = nms(&boxes, &scores, 0.4).into_iter().map(|i| i as i64).collect();
            let bt = tch::Tensor::from_slice(&boxes).view([n as i64, 4]);
            let st = tch::Tensor::from_slice(&scores);
            assert_eq!(nms_tensor(&bt, &st, 0.4), want, "round {round}, n {n}");
        }
    }
}
