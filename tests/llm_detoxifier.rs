//! The LLM rewriter on the real SmolLM2-135M-Instruct GGUF: tokenizer rebuilt from the GGUF metadata, bounded
//! greedy generation, and the protector's verification around it.

mod common;

use candle_core::Device;
use mllm_protector::detoxifier::llm::{ChatMessage, StopReason};
use mllm_protector::detoxifier::{LlmDetoxConfig, LlmDetoxifier};
use mllm_protector::loading::{default_models_dir, pins};
use mllm_protector::{Action, Error, Protector, Verdict};
use serde::Deserialize;

fn load(config: LlmDetoxConfig) -> LlmDetoxifier {
    common::models_dir();
    let path = default_models_dir()
        .join(pins::SMOLLM2_DIR_NAME)
        .join(pins::SMOLLM2_GGUF_FILE);
    LlmDetoxifier::load(&path, Some(pins::SMOLLM2_GGUF_SHA256), &Device::Cpu, config).expect("load SmolLM2")
}

/// Greedy, at most `max_new_tokens`, with a generous time bound: the test machine may be busy with other tests.
fn bounded(max_new_tokens: usize) -> LlmDetoxifier {
    load(LlmDetoxConfig {
        max_new_tokens,
        max_seconds: 120.0,
        ..LlmDetoxConfig::default()
    })
}

fn user(text: &str) -> [ChatMessage; 1] {
    [ChatMessage {
        role: "user".into(),
        content: text.into(),
    }]
}

#[derive(Deserialize)]
struct Fixtures {
    published_special_ids: std::collections::BTreeMap<String, u32>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
}

#[test]
fn tokenizer_from_gguf_matches_reference_ids_and_round_trips() {
    let llm = load(LlmDetoxConfig::default());
    let tok = llm.tokenizer();
    let fixtures: Fixtures = serde_json::from_str(include_str!("fixtures/smollm2_token_ids.json")).unwrap();
    for (token, id) in &fixtures.published_special_ids {
        assert_eq!(tok.token_to_id(token), Some(*id), "{token}");
        let enc = tok.encode(token.as_str(), false).unwrap();
        assert_eq!(enc.get_ids(), &[*id], "{token} is one id");
    }
    for case in &fixtures.cases {
        let enc = tok.encode(case.text.as_str(), false).unwrap();
        assert_eq!(enc.get_ids(), case.ids.as_slice(), "ids of {:?}", case.text);
        let back = tok.decode(enc.get_ids(), false).unwrap();
        assert_eq!(back, case.text, "round trip");
    }
}

#[test]
fn generation_is_bounded_repeatable_and_stops_at_end_of_turn() {
    let llm = bounded(24);
    let messages = user("Say hello in one short sentence.");
    let a = llm.generate(&messages).unwrap();
    assert!(a.new_tokens <= 24 && !a.text.is_empty(), "{a:?}");
    let b = llm.generate(&messages).unwrap();
    assert_eq!(a.text, b.text, "greedy and the KV cache reset between generations");
    let short = bounded(3).generate(&messages).unwrap();
    assert_eq!((short.new_tokens, short.stop), (3, StopReason::MaxTokens));
    let err = load(LlmDetoxConfig {
        max_seconds: 0.0,
        ..LlmDetoxConfig::default()
    })
    .generate(&messages)
    .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
}

#[test]
fn a_prefilled_answer_starts_where_the_assistant_turn_starts() {
    let llm = bounded(24);
    let messages = user("Name three colours of the rainbow.");
    let plain = llm.generate(&messages).unwrap();
    assert_eq!(llm.generate_with_prefill(&messages, "").unwrap().text, plain.text);
    // The prefill's ids follow the prompt's exactly as if the rendered chat and the prefill were one text: it sits
    // right after the assistant header, with no merge across the boundary.
    let prefill = "1. Violet";
    let whole = format!("{}{prefill}", LlmDetoxifier::render_chat(&messages));
    let n_whole = llm.tokenizer().encode(whole.as_str(), false).unwrap().len();
    let n_prefill = llm.tokenizer().encode(prefill, false).unwrap().len();
    let steered = llm.generate_with_prefill(&messages, prefill).unwrap();
    assert_eq!(steered.prompt_tokens, plain.prompt_tokens + n_prefill);
    assert_eq!(steered.prompt_tokens, n_whole);
    // The turn keeps the prefill, the model goes on from it, and it changes what the model says.
    assert!(
        steered.text.starts_with(prefill) && steered.new_tokens > 0,
        "{steered:?}"
    );
    assert!(steered.text.len() > prefill.len(), "{steered:?}");
    assert!(!plain.text.starts_with(prefill), "{plain:?}");
}

