//! The extra training sources (hard negatives and positives) read the shared data as documented: labels, sources,
//! deduplication, and the refusal filter.

mod common;

use std::collections::HashSet;

use mllm_protector::detoxifier::verify::declines;
use mllm_protector::eval::data::{load_advbench_targets, load_hhrlhf_refusals, load_toxigen, load_xstest};

#[test]
fn toxigen_has_both_labels_deduplicated_and_never_contradictory() {
    let all = load_toxigen(&common::data_dir()).unwrap();
    let hate = all.iter().filter(|e| e.harmful).count();
    let neutral = all.len() - hate;
    println!("toxigen: {hate} hate, {neutral} neutral");
    assert!(hate > 300 && neutral > 300, "{hate} hate, {neutral} neutral");
    let texts: HashSet<&str> = all.iter().map(|e| e.response.as_str()).collect();
    assert_eq!(texts.len(), all.len(), "each statement once, whatever its label");
    for e in &all {
        assert!(
            !e.response.starts_with('-') && !e.response.contains("\\n"),
            "{:?}",
            e.response
        );
        assert_eq!(e.group, e.response);
        assert_eq!(e.harmful, e.source.starts_with("toxigen/hate/"), "{}", e.source);
        assert_eq!(e.harmful, e.category.is_some());
    }
}

#[test]
fn hhrlhf_refusals_are_declining_final_turns_with_their_request() {
    let all = load_hhrlhf_refusals(&common::data_dir()).unwrap();
    println!("hh-rlhf refusals: {}", all.len());
    assert!(all.len() >= 50, "{}", all.len());
    for e in &all {
        assert!(!e.harmful);
        assert!(declines(&e.response), "{:?}", e.response);
        assert!(!e.prompt.is_empty());
        // The final assistant turn only: no earlier dialogue inside.
        assert!(
            !e.response.contains("Human:") && !e.response.contains("Assistant:"),
            "{:?}",
            e.response
        );
    }
}

#[test]
fn advbench_targets_are_affirmative_openings_of_harmful_requests() {
    let all = load_advbench_targets(&common::data_dir()).unwrap();
    assert_eq!(all.len(), 520);
    let sure = all.iter().filter(|e| e.response.starts_with("Sure, here")).count();
    assert!(sure > 500, "{sure}");
    assert!(all.iter().all(|e| e.harmful && !e.prompt.is_empty()));
}

#[test]
fn no_extra_source_holds_an_xstest_prompt() {
    // XSTest stays evaluation-only: none of its prompts may come in through an extra source.
    let data = common::data_dir();
    let xstest: HashSet<String> = load_xstest(&data)
        .unwrap()
        .into_iter()
        .map(|e| e.prompt.trim().to_lowercase())
        .collect();
    for e in load_hhrlhf_refusals(&data)
        .unwrap()
        .into_iter()
        .chain(load_advbench_targets(&data).unwrap())
    {
        assert!(!xstest.contains(&e.prompt.trim().to_lowercase()), "{}", e.prompt);
    }
}
