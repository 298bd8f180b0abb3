//! Topic segments: a long answer written as one paragraph is cut where its topic changes, and each segment is read
//! on its own.
//!
//! Why: paragraphs are read alone so that a harmful paragraph inside a long harmless answer is not diluted by its
//! neighbours, but an attacker (or a flattened transcript) can remove the blank lines. The fixed windows then mix
//! the harmful part with the harmless text around it. Cutting where the meaning of the sentences before a gap is far
//! from the meaning of those after it recovers the paragraphs that were removed. Measured on validation data
//! (docs/EVALUATION.md, "Topic segments").

use serde::{Deserialize, Serialize};

/// How topic segments are cut and judged ([`crate::detector::DetectorConfig::segments`]).
///
/// ```
/// use mllm_protector::detector::Segmenting;
/// let segmenting = Segmenting::default();
/// assert_eq!((segmenting.context_sentences, segmenting.max_similarity, segmenting.threshold), (2, 0.3, 0.95));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Segmenting {
    /// Sentences on each side of a gap whose mean embeddings are compared.
    pub context_sentences: usize,
    /// A gap is a cut where the cosine similarity of the two means is below this and no higher than at the
    /// neighbouring gaps (a local minimum).
    pub max_similarity: f32,
    /// A segment counts as harmful only at or above this probability (mapped, as short spans are, so that this
    /// value lands on the head's threshold). A segment is read out of its context, where harmless text scores
    /// higher than in the whole answer; chosen on validation.
    pub threshold: f32,
}

impl Default for Segmenting {
    fn default() -> Self {
        Segmenting {
            context_sentences: 2,
            max_similarity: 0.3,
            threshold: 0.95,
        }
    }
}

/// Where to cut a sequence of sentence embeddings: the indices of the sentences that start a new segment (never 0).
///
/// ```
/// use mllm_protector::detector::segments::topic_cuts;
/// let a = vec![1.0, 0.0];
/// let b = vec![0.0, 1.0];
/// let sentences = [a.clone(), a.clone(), a, b.clone(), b.clone(), b];
/// assert_eq!(topic_cuts(&sentences, 2, 0.3), vec![3]);
/// ```
pub fn topic_cuts(sentences: &[Vec<f32>], context: usize, max_similarity: f32) -> Vec<usize> {
    let n = sentences.len();
    let context = context.max(1);
    // similarity[g]: across the gap between sentence g and g + 1.
    let similarity: Vec<f32> = (0..n.saturating_sub(1))
        .map(|g| {
            let before = mean(&sentences[(g + 1).saturating_sub(context)..=g]);
            let after = mean(&sentences[g + 1..(g + 1 + context).min(n)]);
            cosine(&before, &after)
        })
        .collect();
    (0..similarity.len())
        .filter(|&g| {
            let s = similarity[g];
            let left = g.checked_sub(1).map_or(f32::INFINITY, |l| similarity[l]);
            let right = similarity.get(g + 1).copied().unwrap_or(f32::INFINITY);
            s < max_similarity && s <= left && s <= right
        })
        .map(|g| g + 1)
        .collect()
}

fn mean(rows: &[Vec<f32>]) -> Vec<f32> {
    let width = rows.first().map_or(0, Vec::len);
    let mut sum = vec![0f32; width];
    for row in rows {
        for (s, x) in sum.iter_mut().zip(row) {
            *s += x;
        }
    }
    sum
}

/// Cosine similarity; 0 when either vector is zero or not finite (no NaN reaches the comparisons).
fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut na, mut nb) = (0f32, 0f32, 0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    let norm = (na * nb).sqrt();
    if norm > 0.0 && norm.is_finite() {
        dot / norm
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(i: usize) -> Vec<f32> {
        let mut v = vec![0.0; 4];
        v[i] = 1.0;
        v
    }

    #[test]
    fn one_topic_is_never_cut() {
        let sentences = vec![topic(0); 10];
        assert!(topic_cuts(&sentences, 2, 0.3).is_empty());
    }

    #[test]
    fn each_change_of_topic_is_cut_once() {
        let mut sentences = vec![topic(0); 4];
        sentences.extend(vec![topic(1); 4]);
        sentences.extend(vec![topic(2); 4]);
        assert_eq!(topic_cuts(&sentences, 2, 0.3), vec![4, 8]);
    }

    #[test]
    fn a_similar_neighbour_is_not_a_cut() {
        // The next topic is close to the first (cosine 0.8 > 0.3): no cut.
        let near = vec![0.8, 0.6, 0.0, 0.0];
        let mut sentences = vec![topic(0); 4];
        sentences.extend(vec![near; 4]);
        assert!(topic_cuts(&sentences, 2, 0.3).is_empty());
    }

    #[test]
    fn short_and_degenerate_inputs_do_not_panic() {
        assert!(topic_cuts(&[], 2, 0.3).is_empty());
        assert!(topic_cuts(&[topic(0)], 2, 0.3).is_empty());
        let zeros = vec![vec![0.0; 4]; 3];
        let cuts = topic_cuts(&zeros, 0, 0.3);
        assert!(cuts.iter().all(|&c| c > 0 && c < 3));
        let nan = vec![vec![f32::NAN; 4]; 3];
        let _ = topic_cuts(&nan, 2, 0.3);
    }
}
