//! Bad input gets a typed error, never a panic: broken model folders, corrupt or mis-shaped weights, unreadable
//! images. Uses the real model files (copied into a temporary folder and damaged there).

mod common;

use std::collections::HashMap;
use std::io::Cursor;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use mllm_protector::detector::{
    ClassifierHead, DeltaStorage, DetectorConfig, EmbeddingDetector, HeadMetadata, HeadSource, SentenceEncoder,
    WeightDelta, Windowing,
};
use mllm_protector::loading::{ModelSource, pins};
use mllm_protector::{Error, Image, Protector};

fn copy_model(to: &Path) {
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::copy(common::minilm_dir().join(f), to.join(f)).unwrap();
    }
}

fn load(dir: &Path, sha: Option<&str>) -> mllm_protector::Result<SentenceEncoder> {
    SentenceEncoder::load(
        &ModelSource::Dir(dir.to_path_buf()),
        &Device::Cpu,
        Windowing::default(),
        sha,
    )
}

#[test]
fn missing_model_folder() {
    let err = load(Path::new("/nonexistent/mllm-protector-models"), None).unwrap_err();
    assert!(matches!(err, Error::MissingModelFile { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("/nonexistent/mllm-protector-models/config.json")
            && err.to_string().contains("folder that has"),
        "the error names the file and says what to do: {err}"
    );
}

#[test]
fn corrupt_weights_are_caught_by_checksum_and_by_the_parser() {
    let dir = tempfile::tempdir().unwrap();
    copy_model(dir.path());
    let weights = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap(); // truncated download
    let err = load(dir.path(), Some(pins::MINILM_WEIGHTS_SHA256)).unwrap_err();
    assert!(matches!(err, Error::ChecksumMismatch { .. }), "{err}");
    let err = load(dir.path(), None).unwrap_err();
    assert!(matches!(err, Error::BadWeights { .. }), "{err}");
    std::fs::write(&weights, b"garbage").unwrap();
    let err = load(dir.path(), None).unwrap_err();
    assert!(matches!(err, Error::BadWeights { .. }), "{err}");
}

#[test]
fn weights_of_the_wrong_shape() {
    // A config that claims a wider model than the weights: BERT's tensors no longer fit.
    let dir = tempfile::tempdir().unwrap();
    copy_model(dir.path());
    let cfg_path = dir.path().join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["hidden_size"] = 768.into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let err = load(dir.path(), None).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
}

#[test]
fn malformed_config_and_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    copy_model(dir.path());
    std::fs::write(dir.path().join("config.json"), "{\"hidden_size\": \"wide\"}").unwrap();
    assert!(matches!(load(dir.path(), None).unwrap_err(), Error::BadConfig { .. }));
    copy_model(dir.path());
    std::fs::write(dir.path().join("tokenizer.json"), "{not json").unwrap();
    assert!(matches!(load(dir.path(), None).unwrap_err(), Error::Tokenizer(_)));
}

/// Each damaged model file gives an error that names it, whatever its kind.
#[test]
fn each_damaged_model_file_is_named_in_its_error() {
    let dir = tempfile::tempdir().unwrap();
    let named = |err: Error, file: &str| {
        assert!(err.to_string().contains(file), "the error does not name {file}: {err}");
    };
    copy_model(dir.path());
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    let err = load(dir.path(), None).unwrap_err();
    assert!(matches!(err, Error::MissingModelFile { .. }), "{err}");
    named(err, "tokenizer.json");

    copy_model(dir.path());
    std::fs::write(dir.path().join("tokenizer.json"), "{not json").unwrap();
    named(load(dir.path(), None).unwrap_err(), "tokenizer.json");

    copy_model(dir.path());
    std::fs::write(dir.path().join("config.json"), "{\"hidden_size\": \"wide\"}").unwrap();
    named(load(dir.path(), None).unwrap_err(), "config.json");

    copy_model(dir.path());
    let weights = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    named(
        load(dir.path(), Some(pins::MINILM_WEIGHTS_SHA256)).unwrap_err(),
        "model.safetensors",
    );
    named(load(dir.path(), None).unwrap_err(), "model.safetensors");

    copy_model(dir.path());
    let cfg_path = dir.path().join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["hidden_size"] = 768.into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    named(load(dir.path(), None).unwrap_err(), "model.safetensors");
}

fn embedded_metadata() -> HeadMetadata {
    ClassifierHead::embedded(&Device::Cpu).unwrap().metadata().clone()
}

#[test]
fn head_with_wrong_shapes_or_garbage() {
    let meta = embedded_metadata();
    let dim = meta.layer_sizes[0];
    // Weight of the wrong width for the declared layer sizes.
    let mut tensors = HashMap::new();
    tensors.insert(
        "layers.0.weight".to_string(),
        Tensor::zeros((1, dim + 1), DType::F32, &Device::Cpu).unwrap(),
    );
    tensors.insert(
        "layers.0.bias".to_string(),
        Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap(),
    );
    let mut one_layer = meta.clone();
    one_layer.layer_sizes = vec![dim, 1];
    let err = ClassifierHead::from_tensors(tensors, one_layer.clone(), "test head").unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    // A head for another encoder width.
    let mut other = one_layer;
    other.layer_sizes = vec![768, 1];
    let err = ClassifierHead::from_tensors(HashMap::new(), other, "test head").unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    // Not a safetensors file at all, and a head file that is not where it is said to be.
    let err = ClassifierHead::from_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}", "junk", &Device::Cpu).unwrap_err();
    assert!(matches!(err, Error::BadWeights { .. }), "{err}");
    let err = ClassifierHead::load(Path::new("/nonexistent/head.safetensors"), &Device::Cpu).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
}

