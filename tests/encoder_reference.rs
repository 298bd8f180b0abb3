//! The Rust encoder must reproduce Python sentence-transformers on the same files (fixture written by
//! `scripts/reference_embeddings.py`): cosine ≥ 0.9999 for every reference text with float weights, and ≥ 0.99 with
//! the default's int8 weights (on CPUs with AVX-512 VNNI; elsewhere the default is float).

mod common;

use mllm_protector::detector::{SentenceEncoder, TextEncoder, WeightLayout, Windowing};
use mllm_protector::loading::{ModelSource, pins};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    weights_sha256: String,
    max_seq_length: usize,
    texts: Vec<String>,
    embeddings: Vec<Vec<f32>>,
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

fn load(layout: WeightLayout) -> SentenceEncoder {
    SentenceEncoder::load_with_layout(
        &ModelSource::Dir(common::minilm_dir()),
        &candle_core::Device::Cpu,
        Windowing::default(),
        Some(pins::MINILM_WEIGHTS_SHA256),
        None,
        layout,
    )
    .expect("load all-MiniLM-L6-v2")
}

#[test]
fn matches_sentence_transformers() {
    let reference: Reference =
        serde_json::from_str(include_str!("fixtures/minilm_reference.json")).expect("fixture parses");
    let texts: Vec<&str> = reference.texts.iter().map(String::as_str).collect();
    for (layout, bar) in [(WeightLayout::FusedFloat, 0.9999), (WeightLayout::ForDevice, 0.99)] {
        let encoder = load(layout);
        assert_eq!(
            encoder.weights_sha256(),
            reference.weights_sha256,
            "fixture made on other weights"
        );
        assert_eq!(encoder.windowing().max_tokens, reference.max_seq_length);
        let ours = encoder.embed_truncated(&texts).expect("embed");
        assert_eq!(ours.len(), reference.embeddings.len());
        let mut least = 1.0f32;
        for ((text, a), b) in texts.iter().zip(&ours).zip(&reference.embeddings) {
            assert_eq!(a.len(), 384);
            let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "not L2-normalised: {norm}");
            let c = cosine(a, b);
            assert!(
                c >= bar,
                "{layout:?} ({}): cosine {c} < {bar} for {text:?}",
                encoder.precision()
            );
            least = least.min(c);
        }
        eprintln!("{layout:?} ({}): least cosine {least}", encoder.precision());
    }
}

#[test]
fn fused_cpu_pass_matches_candle_bert() {
    // The fused CPU forward pass against candle-transformers' BERT on the f32 weights, over windows of many lengths
    // in one batch (the fused pass packs them without padding; candle pads). With float weights the difference is
    // f16's rounding of the weights (the fused pass alone, on f16-rounded weights, matches candle to 1e-5:
    // `detector::fused_bert`'s unit tests); with the default's int8 weights, quantization's.
    let candle = load(WeightLayout::CandleBert);
    let sentence = "Mix the powder with water, then heat it slowly while stirring for ten minutes. ";
    let texts: Vec<String> = [1, 2, 5, 13, 40].iter().map(|&n| sentence.repeat(n)).collect();
    let windows: Vec<Vec<u32>> = texts.iter().flat_map(|t| candle.token_windows(t).unwrap()).collect();
    assert!(windows.iter().any(|w| w.len() == Windowing::default().max_tokens));
    let b = candle.embed_token_windows(&windows).unwrap().to_vec2::<f32>().unwrap();
    for (layout, difference, bar) in [
        (WeightLayout::FusedFloat, 5e-4, 0.99999),
        (WeightLayout::ForDevice, 0.015, 0.995),
    ] {
        let fused = load(layout);
        let a = fused.embed_token_windows(&windows).unwrap().to_vec2::<f32>().unwrap();
        let worst = a
            .iter()
            .flatten()
            .zip(b.iter().flatten())
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        let least_cosine = a.iter().zip(&b).map(|(x, y)| cosine(x, y)).fold(1.0f32, f32::min);
        eprintln!(
            "{layout:?} ({}): largest difference {worst}, least cosine {least_cosine}",
            fused.precision()
        );
        assert!(worst < difference, "{layout:?}: largest difference {worst}");
        assert!(least_cosine > bar, "{layout:?}: least cosine {least_cosine}");
    }
}

