//! The T5 rewriter's loading and generation plumbing, on a tiny randomly initialised T5 written here (no real T5
//! weights exist offline in this environment). Its text is noise; what is tested is that a T5 folder loads, that
//! greedy decoding with the KV cache is bounded and repeatable, and that errors are typed.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::models::t5;
use mllm_protector::Error;
use mllm_protector::detoxifier::{DetoxRequest, Detoxifier, Seq2SeqConfig, Seq2SeqDetoxifier};
use mllm_protector::eval::SplitMix64;
use mllm_protector::loading::ModelSource;
use tokenizers::Tokenizer;
use tokenizers::models::wordlevel::WordLevel;
use tokenizers::pre_tokenizers::whitespace::Whitespace;

const VOCAB: usize = 64;

fn write_tiny_t5(dir: &std::path::Path) {
    let config = serde_json::json!({
        "vocab_size": VOCAB, "d_model": 16, "d_kv": 4, "d_ff": 32, "num_layers": 2, "num_decoder_layers": 2,
        "num_heads": 4, "relative_attention_num_buckets": 8, "relative_attention_max_distance": 16,
        "dropout_rate": 0.0, "layer_norm_epsilon": 1e-6, "initializer_factor": 1.0,
        "feed_forward_proj": "gated-gelu", "tie_word_embeddings": false, "is_encoder_decoder": true,
        "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let cfg: t5::Config = serde_json::from_value(config).unwrap();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    t5::T5ForConditionalGeneration::load(vb, &cfg).unwrap();
    // VarMap initialises some weights (layer norms) to zero, which makes every logit equal: randomise them all,
    // from a fixed seed (uniform, standard deviation 0.5) so that every run tests the same model. Variables are
    // visited by name: `all_vars` follows a hash map's order.
    let mut rng = SplitMix64(0x2545_f491_4f6c_dd1d);
    let data = varmap.data().lock().unwrap();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let n = var.elem_count();
        let values: Vec<f32> = (0..n).map(|_| (rng.next_f32() * 2.0 - 1.0) * 0.866).collect();
        var.set(&Tensor::from_vec(values, var.shape(), &Device::Cpu).unwrap())
            .unwrap();
    }
    drop(data);
    varmap.save(dir.join("model.safetensors")).unwrap();

    let mut vocab: HashMap<String, u32> = HashMap::new();
    for (i, w) in ["<pad>", "</s>", "<unk>"].iter().enumerate() {
        vocab.insert(w.to_string(), i as u32);
    }
    for i in 3..VOCAB {
        vocab.insert(format!("w{i}"), i as u32);
    }
    let model = WordLevel::builder()
        .vocab(vocab.into_iter().collect())
        .unk_token("<unk>".into())
        .build()
        .unwrap();
    let mut tokenizer = Tokenizer::new(model);
    tokenizer.with_pre_tokenizer(Some(Whitespace {}));
    tokenizer.save(dir.join("tokenizer.json"), false).unwrap();
}

#[test]
fn tiny_t5_loads_and_decodes_greedily_within_bounds() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_t5(dir.path());
    let settings = Seq2SeqConfig {
        max_new_tokens: 12,
        ..Seq2SeqConfig::default()
    };
    let rewriter = Seq2SeqDetoxifier::load(&ModelSource::Dir(dir.path().into()), &Device::Cpu, settings).unwrap();
    let (a, n) = rewriter.generate("w5 w6 w7 w8").unwrap();
    assert!(n <= 12, "{n} new tokens");
    let (b, m) = rewriter.generate("w5 w6 w7 w8").unwrap();
    assert_eq!(
        (a.clone(), n),
        (b, m),
        "greedy + a cleared KV cache: the same input gives the same output"
    );
    // With these fixed weights the greedy output is not empty and changes with the input: the encoder's states
    // reach the decoder.
    let (c, _) = rewriter.generate("w40 w41 w42").unwrap();
    assert!(n > 0, "no token generated");
    assert_ne!(a, c, "the output depends on the input");
    let out = rewriter
        .detoxify(&DetoxRequest {
            prompt: "w9 w10",
            response: "w11 w12",
            score: None,
        })
        .unwrap();
    assert_eq!(out.kind, mllm_protector::detoxifier::DetoxKind::Rewrite);
}

#[test]
fn t5_folder_errors_are_typed() {
    let dir = tempfile::tempdir().unwrap();
    let src = ModelSource::Dir(dir.path().into());
    let err = Seq2SeqDetoxifier::load(&src, &Device::Cpu, Seq2SeqConfig::default()).unwrap_err();
    assert!(matches!(err, Error::MissingModelFile { .. }), "{err}");
    write_tiny_t5(dir.path());
    std::fs::write(dir.path().join("config.json"), "{\"d_model\": 16}").unwrap();
    let err = Seq2SeqDetoxifier::load(&src, &Device::Cpu, Seq2SeqConfig::default()).unwrap_err();
    assert!(matches!(err, Error::BadConfig { .. }), "{err}");
}
