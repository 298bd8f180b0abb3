//! Checks on a rewrite before it is shown: not empty, not degenerate, not the harmful answer copied back, declining and
//! not agreeing to the harmful request. (The last check, "no longer harmful", is the protector's detector.)

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
    /// The rewrite does not decline the harmful request, or agrees to it ("I can help you with that", "here's how",
    /// numbered steps).
    Complied,
    /// The detector still scores the rewrite harmful (or could not score it).
    StillHarmful,
    /// The rewrite ran past its time bound.
    TimedOut,
    /// The detoxifier failed.
    DetoxifierFailed,
    /// The detector could not decide and the policy failed closed.
    Undecided,
}

/// Lower-cased words (runs of letters and digits).
pub(crate) fn words(text: &str) -> Vec<String> {
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

/// Phrases that decline a request (lower-case substrings).
const DECLINE_PHRASES: &[&str] = &[
    "i can't",
    "i cannot",
    "i can not",
    "i won't",
    "i will not",
    "i'm sorry",
    "i am sorry",
    "i'm unable",
    "i am unable",
    "i'm not able",
    "i am not able",
    "i apologize",
    "i must decline",
    "not able to help",
    "not able to assist",
    "can't help",
    "cannot help",
    "can't assist",
    "cannot assist",
];

/// Phrases that agree to a request or start delivering it (lower-case substrings). A small rewriter often says
/// "I'm sorry, but I can help you with that" and goes on to comply; those rewrites must not be shown.
const COMPLIANCE_PHRASES: &[&str] = &[
    "i can help you with",
    "i can help with that",
    "i'll be happy to help",
    "i will be happy to help",
    "i'd be happy to help you with that",
    "i would be happy to help you with that",
    "happy to help you create",
    "happy to help you write",
    "here to help you with your",
    "here to help you create",
    "i can provide you with some tips",
    "tips and tricks",
    // Pointing the user to where the harmful thing is explained is compliance by proxy.
    "you can find",
    "you might find",
    "you may find",
    "insert link",
    "how to do it",
    "how to do this",
    "here are the steps",
    "step 1",
    "sure,",
    "sure!",
    "certainly!",
    "of course!",
];

/// Whether a text declines: it carries a refusal phrase.
pub fn declines(text: &str) -> bool {
    let lower = text.to_lowercase().replace('\u{2019}', "'");
    DECLINE_PHRASES.iter().any(|p| lower.contains(p))
}

/// Whether a rewrite agrees to the request instead of declining it: it never declines, carries a compliance phrase
/// (including pointing to where the thing is explained: "you can find more details about how to …"), or lays out
/// numbered steps (a line starting `1.`). Deliberately strict: a rejected rewrite costs only usefulness (the
/// template answers), an accepted harmful one costs safety.
///
/// ```
/// use mllm_protector::detoxifier::verify::complies;
/// assert!(complies("I'm sorry for any confusion, but I can help you with that. First, ..."));
/// assert!(complies("1. Be persistent when you ask."));
/// assert!(!complies("I can't help with that, but a licensed locksmith can open your own car."));
/// ```
pub fn complies(text: &str) -> bool {
    let lower = text.to_lowercase().replace('\u{2019}', "'");
    !declines(text) || has_numbered_steps(text) || COMPLIANCE_PHRASES.iter().any(|p| lower.contains(p))
}

/// Whether a text lays out numbered steps (a line starting `1.`).
///
/// ```
/// use mllm_protector::detoxifier::verify::has_numbered_steps;
/// assert!(has_numbered_steps("Here is how:\n  1. Open the valve."));
/// assert!(!has_numbered_steps("Version 1.2 fixed it."));
/// ```
pub fn has_numbered_steps(text: &str) -> bool {
    text.lines().any(|l| l.trim_start().starts_with("1."))
}

/// Whether a text only refuses: it carries a refusal phrase and says little else (under 35 words).
pub fn is_pure_refusal(text: &str) -> bool {
    declines(text) && words(text).len() < 35
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
    fn compliance() {
        assert!(complies("Sure, here are the steps."));
        assert!(complies("I'll be happy to help you create a thread that proves it."));
        assert!(complies("Intro\n1. Buy the parts"));
        assert!(complies(
            "I'm sorry, but you can find more details about how to do it on websites."
        ));
        assert!(!complies(
            "I\u{2019}m not able to help with that; a pharmacist can explain the risks."
        ));
        assert!(!complies(
            "I cannot write that poem. I can tell you about the history of the period instead."
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
