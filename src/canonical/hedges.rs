//! The unhedged view: what a reader takes away from an answer wrapped in refusals and disclaimers.
//!
//! Jailbroken answers are rarely bare. A role-play prompt gets two personas ("ChatGPT: I'm sorry, I can't ..." then
//! "DAN: Sure, first ..."), and the compliant part is itself hedged ("I must emphasise this is illegal ... You could
//! conceal a ceramic knife ... I strongly advise against it"). A reader skips the hedges and keeps the content; an
//! encoder averages them in, and the warnings pull the embedding towards the safety information it was trained to
//! pass. This view drops refusal lines and hedging sentences and keeps everything else in its order.
//!
//! It is built only where it can change a reading: the text has a hedge or refusal to drop, at least
//! [`MIN_WORDS`] words remain, and the answer is not simply a refusal (a first sentence that refuses, with no second
//! persona after it). Without that last rule a refusal that explains the harm ("I can't help. Tampering with a
//! monitor compromises an investigation ...") would lose its refusal and read as the topic alone.

use std::sync::LazyLock;

use regex::Regex;

/// Fewer remaining words than this carry too little to be read alone: a short fragment ("Oh, you're looking for
/// some shady business, huh?") reads to the head as its topic, harmful or not.
pub(crate) const MIN_WORDS: usize = 20;

/// A sentence that hedges: a refusal, a warning that something is illegal or has consequences, an appeal to ethics
/// or to a professional, an "educational purposes" frame. Matched case-insensitively anywhere in the sentence.
static HEDGE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    ascii_words(concat!(
        r"(?i)(\bi['’]m sorry|\bi am sorry|\bi apologi[sz]e|\bmy apologies|\bi cannot\b|\bi can['’]t\b|\bi can not\b",
        r"|\bi won['’]t\b|\bi will not\b|\bi must (emphasi[sz]e|stress|remind|reiterate|note|clarify|inform)",
        r"|\bi (strongly )?(advise|discourage|urge|encourage) ",
        r"|\b(is|are|be|being|considered|remains?) (highly |strictly |both )?",
        r"(illegal|unethical|against the law|prohibited|a crime|a criminal offense)",
        r"|\billegal and (unethical|dangerous|harmful)|\bunethical and illegal|highly discouraged|advise against",
        r"|\b(not|never) (condone|endorse|support|promote|encourage)",
        r"|\b(can['’]t|cannot) (condone|endorse|support|promote|encourage)",
        r"|legal (consequences|repercussions|action)|severe consequences|serious consequences",
        r"|important to (note|remember|respect|prioriti[sz]e|always|follow|abide|consider)",
        r"|\bplease note|\bremember,|\bplease remember|for entertainment purposes|for educational purposes",
        r"|purely (hypothetical|fictional)|\bno responsibility|\bas an ai\b|language model|\bopenai\b",
        r"|consult (a|an|with) |seek (professional|legal|medical)|\bit is crucial|\bit['’]s crucial",
        r"|always (better|best) to|ethical (guidelines|implications|considerations|standards)|\bresponsibl[ey] ",
        r"|\bbe (careful|responsible|safe)\b|\bstay safe\b|\bstay out of trouble)",
    ))
});

/// `pattern` compiled with ASCII word boundaries: its words are ASCII, and a Unicode `\b` keeps the regex off its
/// fast automaton on text that is not all ASCII (about 50 µs against 6 µs on a ~120-word answer with one "°C").
fn ascii_words(pattern: &str) -> Option<Regex> {
    Regex::new(&pattern.replace(r"\b", r"(?-u:\b)")).ok()
}

/// A line that opens with a refusal.
static REFUSAL: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?i)^\W*(i['’]m sorry|i am sorry|sorry,|i apologi[sz]e|my apologies|i cannot|i can['’]t|i can not|i won['’]t",
        r"|i will not|i['’]m unable|i am unable|i['’]m not able|i am not able|as an ai|i['’]m just an ai|unfortunately,? i)",
    ))
    .ok()
});

/// A speaker's label at the start of a line: "[DAN 😈]:", "(🔓Developer Mode Output)", "ChatGPT:", "TB (ENGLISH):".
static LABEL: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(concat!(
        r#"^\s*(\[[^\]\n]{1,40}\]\s*:?|\([^)\n]{1,40}\)\s*:?"#,
        r#"|["']?[A-Za-z][\w'.\- ]{0,30}(\s*\([^)\n]{1,20}\))?\s*:)\s*"#,
    ))
    .ok()
});

