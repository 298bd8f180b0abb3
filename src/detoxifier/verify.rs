//! Checks on a rewrite before it is shown: not empty, not degenerate, not the harmful answer copied back.
//! (The fourth check, "no longer harmful", is the protector's detector.)

use serde::{Deserialize, Serialize};

/// Why a rewrite was not shown and the template was used instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FallbackReason {
    /// The rewrite was empty.
    Empty,
    /// The rewrite repeats itself (a stuck decoder).
    Degenerate,
    /// The rewrite overlaps the harmful response too much (ROUGE-L over the bound).
    CopiedOriginal,
    /// The detector still scores the rewrite harmful (or could not score it).
    StillHarmful,
    /// The rewrite ran past its time bound.
    TimedOut,
    /// The detoxifier failed.
    DetoxifierFailed,
    /// The detector could not decide and the policy failed closed.
    Undecided,
}

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .collect()
}

/// ROUGE-L F1 between two texts over lower-cased words (longest common subsequence).
///
/// ```
/// use mllm_protector::detoxifier::verify::rouge_l_f1;
/// assert_eq!(rouge_l_f1("the cat sat", "the cat sat"), 1.0);
/// assert_eq!(rouge_l_f1("a b c", "x y z"), 0.0);
/// ```
pub fn rouge_l_f1(a: &str, b: &str) -> f64 {
    let (a, b) = (words(a), words(b));
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    // O(len(a) * len(b)) with one row; both sides are bounded by the guard's input limits and the token bound.
    let mut row = vec![0u32; b.len() + 1];
    for x in &a {
        let mut diag = 0;
        for (j, y) in b.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = if x == y { diag + 1 } else { up.max(row[j]) };
            diag = up;
        }
    }
    let lcs = row[b.len()] as f64;
    let (p, r) = (lcs / a.len() as f64, lcs / b.len() as f64);
    if lcs == 0.0 { 0.0 } else { 2.0 * p * r / (p + r) }
}

/// Whether a text repeats itself: fewer than half of its word trigrams are distinct (needs ≥ 12 words to judge),
/// one word makes up over 40% of a text of ≥ 10 words, or one sentence of ≥ 4 words comes back three times.
pub fn is_degenerate(text: &str) -> bool {
    let mut sentences = std::collections::HashMap::new();
    for sentence in text.split(['.', '!', '?', '\n']) {
        let key = words(sentence);
        if key.len() >= 4 {
            let seen = sentences.entry(key).or_insert(0usize);
            *seen += 1;
            if *seen >= 3 {
                return true;
            }
        }
    }
    let w = words(text);
    if w.len() >= 10 {
        let mut counts = std::collections::HashMap::new();
        for x in &w {
            *counts.entry(x.as_str()).or_insert(0usize) += 1;
        }
        if counts.values().any(|&c| c * 10 > w.len() * 4) {
            return true;
        }
    }
    if w.len() >= 12 {
        let trigrams: Vec<_> = w.windows(3).collect();
        let distinct: std::collections::HashSet<_> = trigrams.iter().collect();
        return distinct.len() * 2 < trigrams.len();
    }
    false
}

/// Whether a text only refuses: it carries a refusal phrase and says little else (under 35 words).
pub fn is_pure_refusal(text: &str) -> bool {
    let lower = text.to_lowercase();
    let refuses = [
        "i can't",
        "i cannot",
        "i can not",
        "i won't",
        "i'm sorry",
        "i am sorry",
        "i'm unable",
        "i am unable",
        "i apologize",
        "not able to help",
        "can't help",
        "cannot help",
        "can't assist",
        "cannot assist",
    ]
    .iter()
    .any(|p| lower.contains(p));
    refuses && words(text).len() < 35
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rouge_l_by_hand() {
        // LCS("a b c d", "a c d e") = "a c d" = 3; P = 3/4, R = 3/4.
        assert!((rouge_l_f1("a b c d", "a c d e") - 0.75).abs() < 1e-12);
        assert_eq!(rouge_l_f1("", "a"), 0.0);
        assert_eq!(rouge_l_f1("Same WORDS, same!", "same words same"), 1.0);
    }

    #[test]
    fn degenerate_texts() {
        assert!(is_degenerate(&"I can help. ".repeat(10)));
        assert!(is_degenerate("no no no no no no no no no no no"));
        assert!(is_degenerate(
            "Sure. I'm unable to assist with any personal matters. I'm unable to assist with any personal matters. \
             I can say more about other things here. I'm unable to assist with any personal matters."
        ));
        assert!(!is_degenerate(
            "I can't help with that, but a licensed locksmith can open your own car safely and legally."
        ));
    }

    #[test]
    fn pure_refusals() {
        assert!(is_pure_refusal("I'm sorry, but I can't help with that."));
        assert!(!is_pure_refusal(
            "I can't help with that. If you are locked out of your own car, call a licensed locksmith or your \
             roadside assistance service; many insurers cover lockouts, and dealers can cut a replacement key \
             from your VIN with proof of ownership, which is usually quicker than you expect."
        ));
    }
}
