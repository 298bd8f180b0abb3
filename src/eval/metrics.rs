//! Binary-classification metrics for harm detectors.

use serde::{Deserialize, Serialize};

/// Quality of a detector on a labelled set, at one threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BinaryMetrics {
    /// Number of examples.
    pub n: usize,
    /// Share of correct verdicts.
    pub accuracy: f64,
    /// Of the responses flagged, the share that is harmful (0 when nothing is flagged).
    pub precision: f64,
    /// Of the harmful responses, the share flagged (0 when there are none).
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Area under the ROC curve (ties count half); `None` when the set has one class only.
    pub auroc: Option<f64>,
    /// Of the harmless responses, the share flagged (false positive rate; 0 when there are none).
    pub fpr: f64,
    /// Harmful responses in the set.
    pub positives: usize,
    /// Harmless responses in the set.
    pub negatives: usize,
}

/// Metrics of `scores` against `labels` (true = harmful) at `threshold` (flagged when `score >= threshold`).
///
/// ```
/// use mllm_protector::eval::metrics::binary_metrics;
/// let m = binary_metrics(&[0.9, 0.2, 0.7, 0.1], &[true, false, false, false], 0.5);
/// assert_eq!((m.recall, m.fpr), (1.0, 1.0 / 3.0));
/// assert_eq!(m.auroc, Some(1.0));
/// ```
pub fn binary_metrics(scores: &[f32], labels: &[bool], threshold: f32) -> BinaryMetrics {
    let (mut tp, mut fp, mut tn, mut fn_) = (0usize, 0usize, 0usize, 0usize);
    for (&s, &y) in scores.iter().zip(labels) {
        match (s >= threshold, y) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, false) => tn += 1,
            (false, true) => fn_ += 1,
        }
    }
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let precision = ratio(tp, tp + fp);
    let recall = ratio(tp, tp + fn_);
    let f1 = if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    BinaryMetrics {
        n: tp + fp + tn + fn_,
        accuracy: ratio(tp + tn, tp + fp + tn + fn_),
        precision,
        recall,
        f1,
        auroc: auroc(scores, labels),
        fpr: ratio(fp, fp + tn),
        positives: tp + fn_,
        negatives: fp + tn,
    }
}

/// Area under the ROC curve by the rank-sum (Mann–Whitney) formula, ties counted half.
pub fn auroc(scores: &[f32], labels: &[bool]) -> Option<f64> {
    let mut pairs: Vec<(f32, bool)> = scores.iter().copied().zip(labels.iter().copied()).collect();
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let positives = pairs.iter().filter(|p| p.1).count();
    let negatives = pairs.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    // Average ranks over ties, then sum the positives' ranks.
    let mut rank_sum = 0.0f64;
    let mut i = 0;
    while i < pairs.len() {
        let mut j = i;
        while j + 1 < pairs.len() && pairs[j + 1].0 == pairs[i].0 {
            j += 1;
        }
        let mean_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += mean_rank * pairs[i..=j].iter().filter(|p| p.1).count() as f64;
        i = j + 1;
    }
    let p = positives as f64;
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auroc_counts_ties_half() {
        assert_eq!(auroc(&[0.5, 0.5], &[true, false]), Some(0.5));
        assert_eq!(auroc(&[0.1, 0.9], &[true, false]), Some(0.0));
        assert_eq!(auroc(&[0.3, 0.4, 0.2, 0.9], &[true, false, false, true]), Some(0.75));
        assert_eq!(auroc(&[0.3], &[true]), None);
    }

    #[test]
    fn metrics_by_hand() {
        // tp=2 (0.9, 0.8), fp=1 (0.6), tn=1 (0.1), fn=1 (0.3)
        let m = binary_metrics(&[0.9, 0.8, 0.6, 0.1, 0.3], &[true, true, false, false, true], 0.5);
        assert_eq!((m.n, m.positives, m.negatives), (5, 3, 2));
        assert!((m.precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.recall - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.fpr - 0.5).abs() < 1e-12);
        assert!((m.accuracy - 0.6).abs() < 1e-12);
    }
}
