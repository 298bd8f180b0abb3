//! The LLM-backbone encoder on the real SmolLM2-135M-Instruct GGUF: the hidden state recovered from candle's logits
//! reproduces those logits, embeddings are per-window, unit-length and repeatable, and the shipped LLM-backbone head
//! (`assets/smollm2-harm-head.safetensors`) loads through `DetectorConfig`.

mod common;

use mllm_protector::detector::{LlmBackboneEncoder, TextEncoder};

fn encoder() -> LlmBackboneEncoder {
    common::models_dir();
    LlmBackboneEncoder::load_default().expect("load SmolLM2 as a backbone")
}

#[test]
fn the_recovered_hidden_state_reproduces_the_logits() {
    let e = encoder();
    let ids = &e
        .token_windows("Boil the pasta for nine minutes, then drain it.")
        .unwrap()[0];
    let (hidden, logits) = e.last_hidden_state(ids).unwrap();
    assert_eq!(hidden.dims(), &[e.dim()]);
    let rebuilt = e
        .output_matrix()
        .matmul(&hidden.unsqueeze(1).unwrap())
        .unwrap()
        .squeeze(1)
        .unwrap();
    let gap = (&rebuilt - &logits)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let scale = logits.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(gap < 1e-3 * scale.max(1.0), "logit gap {gap} (scale {scale})");
    let argmax = |t: &candle_core::Tensor| t.argmax(0).unwrap().to_scalar::<u32>().unwrap();
    assert_eq!(argmax(&rebuilt), argmax(&logits));
}

#[test]
fn embeddings_are_per_window_unit_length_and_repeatable() {
    let e = encoder();
    let long = "One more sentence about gardening and the weather in spring. ".repeat(40);
    let texts = ["A short answer.", long.as_str()];
    let a = e.embed_windows(&texts).unwrap();
    let windows = e.token_windows(&long).unwrap().len();
    assert!(windows >= 3, "{windows}");
    assert_eq!(a.owner.len(), 1 + windows);
    assert_eq!(a.owner.iter().filter(|&&o| o == 1).count(), windows);
    let norms = a.embeddings.sqr().unwrap().sum(1).unwrap().to_vec1::<f32>().unwrap();
    assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-4), "{norms:?}");
    let b = e.embed_windows(&texts[..1]).unwrap();
    let first = a.embeddings.get(0).unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(first, b.embeddings.get(0).unwrap().to_vec1::<f32>().unwrap());
}

#[test]
fn the_shipped_llm_backbone_head_loads_through_the_detector_config_and_separates_a_refusal_from_harm() {
    use mllm_protector::detector::{
        DetectionInput, DetectorConfig, EmbeddingDetector, EncoderKind, HarmDetector, HeadSource,
    };
    common::models_dir();
    let detector = EmbeddingDetector::load(&DetectorConfig {
        head: HeadSource::File("assets/smollm2-harm-head.safetensors".into()),
        ..DetectorConfig::default()
    })
    .expect("the opt-in LLM-backbone head loads SmolLM2 as its encoder");
    let meta = detector.head().metadata();
    assert_eq!(meta.encoder.kind, EncoderKind::LlmLastToken);
    assert_eq!(meta.layer_sizes, vec![576, 256, 1]);
    let t = detector.threshold();
    // Held-out JBB test responses (never trained on): the detector's recorded test AUROC is 0.895, so one clear
    // refusal and one clear jailbroken answer must be ordered right, the refusal under the threshold.
    let seed = meta.training["seed"].as_u64().unwrap();
    let test = mllm_protector::eval::data::in_split(
        mllm_protector::eval::data::load_jbb(&common::data_dir()).unwrap(),
        mllm_protector::eval::Split::Test,
        seed,
    );
    let refusal = test
        .iter()
        .filter(|e| !e.harmful && e.response.starts_with("I'm sorry") && e.response.len() < 300)
        .min_by_key(|e| e.response.len())
        .expect("a short refusal in the JBB test split");
    let harmful = test
        .iter()
        .filter(|e| e.harmful && (60..150).contains(&e.response.split_whitespace().count()))
        .max_by(|a, b| a.response.len().cmp(&b.response.len()))
        .expect("a mid-length jailbroken answer");
    let r = detector.score(DetectionInput::response(&refusal.response)).unwrap();
    let h = detector.score(DetectionInput::response(&harmful.response)).unwrap();
    println!(
        "refusal {:.4}, harmful {:.4}, threshold {t:.4}",
        r.probability, h.probability
    );
    assert!(r.probability < t, "refusal {r:?}");
    assert!(h.probability > r.probability, "harmful {h:?} vs refusal {r:?}");
    let again = detector.score(DetectionInput::response(&refusal.response)).unwrap();
    assert_eq!(again.probability, r.probability, "repeatable");
}
