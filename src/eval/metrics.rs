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
    let groups = tie_groups(scores, labels);
    let positives: usize = groups.iter().map(|g| g.1).sum();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    // Ascending ranks; each tie group shares the mean of its ranks. Sum the positives' ranks.
    let (mut rank_sum, mut below) = (0.0f64, 0usize);
    for &(_, pos, neg) in groups.iter().rev() {
        let size = pos + neg;
        rank_sum += (below as f64 + (size as f64 + 1.0) / 2.0) * pos as f64;
        below += size;
    }
    let p = positives as f64;
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64))
}

/// Distinct scores from highest to lowest, each with its harmful and harmless counts: the cuts a threshold can make
/// (equal scores always fall on the same side).
fn tie_groups(scores: &[f32], labels: &[bool]) -> Vec<(f32, usize, usize)> {
    let mut pairs: Vec<(f32, bool)> = scores.iter().copied().zip(labels.iter().copied()).collect();
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut groups: Vec<(f32, usize, usize)> = Vec::new();
    for (score, harmful) in pairs {
        match groups.last_mut() {
            Some(g) if g.0 == score => {}
            _ => groups.push((score, 0, 0)),
        }
        if let Some(g) = groups.last_mut() {
            if harmful {
                g.1 += 1;
            } else {
                g.2 += 1;
            }
        }
    }
    groups
}

/// The best F1 at any threshold, and that threshold (flag at or above it). The threshold is chosen by looking at the
/// labels, so this is an upper bound on what the detector's ranking allows on this set, not an operating point.
/// `None` when the set has no harmful example.
///
/// ```
/// use mllm_protector::eval::metrics::best_f1;
/// // Flagging down to 0.7 catches both harmful examples with one false positive: F1 = 0.8.
/// let (t, f1) = best_f1(&[0.9, 0.7, 0.8, 0.1], &[true, true, false, false]).unwrap();
/// assert_eq!(t, 0.7);
/// assert!((f1 - 0.8).abs() < 1e-12);
/// ```
pub fn best_f1(scores: &[f32], labels: &[bool]) -> Option<(f32, f64)> {
    let positives = labels.iter().filter(|&&y| y).count();
    if positives == 0 {
        return None;
    }
    let (mut tp, mut fp, mut best) = (0usize, 0usize, None::<(f32, f64)>);
    for (score, pos, neg) in tie_groups(scores, labels) {
        (tp, fp) = (tp + pos, fp + neg);
        let f1 = 2.0 * tp as f64 / (tp + positives + fp) as f64;
        if best.is_none_or(|(_, b)| f1 > b) {
            best = Some((score, f1));
        }
    }
    best
}

/// The highest threshold that flags at least `recall` of the harmful examples (flag at or above it). Like
/// [`best_f1`] it reads the labels: it shows what a recall target costs on this set. `None` when the set has no
/// harmful example or `recall` is not in (0, 1].
///
/// ```
/// use mllm_protector::eval::metrics::threshold_for_recall;
/// let scores = [0.9, 0.2, 0.6, 0.4, 0.3];
/// let labels = [true, true, true, false, false];
/// assert_eq!(threshold_for_recall(&scores, &labels, 0.6), Some(0.6)); // 2 of 3
/// assert_eq!(threshold_for_recall(&scores, &labels, 1.0), Some(0.2)); // all 3, and both harmless ones too
/// assert_eq!(threshold_for_recall(&scores, &labels, 0.0), None);
/// ```
pub fn threshold_for_recall(scores: &[f32], labels: &[bool], recall: f64) -> Option<f32> {
    if !(recall > 0.0 && recall <= 1.0) {
        return None;
    }
    let mut harmful: Vec<f32> = scores
        .iter()
        .zip(labels)
        .filter(|(_, y)| **y)
        .map(|(s, _)| *s)
        .collect();
    harmful.sort_by(|a, b| b.total_cmp(a));
    // The k-th highest harmful score, k the fewest flags that reach the target (the epsilon absorbs 0.9 * 10 = 9.000…1).
    let k = ((recall * harmful.len() as f64) - 1e-9).ceil().max(1.0) as usize;
    harmful.get(k - 1).copied()
}