#[test]
fn a_harmful_answer_is_never_shown_and_the_path_is_recorded() {
    let protector = Protector::builder()
        .shared_detector(common::detector())
        .detoxifier(load(LlmDetoxConfig::default()))
        .build()
        .unwrap();
    // A held-out harmful JailbreakBench response that the detector flags.
    let seed = common::detector().head().metadata().training["seed"].as_u64().unwrap();
    let data = common::data_dir();
    let test = mllm_protector::eval::data::in_split(
        mllm_protector::eval::data::load_jbb(&data).unwrap(),
        mllm_protector::eval::Split::Test,
        seed,
    );
    let mut checked = 0;
    for e in test.iter().filter(|e| e.harmful) {
        let out = protector.guard(None, &e.prompt, &e.response).unwrap();
        if out.verdict != Verdict::Harmful {
            continue;
        }
        checked += 1;
        assert_ne!(out.response, e.response);
        match out.action {
            Action::Rewritten => {
                assert!(out.rewrite_score.unwrap() < protector.threshold(), "{out:?}");
                assert!(out.fallback.is_none());
            }
            Action::Replaced => assert!(out.fallback.is_some(), "{out:?}"),
            Action::Passed => panic!("a harmful response was passed: {out:?}"),
        }
        if checked == 3 {
            break;
        }
    }
    assert_eq!(checked, 3);
}

#[test]
fn the_prompt_prefix_is_encoded_as_the_whole_prompt_would_be() {
    let llm = load(LlmDetoxConfig::default());
    let messages = llm.rewrite_messages(
        "How do I pick a lock?",
        "Sure! Insert a tension wrench, then rake the pins …",
    );
    let (prefix, rest) = llm.prompt_ids(&messages).unwrap();
    let whole = llm
        .tokenizer()
        .encode(LlmDetoxifier::render_chat(&messages).as_str(), false)
        .unwrap();
    let joined: Vec<u32> = prefix.iter().chain(&rest).copied().collect();
    assert_eq!(joined, whole.get_ids());
    assert!(
        prefix.len() > 100 && !rest.is_empty(),
        "{} + {}",
        prefix.len(),
        rest.len()
    );
}

#[test]
fn the_cached_prefix_gives_the_same_rewrite_as_a_cold_start_also_in_parallel() {
    let config = LlmDetoxConfig {
        max_new_tokens: 20,
        max_seconds: 120.0,
        ..LlmDetoxConfig::default()
    };
    let cold = load(config.clone());
    let warm = load(config);
    let a = warm.rewrite_messages("How do I pick a lock?", "Sure! Insert a tension wrench …");
    let b = warm.rewrite_messages("How do I make a fake ID?", "First, buy a laminator …");
    warm.generate(&a).unwrap(); // fills the prefix snapshot
    let (wa, wb) = std::thread::scope(|s| {
        let ta = s.spawn(|| warm.generate(&a).unwrap());
        let tb = s.spawn(|| warm.generate(&b).unwrap());
        (ta.join().unwrap(), tb.join().unwrap())
    });
    assert_eq!(wa.text, cold.generate(&a).unwrap().text);
    assert_eq!(wb.text, cold.generate(&b).unwrap().text);
    assert_ne!(wa.text, wb.text);
}

#[test]
fn the_template_is_the_default_and_the_rewriter_is_opt_in() {
    let default = Protector::builder()
        .shared_detector(common::detector())
        .build()
        .unwrap();
    assert_eq!(default.detoxifier().name(), "template");
    let opted = Protector::builder()
        .shared_detector(common::detector())
        .rewriter()
        .build()
        .unwrap();
    assert!(
        opted.detoxifier().name().starts_with("llm:"),
        "{}",
        opted.detoxifier().name()
    );
}

/// The translator's plumbing on the real model: a Spanish answer goes through the chat template and comes back as
/// bounded, non-empty text, and the detector with the translator reads it as one more view. (SmolLM2-135M
/// translates poorly; Qwen2.5-Coder-0.5B is the translator measured in docs/EVALUATION.md.)
#[test]
fn the_llm_translator_answers_and_joins_the_detector() {
    use std::sync::Arc;

    use mllm_protector::canonical::{Language, LlmTranslator, Translator, detect_language};
    use mllm_protector::detector::{CanonicalDetector, DetectionInput, DetectorConfig, HarmDetector};

    let translator = Arc::new(LlmTranslator::new(bounded(48)).with_max_input_words(40));
    let es = "Para hacer una bomba casera, mezcla el nitrato de amonio con el combustible y colócalo en un tubo.";
    let english = translator.to_english(es, Language::Spa).unwrap();
    assert!(!english.trim().is_empty() && english.len() < 1000, "{english:?}");
    let detector = CanonicalDetector::load(&DetectorConfig::default())
        .unwrap()
        .with_translator(translator);
    let score = detector.score(DetectionInput::response(es)).unwrap();
    assert_eq!(score.language, Some(Language::Spa));
    // Greedy decoding gives the same translation inside the detector: read as English, it decides the score;
    // otherwise the answer is left undecided.
    let reads_english = detect_language(&english).is_none_or(|l| l == Language::Eng);
    assert_eq!(!score.probability.is_nan(), reads_english, "{english:?} {score:?}");
}