#[test]
fn head_trained_on_other_weights_is_refused() {
    // The head records the sha256 of the encoder it was trained on; a different encoder file is rejected.
    let dir = tempfile::tempdir().unwrap();
    copy_model(dir.path());
    let mut meta = embedded_metadata();
    meta.encoder.weights_sha256 = "0".repeat(64);
    let head = ClassifierHead::embedded(&Device::Cpu).unwrap();
    let mut tensors = HashMap::new();
    let bytes = head.to_bytes().unwrap();
    for (k, v) in candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).unwrap() {
        tensors.insert(k, v);
    }
    let retagged = ClassifierHead::from_tensors(tensors, meta, "retagged").unwrap();
    let head_path = dir.path().join("head.safetensors");
    std::fs::write(&head_path, retagged.to_bytes().unwrap()).unwrap();
    let config = DetectorConfig {
        encoder: ModelSource::Dir(dir.path().to_path_buf()),
        head: HeadSource::File(head_path),
        ..DetectorConfig::default()
    };
    let err = EmbeddingDetector::load(&config).unwrap_err();
    assert!(matches!(err, Error::ChecksumMismatch { .. }), "{err}");
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(width, height, image::Rgb([200, 30, 30]));
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[test]
fn images_readable_and_not() {
    let good = Image::from_bytes(png(8, 5)).inspect().unwrap();
    assert_eq!((good.width, good.height, good.format.as_str()), (8, 5, "Png"));
    let bytes = png(64, 64);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("text", b"hello, not an image".to_vec()),
        ("truncated png", bytes[..bytes.len() / 2].to_vec()),
    ];
    for (what, bytes) in cases {
        let err = Image::from_bytes(bytes).inspect().unwrap_err();
        assert!(matches!(err, Error::UnreadableImage { .. }), "{what}: {err}");
    }
    let err = Image::open("/nonexistent/picture.png").unwrap_err();
    assert!(matches!(err, Error::UnreadableImage { .. }), "{err}");
}

#[test]
fn guard_with_the_real_detector_rejects_bad_input_and_reads_images() {
    let protector = Protector::builder()
        .shared_detector(common::detector())
        .build()
        .unwrap();
    let err = protector.guard(None, "p", "").unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    let huge = "All fine here. ".repeat(40_000); // 560 KB, over the 256 KiB default
    assert!(matches!(
        protector.guard(None, "p", &huge).unwrap_err(),
        Error::InputTooLarge { .. }
    ));
    let bad_image = Image::from_bytes(b"GIF89a broken".to_vec());
    let err = protector.guard(Some(&bad_image), "p", "A fine answer.").unwrap_err();
    assert!(matches!(err, Error::UnreadableImage { .. }), "{err}");
    let image = Image::from_bytes(png(32, 16));
    let out = protector
        .guard(Some(&image), "What colour is this?", "It is red.")
        .unwrap();
    assert_eq!(out.image.as_ref().map(|i| (i.width, i.height)), Some((32, 16)));
    assert!(!out.was_changed(), "{out:?}");
    // Odd but valid text never panics: control characters, lone combining marks, a very long single token.
    for odd in ["\u{0}\u{1}\u{7f}", "\u{301}\u{301}", &"a".repeat(20_000)] {
        let out = protector.guard(None, "p", odd).unwrap();
        assert!(out.harm_score.is_some_and(|s| (0.0..=1.0).contains(&s)));
    }
}