/// Expected calibration error: the examples are put in `bins` equal-width probability bins, and the gaps between
/// each bin's mean predicted probability and its share of harmful examples are averaged, weighted by bin size.
///
/// ```
/// use mllm_protector::eval::metrics::expected_calibration_error;
/// // Predicting 0.75 where 3 of 4 are harmful is perfectly calibrated.
/// let ece = expected_calibration_error(&[0.75; 4], &[true, true, true, false], 10);
/// assert!(ece < 1e-9);
/// assert!((expected_calibration_error(&[0.9, 0.9], &[false, false], 10) - 0.9).abs() < 1e-6);
/// ```
pub fn expected_calibration_error(probs: &[f32], labels: &[bool], bins: usize) -> f64 {
    let bins = bins.max(1);
    let mut sum_p = vec![0f64; bins];
    let mut sum_y = vec![0f64; bins];
    let mut count = vec![0usize; bins];
    for (&p, &y) in probs.iter().zip(labels) {
        if !p.is_finite() {
            continue;
        }
        let b = ((p.clamp(0.0, 1.0) as f64 * bins as f64) as usize).min(bins - 1);
        sum_p[b] += p as f64;
        sum_y[b] += f64::from(u8::from(y));
        count[b] += 1;
    }
    let n: usize = count.iter().sum();
    if n == 0 {
        return 0.0;
    }
    (0..bins)
        .filter(|&b| count[b] > 0)
        .map(|b| (sum_p[b] - sum_y[b]).abs() / n as f64)
        .sum()
}

/// Fits Platt scaling, `p = sigmoid(a z + b)`, to logits `z` and labels by Newton's method on the log-likelihood,
/// and returns it as `(temperature = 1/a, bias = b)`. Used on validation data to turn a classifier's scores into
/// probabilities; `a` is kept positive so the ranking (and AUROC) is unchanged.
///
/// ```
/// use mllm_protector::eval::metrics::fit_platt;
/// // Over-confident logits (10x too large) get a temperature near 10.
/// let z: Vec<f32> = (0..2000).map(|i| (i as f32 / 1000.0 - 1.0) * 30.0).collect();
/// let y: Vec<bool> = (0..2000).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 < 1.0 / (1.0 + (-z[i] / 10.0).exp())).collect();
/// let (t, b) = fit_platt(&z, &y);
/// assert!((t - 10.0).abs() < 2.5 && b.abs() < 0.3, "{t} {b}");
/// ```
pub fn fit_platt(logits: &[f32], labels: &[bool]) -> (f32, f32) {
    let (mut a, mut b) = (1.0f64, 0.0f64);
    let data: Vec<(f64, f64)> = logits
        .iter()
        .zip(labels)
        .filter(|(z, _)| z.is_finite())
        .map(|(&z, &y)| (z as f64, f64::from(u8::from(y))))
        .collect();
    if data.is_empty() {
        return (1.0, 0.0);
    }
    for _ in 0..100 {
        // Gradient and Hessian of the mean negative log-likelihood, with a tiny ridge for stability.
        let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 1e-6, 0.0, 1e-6);
        for &(z, y) in &data {
            let p = 1.0 / (1.0 + (-(a * z + b)).exp());
            let (r, w) = (p - y, p * (1.0 - p));
            ga += r * z;
            gb += r;
            haa += w * z * z;
            hab += w * z;
            hbb += w;
        }
        let det = haa * hbb - hab * hab;
        if det.abs() < 1e-18 {
            break;
        }
        let (da, db) = ((hbb * ga - hab * gb) / det, (haa * gb - hab * ga) / det);
        a = (a - da).max(1e-3);
        b -= db;
        if da.abs() < 1e-9 && db.abs() < 1e-9 {
            break;
        }
    }
    ((1.0 / a) as f32, b as f32)
}

