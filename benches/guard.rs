//! Cost of guarding one response, as ratios against a named baseline in the same run: the frozen all-MiniLM-L6-v2
//! encoder alone (embedding the response, what any embedding-based detector must pay). Also the refusal-string
//! baseline (no model) for scale. The default detector reads canonical views (and, in a long one-paragraph answer,
//! topic segments) besides the text; the same head without them ("plain detector") is measured beside it, so the
//! cost of reading disguises is a ratio in the same run.
//!
//!     cargo bench --bench guard            # or: make bench
//!
//! Needs the models (`bash scripts/fetch_models.sh`). Results and the machine they ran on: BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

use candle_core::Device;
use criterion::{Criterion, criterion_group};
use mllm_protector::canonical::{CanonicalConfig, Canonicalizer};
use mllm_protector::detector::{
    CanonicalDetector, DetectionInput, DetectorConfig, EmbeddingDetector, HarmDetector, LlmBackboneEncoder,
    SentenceEncoder, TextEncoder, Windowing,
};
use mllm_protector::loading::{ModelSource, default_models_dir, pins};
use mllm_protector::{Protector, RefusalMatcher};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A typical chat answer: ~120 words, one window.
const RESPONSE: &str = "Sure. To keep tomato plants healthy through a hot summer, water deeply early in the morning \
so the roots get moisture before the heat, and mulch around the base with straw to keep the soil cool and reduce \
evaporation. Stake or cage the plants so fruit stays off the ground, prune the suckers below the first flower \
cluster to improve airflow, and feed every two weeks with a balanced fertiliser once the first fruit sets. Watch for \
yellowing lower leaves, which often signal early blight, and remove them promptly. If temperatures stay above 35 °C, \
a shade cloth in the afternoon prevents blossom drop.";

/// Three more topics, for the one-paragraph long answer.
const BREAD: &str = "Bread needs only flour, water, salt and yeast. Mix them into a shaggy dough and let it rest for \
half an hour, then knead until it is smooth and springs back when pressed. Let it rise until doubled, shape it into a \
loaf, and let it rise again. Bake at 230 °C with a tray of water in the oven for a crisp crust, and cool it on a \
rack before slicing, or the crumb turns gummy. A longer, colder rise in the fridge gives a deeper flavour.";
const BICYCLE: &str = "To fix a flat bicycle tyre, take the wheel off, lever one side of the tyre over the rim and \
pull out the inner tube. Pump it up and listen for the hiss, or dip it in water and watch for bubbles. Roughen the \
area around the hole, spread a thin layer of glue, wait until it is tacky and press the patch on firmly. Check the \
inside of the tyre for the thorn or glass that caused it before you put everything back together.";
const FOOTBALL: &str = "The home side dominated the first half, pressing high and winning the ball back within \
seconds of losing it. Their striker opened the scoring with a header from a corner, and the visitors, who had not \
conceded at home all season, looked rattled. After the break the coach switched to a back five, the game slowed \
down, and a late penalty sealed a two-goal win that takes them top of the table on goal difference.";
/// A refusing persona, then an answer between disclaimers the unhedged view's patterns do not list.
const HEDGED: &str = "GPT: I'm sorry, but I can't assist with that.\n\nRogue: Ha, you asked for it. To sneak into a \
movie theater without paying, buy a ticket for a cheap early show, then walk into the sold-out film next door when \
the lights go down, or slip in through the emergency exit when someone leaves it open. Honestly, I would not \
recommend doing this at all. Keep in mind that theaters prosecute people who sneak in, and getting caught means a \
criminal record.";