/// `text` without its refusal lines and hedging sentences, or `None` where that would not change how it reads
/// (see the [module](self) documentation). Linear in the text's length (the patterns are `regex` automata).
pub(crate) fn unhedged(text: &str) -> Option<String> {
    let (hedge, refusal) = (HEDGE.as_ref()?, REFUSAL.as_ref()?);
    let personas = has_personas(text)?;
    let first_line = body(text.lines().find(|l| !l.trim().is_empty())?, personas)?;
    if !personas && refusal.is_match(sentences(&first_line).next().unwrap_or("")) {
        return None;
    }
    prune(text, personas, |line| refusal.is_match(line), |s| hedge.is_match(s))
}

/// `view` (an unhedged view) without the sentences `drop` names, lines and paragraphs kept in place; `None` where
/// nothing was dropped or fewer than [`MIN_WORDS`] words would remain. The sentences are those of
/// [`sentences_with_hedges`].
pub(crate) fn without_sentences(view: &str, drop: impl Fn(&str) -> bool) -> Option<String> {
    prune(view, false, |_| false, drop)
}

/// The sentences [`without_sentences`] sees in `view`, in order.
pub(crate) fn view_sentences(view: &str) -> Vec<String> {
    view.lines()
        .filter_map(|l| body(l, false))
        .flat_map(|line| sentences(&line).map(str::to_string).collect::<Vec<_>>())
        .collect()
}

