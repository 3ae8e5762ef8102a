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
