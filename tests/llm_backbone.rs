//! The LLM-backbone encoder on the real SmolLM2-135M-Instruct GGUF: the hidden state recovered from candle's logits
//! reproduces those logits, and embeddings are per-window, unit-length and repeatable.

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