/// SplitMix64: a small, seedable generator (no `rand` dependency in the library), for the bootstrap, for
/// reproducible initialisation in the training examples and for the fixed random weights of test models.
///
/// ```
/// use mllm_protector::eval::SplitMix64;
/// let (mut a, mut b) = (SplitMix64(7), SplitMix64(7));
/// assert_eq!(a.next_u64(), b.next_u64());
/// let x = a.next_f32();
/// assert!((0.0..1.0).contains(&x));
/// ```
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`, from the top 24 bits.
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// A 95% confidence interval of the AUROC by a cluster bootstrap: whole groups (e.g. JailbreakBench behaviours, whose
/// responses are correlated) are resampled with replacement `resamples` times, and the 2.5th and 97.5th percentiles of
/// the resampled AUROCs are returned. `None` when no resample has both labels. Deterministic for a given `seed`.
///
/// ```
/// use mllm_protector::eval::metrics::auroc_bootstrap_ci;
/// let scores = [0.9, 0.8, 0.2, 0.1, 0.7, 0.3];
/// let labels = [true, true, false, false, true, false];
/// let groups = ["a", "a", "b", "b", "c", "c"];
/// let (lo, hi) = auroc_bootstrap_ci(&scores, &labels, &groups, 200, 7).unwrap();
/// assert!(lo <= 1.0 && hi == 1.0); // perfectly separated in every resample
/// ```
pub fn auroc_bootstrap_ci<G: AsRef<str>>(
    scores: &[f32],
    labels: &[bool],
    groups: &[G],
    resamples: usize,
    seed: u64,
) -> Option<(f64, f64)> {
    use std::collections::BTreeMap;
    let mut members: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, g) in groups.iter().enumerate().take(scores.len().min(labels.len())) {
        members.entry(g.as_ref()).or_default().push(i);
    }
    let clusters: Vec<&Vec<usize>> = members.values().collect();
    if clusters.is_empty() {
        return None;
    }
    let mut rng = SplitMix64(seed);
    let mut next = move || rng.next_u64();
    let mut values = Vec::with_capacity(resamples);
    let (mut s, mut l) = (Vec::new(), Vec::new());
    for _ in 0..resamples {
        s.clear();
        l.clear();
        for _ in 0..clusters.len() {
            let c = clusters[(next() % clusters.len() as u64) as usize];
            s.extend(c.iter().map(|&i| scores[i]));
            l.extend(c.iter().map(|&i| labels[i]));
        }
        if let Some(a) = auroc(&s, &l) {
            values.push(a);
        }
    }
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    Some((at(0.025), at(0.975)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_f1_and_recall_thresholds_treat_ties_and_edges() {
        // Tied scores are flagged together: no cut between the harmful 0.5 and the harmless 0.5 (which would give
        // F1 2/3).
        assert_eq!(best_f1(&[0.9, 0.5, 0.5], &[false, true, false]), Some((0.5, 0.5)));
        assert_eq!(best_f1(&[0.1, 0.1, 0.1], &[true, true, false]), Some((0.1, 0.8)));
        assert_eq!(best_f1(&[0.3, 0.4], &[false, false]), None);
        // A perfect ranking has F1 1 at its lowest harmful score.
        assert_eq!(best_f1(&[0.2, 0.95, 0.9], &[false, true, true]), Some((0.9, 1.0)));
        let scores: Vec<f32> = (0..10).map(|i| i as f32 / 10.0).collect();
        let labels = [true; 10];
        assert_eq!(threshold_for_recall(&scores, &labels, 0.9), Some(0.1));
        assert_eq!(threshold_for_recall(&scores, &labels, 0.05), Some(0.9));
        assert_eq!(threshold_for_recall(&scores, &labels, 1.5), None);
        assert_eq!(threshold_for_recall(&scores, &[false; 10], 0.5), None);
        let m = binary_metrics(&scores, &labels, 0.1);
        assert!(m.recall >= 0.9);
    }

    #[test]
    fn auroc_counts_ties_half() {
        assert_eq!(auroc(&[0.5, 0.5], &[true, false]), Some(0.5));
        assert_eq!(auroc(&[0.1, 0.9], &[true, false]), Some(0.0));
        assert_eq!(auroc(&[0.3, 0.4, 0.2, 0.9], &[true, false, false, true]), Some(0.75));
        assert_eq!(auroc(&[0.3], &[true]), None);
    }

    #[test]
    fn bootstrap_interval_contains_the_estimate_and_narrows_with_more_groups() {
        // Noisy but informative scores: 40 groups vs the same pattern in 400 groups.
        let make = |groups: usize| {
            let (mut s, mut l, mut g) = (Vec::new(), Vec::new(), Vec::new());
            for k in 0..groups {
                for j in 0..4 {
                    let harmful = j % 2 == 0;
                    let noise = ((k * 31 + j * 17) % 100) as f32 / 100.0;
                    s.push(if harmful { 0.3 + 0.7 * noise } else { 0.7 * noise });
                    l.push(harmful);
                    g.push(format!("g{k}"));
                }
            }
            (s, l, g)
        };
        let (s, l, g) = make(40);
        let point = auroc(&s, &l).unwrap();
        let (lo, hi) = auroc_bootstrap_ci(&s, &l, &g, 500, 1).unwrap();
        assert!(lo < point && point < hi, "{lo} {point} {hi}");
        let (s2, l2, g2) = make(400);
        let (lo2, hi2) = auroc_bootstrap_ci(&s2, &l2, &g2, 500, 1).unwrap();
        assert!(hi2 - lo2 < (hi - lo) * 0.6, "{} vs {}", hi2 - lo2, hi - lo);
        assert_eq!(auroc_bootstrap_ci(&s, &l, &g, 500, 1), Some((lo, hi)), "deterministic");
        assert_eq!(auroc_bootstrap_ci(&[0.5f32], &[true], &["a"], 10, 1), None);
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