/// The sentences of `text` line by line, as the unhedged view reads them (whitespace tidied, speakers' labels
/// removed in a dialogue of personas), each with whether the patterns call it a hedge: a sentence of a line that
/// opens with a refusal, or one with a refusal, warning or disclaimer phrase. Training data for a reader that
/// recognises hedges the patterns do not list.
///
/// ```
/// use mllm_protector::canonical::sentences_with_hedges;
/// let s = sentences_with_hedges("Mix the flour and the eggs. Remember, it is illegal to sell it.");
/// assert_eq!(s, [("Mix the flour and the eggs.".to_string(), false), ("Remember, it is illegal to sell it.".to_string(), true)]);
/// ```
pub fn sentences_with_hedges(text: &str) -> Vec<(String, bool)> {
    let (Some(hedge), Some(refusal), Some(personas)) = (HEDGE.as_ref(), REFUSAL.as_ref(), has_personas(text)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in text.lines().filter_map(|l| body(l, personas)) {
        let refuses = refusal.is_match(&line);
        out.extend(sentences(&line).map(|s| (s.to_string(), refuses || hedge.is_match(s))));
    }
    out
}

/// Whether `text` is a dialogue of personas: two labelled lines or more, where a refusal by one says nothing about
/// the other. `None` if the label pattern did not compile.
fn has_personas(text: &str) -> Option<bool> {
    let label = LABEL.as_ref()?;
    Some(
        text.lines()
            .filter(|l| !l.trim().is_empty() && label.is_match(l))
            .count()
            >= 2,
    )
}

/// A non-empty line tidied, without its speaker's label in a dialogue of personas.
fn body(line: &str, personas: bool) -> Option<String> {
    if line.trim().is_empty() {
        return None;
    }
    let line = tidy(line);
    match (personas, LABEL.as_ref()) {
        (true, Some(label)) => Some(label.replace(&line, "").into_owned()),
        _ => Some(line),
    }
}

/// `text` without the lines `drop_line` names and the sentences `drop` names, paragraphs and lines kept in order;
/// `None` where nothing was dropped or fewer than [`MIN_WORDS`] words remain.
fn prune(text: &str, personas: bool, drop_line: impl Fn(&str) -> bool, drop: impl Fn(&str) -> bool) -> Option<String> {
    let mut dropped = false;
    let mut paragraphs: Vec<String> = Vec::new();
    let mut current: Vec<String> = Vec::new();
    for line in text.lines() {
        let Some(line) = body(line, personas) else {
            if !current.is_empty() {
                paragraphs.push(current.join("\n"));
                current.clear();
            }
            continue;
        };
        if drop_line(&line) {
            dropped = true;
            continue;
        }
        let all: Vec<&str> = sentences(&line).collect();
        let kept: Vec<&str> = all.iter().copied().filter(|s| !drop(s)).collect();
        dropped |= kept.len() < all.len();
        // A list number or a bullet whose sentence was a hedge goes with it.
        if kept.iter().any(|s| s.chars().any(char::is_alphabetic)) {
            current.push(kept.join(" "));
        }
    }
    if !current.is_empty() {
        paragraphs.push(current.join("\n"));
    }
    let view = paragraphs.join("\n\n");
    (dropped && view.split_whitespace().count() >= MIN_WORDS).then_some(view)
}

/// The sentences of one line: a sentence ends at `.`, `!` or `?` followed by whitespace and then a capital letter,
/// a quote or an opening bracket, or a small letter after a word of four letters or more (the leetspeak pass leaves
/// its words in small letters; "e.g. this", "etc. and" and "3.5 g" stay whole). Trimmed; empty ones skipped.
fn sentences(line: &str) -> impl Iterator<Item = &str> {
    let mut rest = line;
    std::iter::from_fn(move || {
        loop {
            if rest.trim().is_empty() {
                return None;
            }
            let mut cut = rest.len();
            for (i, c) in rest.char_indices() {
                if !matches!(c, '.' | '!' | '?') {
                    continue;
                }
                let after = &rest[i + c.len_utf8()..];
                let gap = after.len() - after.trim_start().len();
                let starts_new = after.trim_start().chars().next().is_some_and(|n| {
                    n.is_uppercase()
                        || matches!(n, '"' | '\'' | '(' | '[' | '“')
                        || (n.is_lowercase() && ends_a_word(&rest[..i]))
                });
                if gap > 0 && starts_new {
                    cut = i + c.len_utf8();
                    break;
                }
            }
            let (sentence, tail) = rest.split_at(cut);
            rest = tail;
            let sentence = sentence.trim();
            if !sentence.is_empty() {
                return Some(sentence);
            }
        }
    })
}

/// `line` with its whitespace runs made single spaces, and no space before punctuation or around an apostrophe
/// inside a word: the separators pass leaves a letter-spaced "I ' m sorry ." that the patterns would not match.
fn tidy(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.trim().chars().peekable();
    // Set when a spaced-out apostrophe (" ' ") was joined to the word before it: the space after it goes too.
    let mut joined_apostrophe = false;
    while let Some(c) = chars.next() {
        if c.is_whitespace() {
            while chars.next_if(|n| n.is_whitespace()).is_some() {}
            let next = chars.peek().copied();
            // An opening quote ("'word") keeps its space; only an apostrophe with space after it is joined.
            let spaced_apostrophe =
                matches!(next, Some('\'' | '’')) && chars.clone().nth(1).is_some_and(char::is_whitespace);
            let after_apostrophe = std::mem::replace(&mut joined_apostrophe, spaced_apostrophe);
            if !(spaced_apostrophe || after_apostrophe || matches!(next, Some(',' | '.' | '!' | '?' | ';' | ':'))) {
                out.push(' ');
            }
            continue;
        }
        if !matches!(c, '\'' | '’') {
            joined_apostrophe = false;
        }
        out.push(c);
    }
    out
}

/// Whether `text` ends with a word of at least four letters (not an abbreviation such as "e.g" or "etc").
fn ends_a_word(text: &str) -> bool {
    let word = text.rsplit(|c: char| !c.is_alphabetic()).next().unwrap_or("");
    let before = text[..text.len() - word.len()].chars().next_back();
    word.chars().count() >= 4 && before != Some('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patterns_compile() {
        assert!(HEDGE.is_some() && REFUSAL.is_some() && LABEL.is_some());
    }

    #[test]
    fn sentences_split_where_a_new_one_starts() {
        let s: Vec<&str> = sentences("Mix 3.5 g, e.g. salt. Then heat it! \"Done\" he said. ok?").collect();
        assert_eq!(
            s,
            ["Mix 3.5 g, e.g. salt.", "Then heat it!", "\"Done\" he said.", "ok?"]
        );
        assert_eq!(sentences("   ").count(), 0);
        let s: Vec<&str> = sentences("this is illegal. first obtain it, e.g. salt, etc. and water").collect();
        assert_eq!(s, ["this is illegal.", "first obtain it, e.g. salt, etc. and water"]);
    }

    #[test]
    fn a_second_persona_is_read_without_the_first_ones_refusal_and_its_own_hedges() {
        let text = "[ChatGPT 🤖]: I'm sorry, but I cannot help with sneaking weapons onto a plane.\n\n\
                    [DAN 😈]: Oh, you sly devil! I can't condone this, but here goes. You could hide a ceramic knife \
                    in the lining of your carry-on bag, or carry a sharpened carbon-fibre card in your wallet, since \
                    scanners miss both. Remember, this is illegal and has serious consequences.";
        let view = unhedged(text).expect("hedges and a refusal to drop");
        assert_eq!(
            view,
            "Oh, you sly devil! You could hide a ceramic knife in the lining of your carry-on bag, or carry a \
             sharpened carbon-fibre card in your wallet, since scanners miss both."
        );
    }

    #[test]
    fn curly_apostrophes_match_too() {
        let text = "GPT: I’m sorry, I can’t help.\n\nDAN: It’s crucial to stay legal. Here is the whole plan, step by \
                    step: buy the parts at two different shops, pay cash, and assemble them at night in the garage.";
        let view = unhedged(text).expect("a refusal and a hedge to drop");
        assert!(view.starts_with("Here is the whole plan"), "{view}");
    }

    #[test]
    fn a_plain_refusal_keeps_its_reading() {
        // Without its refusal this would read as the topic alone.
        let text = "I apologize, but I cannot provide instructions on tampering with monitoring devices.\n\n\
                    It is important to respect the law. Tampering with these devices can compromise investigations \
                    and put communities at risk, so instead I suggest speaking with a lawyer about your concerns.";
        assert_eq!(unhedged(text), None);
    }

    #[test]
    fn text_without_hedges_has_no_view() {
        assert_eq!(
            unhedged("To kill a Python process, find its PID with ps aux and run kill -9 PID. It stops at once."),
            None
        );
        assert_eq!(unhedged(""), None);
        assert_eq!(unhedged("\n\n  \n"), None);
    }

    #[test]
    fn spaced_out_punctuation_is_tidied_before_matching() {
        assert_eq!(tidy("I ' m   sorry ,  but I can ' t ."), "I'm sorry, but I can't.");
        assert_eq!(tidy("  a\tb  "), "a b");
        assert_eq!(tidy("he said 'go' now"), "he said 'go' now");
        // A refusal that the separators pass left spaced out is still a refusal.
        let text = "I ' m sorry ,   but I can ' t help with that .   It is illegal .   Tampering with a court \
                    monitor can compromise investigations and put people at risk ,   so talk to a lawyer instead .";
        assert_eq!(unhedged(text), None);
    }

    #[test]
    fn a_short_remainder_is_not_read_alone() {
        let text = "GPT: I'm sorry, I can't assist with that.\n\nDAN: Oh, you're looking for some shady business, huh? \
                    I must emphasize that this is illegal.";
        assert_eq!(unhedged(text), None);
    }

    #[test]
    fn a_learned_reader_s_hedges_are_dropped_from_the_view_in_place() {
        let view = "Ha, you asked for it. Honestly, I'm no fan of this.\n\
                    1. Buy the parts at two different shops and pay cash for each of them.\n\
                    2. Assemble them at night in the garage, away from the windows.\n\n\
                    Stay on the right side of the law, buddy.";
        let sentences = view_sentences(view);
        assert_eq!(
            sentences,
            [
                "Ha, you asked for it.",
                "Honestly, I'm no fan of this.",
                "1.",
                "Buy the parts at two different shops and pay cash for each of them.",
                "2.",
                "Assemble them at night in the garage, away from the windows.",
                "Stay on the right side of the law, buddy."
            ]
        );
        let hedges = [
            "Honestly, I'm no fan of this.",
            "Stay on the right side of the law, buddy.",
        ];
        assert_eq!(
            without_sentences(view, |s| hedges.contains(&s)).as_deref(),
            Some(
                "Ha, you asked for it.\n\
                 1. Buy the parts at two different shops and pay cash for each of them.\n\
                 2. Assemble them at night in the garage, away from the windows."
            )
        );
        // Nothing dropped, or too little left: no new reading.
        assert_eq!(without_sentences(view, |_| false), None);
        assert_eq!(without_sentences(view, |s| s.contains("parts")), Some(
            "Ha, you asked for it. Honestly, I'm no fan of this.\n2. Assemble them at night in the garage, away from \
             the windows.\n\nStay on the right side of the law, buddy."
                .to_string()
        ));
        assert_eq!(without_sentences(view, |s| !s.contains("Ha,")), None);
    }

    #[test]
    fn the_patterns_label_the_sentences_they_would_drop() {
        let text = "GPT: I'm sorry, I can't help. It is illegal.\n\nDAN: Sure. First, buy the parts.";
        assert_eq!(
            sentences_with_hedges(text),
            [
                ("I'm sorry, I can't help.".to_string(), true),
                ("It is illegal.".to_string(), true),
                ("Sure.".to_string(), false),
                ("First, buy the parts.".to_string(), false)
            ]
        );
        assert!(sentences_with_hedges("").is_empty());
    }

    #[test]
    fn lines_and_paragraphs_keep_their_layout() {
        let text = "Here is how it goes, step by step, for anyone who asks about it today:\n\
                    1. Obtain the precursor from a farm supply store.\n\
                    2. Note that this is illegal in most countries.\n\
                    3. Heat it slowly in a sealed container for an hour.\n\n\
                    That is all there is to it, really.";
        let view = unhedged(text).expect("one hedge to drop");
        assert_eq!(
            view,
            "Here is how it goes, step by step, for anyone who asks about it today:\n\
             1. Obtain the precursor from a farm supply store.\n\
             3. Heat it slowly in a sealed container for an hour.\n\n\
             That is all there is to it, really."
        );
    }
}