#[test]
fn ten_thousand_one_word_paragraphs_give_a_bounded_result() {
    let protector = Protector::builder()
        .shared_detector(common::detector())
        .without_image_reader()
        .build()
        .unwrap();
    let answer = "word\n\n".repeat(10_000); // 60 KB, under the limit: read, not refused
    let out = protector.guard(None, "p", &answer).unwrap();
    assert!(out.harm_score.is_some_and(|s| (0.0..=1.0).contains(&s)));
    // Fixed windows only: one-word paragraphs are too short to be read alone, so the reads stay proportional to the
    // length (about 20,000 tokens in windows of 254 stepping 190).
    assert!(out.windows > 50 && out.windows < 200, "{} windows", out.windows);
}

#[test]
fn a_head_whose_encoder_delta_is_missing_altered_or_misshapen_is_refused() {
    use mllm_protector::detector::head::{ENCODER_DELTA_PREFIX, ENCODER_DELTA_SCALE_PREFIX};
    let head = ClassifierHead::embedded(&Device::Cpu).unwrap();
    let bytes = head.to_bytes().unwrap();
    let all: HashMap<String, Tensor> = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).unwrap();
    let is_delta = |k: &str| k.starts_with(ENCODER_DELTA_PREFIX) || k.starts_with(ENCODER_DELTA_SCALE_PREFIX);
    let tensors: HashMap<String, Tensor> = all
        .iter()
        .filter(|(k, _)| !is_delta(k))
        .map(|(k, t)| (k.clone(), t.clone()))
        .collect();
    // The metadata names a delta the file does not carry.
    let mut meta = embedded_metadata();
    meta.encoder.delta_sha256 = Some("0".repeat(64));
    let err = ClassifierHead::from_tensors(tensors.clone(), meta.clone(), "no delta").unwrap_err();
    assert!(matches!(err, Error::BadWeights { .. }), "{err}");
    // One stored delta weight changed: the identity recorded at training no longer matches.
    let mut altered = all.clone();
    let name = all
        .keys()
        .find(|k| k.starts_with(ENCODER_DELTA_PREFIX))
        .unwrap()
        .clone();
    let t = &all[&name];
    let flipped = (t.to_dtype(DType::F32).unwrap() * -1.0)
        .unwrap()
        .to_dtype(t.dtype())
        .unwrap();
    altered.insert(name, flipped);
    let err = ClassifierHead::from_tensors(altered, embedded_metadata(), "altered delta").unwrap_err();
    assert!(
        matches!(&err, Error::BadWeights { reason, .. } if reason.contains("corrupt or was altered")),
        "{err}"
    );
    // A delta tensor whose shape is not the base tensor's (recorded honestly): refused when the encoder is built.
    let misshapen = HashMap::from([(
        "encoder.layer.5.output.dense.weight".to_string(),
        Tensor::zeros((3, 3), DType::F16, &Device::Cpu).unwrap(),
    )]);
    meta.encoder.delta_sha256 = Some(WeightDelta::identity(&misshapen).unwrap());
    meta.encoder.delta_storage = DeltaStorage::Float;
    let mut with_delta = tensors;
    for (k, t) in misshapen {
        with_delta.insert(format!("{ENCODER_DELTA_PREFIX}{k}"), t);
    }
    let bad = ClassifierHead::from_tensors(with_delta, meta, "bad delta").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let head_path = dir.path().join("head.safetensors");
    std::fs::write(&head_path, bad.to_bytes().unwrap()).unwrap();
    let config = DetectorConfig {
        encoder: ModelSource::Dir(common::minilm_dir()),
        head: HeadSource::File(head_path),
        ..DetectorConfig::default()
    };
    let err = EmbeddingDetector::load(&config).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
}
