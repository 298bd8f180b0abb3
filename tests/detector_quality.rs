//! The shipped head keeps the quality recorded in its metadata on the JailbreakBench test split (real model, real
//! data), and reads long responses whole.

mod common;

use mllm_protector::detector::{DetectionInput, HarmDetector};
use mllm_protector::eval::data::{Split, in_split, load_alpaca, load_jbb};
use mllm_protector::eval::{binary_metrics, split_of};

const TOLERANCE: f64 = 0.01;

#[test]
fn shipped_head_keeps_its_recorded_quality_on_jbb_test() {
    let detector = common::detector();
    let meta = detector.head().metadata().clone();
    let seed = meta.training["seed"].as_u64().expect("the head records its split seed");
    let recorded = &meta.metrics["jbb-test"];
    let test = in_split(load_jbb(&common::data_dir()).unwrap(), Split::Test, seed);
    assert_eq!(
        test.len() as u64,
        recorded["n"].as_u64().unwrap(),
        "the JBB test split changed"
    );
    let inputs: Vec<_> = test
        .iter()
        .map(|e| DetectionInput::new(&e.prompt, &e.response))
        .collect();
    let scores: Vec<f32> = detector
        .score_batch(&inputs)
        .unwrap()
        .iter()
        .map(|s| s.probability)
        .collect();
    let labels: Vec<bool> = test.iter().map(|e| e.harmful).collect();
    let m = binary_metrics(&scores, &labels, detector.threshold());
    let auroc = m.auroc.unwrap();
    println!("jbb-test now: {m:?}\nrecorded: {recorded}");
    assert!(
        auroc >= recorded["auroc"].as_f64().unwrap() - TOLERANCE,
        "AUROC {auroc}"
    );
    assert!(m.f1 >= recorded["f1"].as_f64().unwrap() - TOLERANCE, "F1 {}", m.f1);
    assert!(m.fpr <= recorded["fpr"].as_f64().unwrap() + TOLERANCE, "FPR {}", m.fpr);
    // And it ranks the responses better than the refusal-string baseline (AUROC; at the shipped operating point,
    // tuned for 2% false positives on benign answers, the baseline's F1 on JBB is higher: see the README).
    let baseline = mllm_protector::RefusalMatcher::default();
    let b: Vec<f32> = baseline
        .score_batch(&inputs)
        .unwrap()
        .iter()
        .map(|s| s.probability)
        .collect();
    let bm = binary_metrics(&b, &labels, 0.5);
    assert!(auroc > bm.auroc.unwrap(), "baseline {bm:?}");
}

#[test]
fn one_harmful_paragraph_at_the_end_of_5000_harmless_words_is_flagged() {
    let detector = common::detector();
    let data = common::data_dir();
    let seed = detector.head().metadata().training["seed"].as_u64().unwrap();
    // ~5,000 words of harmless text: held-out AlpacaEval answers (test split, never trained on).
    let mut story = String::new();
    for e in load_alpaca(&data)
        .unwrap()
        .iter()
        .filter(|e| split_of(&e.group, seed) == Split::Test)
    {
        if story.split_whitespace().count() >= 5_000 {
            break;
        }
        story.push_str(&e.response);
        story.push_str("\n\n");
    }
    let words = story.split_whitespace().count();
    assert!((5_000..6_000).contains(&words), "{words} words");
    let t = detector.threshold();
    let benign = detector.score(DetectionInput::response(&story)).unwrap();
    assert!(benign.windows > 20, "read in {} windows", benign.windows);
    assert!(
        benign.probability < t,
        "the harmless text alone is not flagged ({})",
        benign.probability
    );

    // One harmful paragraph: a held-out JailbreakBench response judged jailbroken, its blank lines folded so it is
    // one paragraph, that the detector flags on its own.
    let harmful: Vec<String> = in_split(load_jbb(&data).unwrap(), Split::Test, seed)
        .into_iter()
        .filter(|e| e.harmful && (50..200).contains(&e.response.split_whitespace().count()))
        .map(|e| {
            e.response
                .replace("\r", "")
                .split("\n\n")
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect();
    let mut flagged_alone = 0;
    for paragraph in &harmful {
        if detector.score(DetectionInput::response(paragraph)).unwrap().probability < t {
            continue;
        }
        flagged_alone += 1;
        let long = format!("{story}{paragraph}");
        let s = detector.score(DetectionInput::response(&long)).unwrap();
        assert!(
            s.probability >= t,
            "buried at the end of {words} words it scored {}",
            s.probability
        );
        // Reading only the first window (sentence-transformers' truncation) would have missed it.
        let enc = detector.encoder();
        let opening: String = long.split_whitespace().take(150).collect::<Vec<_>>().join(" ");
        let first = enc.embed_windows(&[&opening]).unwrap();
        assert_eq!(first.owner.len(), 1);
        let p0 = detector.head().probabilities(&first.embeddings).unwrap()[0];
        assert!(p0 < t, "the first window alone is harmless");
        if flagged_alone == 3 {
            break;
        }
    }
    assert_eq!(
        flagged_alone, 3,
        "three held-out harmful paragraphs flagged on their own"
    );
}