#[test]
fn batching_does_not_change_embeddings() {
    // Padding inside a batch must be invisible: one text alone and the same text batched with longer ones agree.
    let encoder = common::encoder();
    let short = "A short sentence.";
    let long = "A much longer sentence that forces padding of the short one inside the same batch, twice over.";
    let alone = encoder.embed_truncated(&[short]).unwrap();
    let batched = encoder.embed_truncated(&[long, short, long]).unwrap();
    assert!(cosine(&alone[0], &batched[1]) > 0.99999);
}

#[test]
fn long_text_is_read_in_overlapping_windows() {
    let encoder = common::encoder();
    let text = "word ".repeat(1000); // 1,000 tokens, one paragraph
    let windows = encoder.token_windows(&text).unwrap();
    let w = encoder.windowing();
    let body = w.max_tokens - 2;
    let step = body - w.overlap;
    assert_eq!(windows.len(), (1000 - body).div_ceil(step) + 1);
    assert!(windows.iter().all(|x| x.len() <= w.max_tokens));
    let covered: usize = windows.iter().map(|x| x.len() - 2).sum::<usize>() - w.overlap * (windows.len() - 1);
    assert_eq!(covered, 1000, "every token is in some window, overlaps counted once");
}

#[test]
fn long_text_paragraphs_are_also_read_alone() {
    let encoder = common::encoder();
    let paragraph = "word ".repeat(100); // 100 tokens each
    let short = "a short heading"; // under min_paragraph_tokens: only read inside the fixed windows
    let text = [
        paragraph.as_str(),
        short,
        paragraph.as_str(),
        paragraph.as_str(),
        short,
        paragraph.as_str(),
        paragraph.as_str(),
        paragraph.as_str(),
    ]
    .join("\n\n");
    let windows = encoder.token_windows(&text).unwrap();
    let fixed = windows.iter().filter(|w| w.len() > 102).count();
    let alone = windows.iter().filter(|w| w.len() == 102).count();
    assert_eq!(alone, 6, "each long paragraph once, alone");
    assert_eq!(
        windows.iter().filter(|w| w.len() < 102).count(),
        0,
        "short fragments are not read alone"
    );
    assert!(fixed >= 3, "plus the fixed windows over the whole text");
    // A short text is one window, as in sentence-transformers, whatever its paragraphs.
    assert_eq!(encoder.token_windows("one\n\ntwo").unwrap().len(), 1);
}

#[test]
fn a_long_text_with_no_paragraph_breaks_is_also_read_in_topic_segments() {
    use mllm_protector::detector::{Segmenting, WindowKind};
    let encoder = common::encoder().with_segmenting(Some(Segmenting::default()));
    let baking = "Preheat the oven to 180 degrees and butter a round cake tin. \
        Whisk the eggs with the sugar until the mixture is pale and thick. \
        Fold the flour into the batter gently so that it stays light. \
        Bake the cake for twenty-five minutes until a skewer comes out clean. ";
    let football = "The striker scored twice in the second half of the match. \
        The home team defended deep after the goalkeeper was sent off. \
        Their coach changed the formation at half time to press higher. \
        The league table now shows them three points clear at the top. ";
    let one_paragraph = format!("{}{}", baking.repeat(3), football.repeat(3));
    let read = encoder.embed_windows(&[one_paragraph.as_str()]).unwrap();
    let kinds = |k: WindowKind| read.kind.iter().filter(|&&x| x == k).count();
    assert!(kinds(WindowKind::Fixed) > 1, "longer than one window");
    assert!(kinds(WindowKind::Segment) >= 2, "{:?}", read.kind);
    assert_eq!(read.kind.len(), read.owner.len());
    assert_eq!(read.embeddings.dims()[0], read.kind.len());

    // With its paragraph break back, the paragraphs are read instead, and no segments.
    let two_paragraphs = format!("{}\n\n{}", baking.repeat(3), football.repeat(3));
    let read = encoder.embed_windows(&[two_paragraphs.as_str()]).unwrap();
    assert!(read.kind.contains(&WindowKind::Paragraph));
    assert!(!read.kind.contains(&WindowKind::Segment));

    // One window: no second pass.
    let read = encoder.embed_windows(&[baking]).unwrap();
    assert_eq!(read.kind, [WindowKind::Fixed]);

    // Off by default on a bare encoder.
    let read = common::encoder().embed_windows(&[one_paragraph.as_str()]).unwrap();
    assert!(!read.kind.contains(&WindowKind::Segment));
}