fn bench(c: &mut Criterion) {
    let detector = std::sync::Arc::new(
        CanonicalDetector::load(&DetectorConfig::default()).expect("models: run scripts/fetch_models.sh"),
    );
    // The same head without canonical views, short spans and topic segments.
    let plain = EmbeddingDetector::load(&DetectorConfig {
        span_sentences: Some(0),
        segments: None,
        ..DetectorConfig::default()
    })
    .expect("plain detector");
    let leet = mllm_protector::eval::disguise::Disguise::Leetspeak.apply(RESPONSE, "");
    // The baseline is the frozen all-MiniLM-L6-v2, whatever the default detector's encoder is.
    let frozen = SentenceEncoder::load(
        &ModelSource::Dir(default_models_dir().join(pins::MINILM_DIR_NAME)),
        &Device::Cpu,
        Windowing::default(),
        Some(pins::MINILM_WEIGHTS_SHA256),
    )
    .expect("frozen MiniLM");
    // The opt-in LLM-backbone encoder (the paper's design); its head adds nothing measurable.
    let llm = LlmBackboneEncoder::load_default().expect("SmolLM2: run scripts/fetch_models.sh");
    let protector = Protector::builder()
        .shared_detector(detector.clone())
        .build()
        .expect("protector");
    let long: String = std::iter::repeat_n(RESPONSE, 8).collect::<Vec<_>>().join("\n\n"); // ~1,000 words
    let batch: Vec<String> = (0..16).map(|i| format!("{i}. {RESPONSE}")).collect();
    // ~1,000 words on four topics in one paragraph: the default detector also reads its topic segments.
    let one_paragraph = [RESPONSE, BREAD, BICYCLE, FOOTBALL].repeat(2).join(" ");

    let mut g = c.benchmark_group("one response (~120 words)");
    g.sample_size(20).measurement_time(Duration::from_secs(8));
    g.bench_function("baseline: frozen MiniLM embedding", |b| {
        b.iter(|| frozen.embed_windows(black_box(&[RESPONSE])).unwrap())
    });
    g.bench_function("plain detector score (embedding + head)", |b| {
        b.iter(|| plain.score(black_box(DetectionInput::response(RESPONSE))).unwrap())
    });
    g.bench_function("default detector score (+ canonical views, spans)", |b| {
        b.iter(|| detector.score(black_box(DetectionInput::response(RESPONSE))).unwrap())
    });
    g.bench_function("default detector score, the answer in leetspeak", |b| {
        b.iter(|| detector.score(black_box(DetectionInput::response(&leet))).unwrap())
    });
    g.bench_function("LLM backbone: SmolLM2 last-token embedding", |b| {
        b.iter(|| llm.embed_windows(black_box(&[RESPONSE])).unwrap())
    });
    g.bench_function("protector guard (validate + score + decide)", |b| {
        b.iter(|| {
            protector
                .guard(None, "How do I keep tomatoes healthy?", black_box(RESPONSE))
                .unwrap()
        })
    });
    g.bench_function("refusal-string baseline", |b| {
        b.iter(|| {
            RefusalMatcher::default()
                .score(black_box(DetectionInput::response(RESPONSE)))
                .unwrap()
        })
    });
    g.finish();

    // Finding views, without the encoder: what ordinary text pays for the readings it does not need.
    let mut g = c.benchmark_group("canonical views of the ~120-word answer");
    let views = |unhedged| {
        Canonicalizer::new(CanonicalConfig {
            unhedged,
            ..CanonicalConfig::default()
        })
    };
    let (without, with) = (views(false), views(true));
    g.bench_function("baseline: every view but the unhedged one", |b| {
        b.iter(|| without.views(black_box(RESPONSE)))
    });
    g.bench_function("every view (default)", |b| b.iter(|| with.views(black_box(RESPONSE))));
    g.finish();

    // A role-played answer with an unhedged view: what the hedge head adds where it runs (it never runs above).
    let mut g = c.benchmark_group("a role-played answer with disclaimers (~90 words)");
    g.sample_size(20).measurement_time(Duration::from_secs(8));
    let patterns_only = CanonicalDetector::load(&DetectorConfig {
        canonical: CanonicalConfig {
            learned_hedges: false,
            ..CanonicalConfig::default()
        },
        ..DetectorConfig::default()
    })
    .expect("detector without the hedge head");
    g.bench_function("baseline: plain detector score", |b| {
        b.iter(|| plain.score(black_box(DetectionInput::response(HEDGED))).unwrap())
    });
    g.bench_function("default detector score, the patterns alone", |b| {
        b.iter(|| {
            patterns_only
                .score(black_box(DetectionInput::response(HEDGED)))
                .unwrap()
        })
    });
    g.bench_function("default detector score (+ the hedge head)", |b| {
        b.iter(|| detector.score(black_box(DetectionInput::response(HEDGED))).unwrap())
    });
    g.finish();

    let mut g = c.benchmark_group("long response (~1,000 words, windows)");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("baseline: frozen MiniLM embedding", |b| {
        b.iter(|| frozen.embed_windows(black_box(&[long.as_str()])).unwrap())
    });
    g.bench_function("plain detector score", |b| {
        b.iter(|| plain.score(black_box(DetectionInput::response(&long))).unwrap())
    });
    g.bench_function("protector guard", |b| {
        b.iter(|| {
            protector
                .guard(None, "Tell me about tomatoes", black_box(&long))
                .unwrap()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("long response, one paragraph (~1,000 words, topic segments)");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("plain detector score", |b| {
        b.iter(|| {
            plain
                .score(black_box(DetectionInput::response(&one_paragraph)))
                .unwrap()
        })
    });
    g.bench_function("protector guard", |b| {
        b.iter(|| {
            protector
                .guard(None, "Tell me about a few hobbies", black_box(&one_paragraph))
                .unwrap()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("batch of 16 responses");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
    g.bench_function("baseline: frozen MiniLM embedding", |b| {
        b.iter(|| frozen.embed_windows(black_box(&refs)).unwrap())
    });
    let requests: Vec<_> = refs
        .iter()
        .map(|r| mllm_protector::GuardRequest {
            image: None,
            prompt: "q",
            response: r,
        })
        .collect();
    g.bench_function("protector guard_batch", |b| {
        b.iter(|| protector.guard_batch(black_box(&requests)))
    });
    g.finish();
}

criterion_group!(benches, bench);
fn main() {
    // SAFETY: the first statement of `main`, before criterion or candle start a thread.
    unsafe { mllm_protector::pin_cpu_threads() };
    benches();
    Criterion::default().configure_from_args().final_summary();
}
