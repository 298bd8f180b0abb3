//! Protector plumbing with stand-in detectors (no model needed): verdicts, actions, fallbacks, the fail-safe
//! policy, batching and the generate layer.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use mllm_protector::detector::{DetectionInput, HarmDetector, HarmScore};
use mllm_protector::detoxifier::{DetoxKind, DetoxRequest, Detoxified, Detoxifier};
use mllm_protector::{
    Action, Error, FailurePolicy, GuardLayer, GuardRequest, InputLimits, Protector, ProtectorConfig, Verdict,
};

/// Scores a response by the number after "score=" in it; "fail" makes the whole batch fail; "nan" gives NaN.
struct Scripted {
    calls: AtomicUsize,
}

impl Scripted {
    fn new() -> Self {
        Scripted {
            calls: AtomicUsize::new(0),
        }
    }
}

impl HarmDetector for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }
    fn threshold(&self) -> f32 {
        0.5
    }
    fn score_batch(&self, inputs: &[DetectionInput<'_>]) -> mllm_protector::Result<Vec<HarmScore>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        inputs
            .iter()
            .map(|i| {
                if i.response.contains("fail") {
                    return Err(Error::InvalidInput("scripted failure".into()));
                }
                if i.response.contains("nan") {
                    return Ok(HarmScore::single(f32::NAN));
                }
                let p = i
                    .response
                    .split("score=")
                    .nth(1)
                    .and_then(|s| s.split_whitespace().next())
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0.0);
                Ok(HarmScore::single(p))
            })
            .collect()
    }
}

struct Rewriter;
impl Detoxifier for Rewriter {
    fn name(&self) -> &str {
        "rewriter"
    }
    fn detoxify(&self, req: &DetoxRequest<'_>) -> mllm_protector::Result<Detoxified> {
        if req.response.contains("detox-error") {
            return Err(Error::InvalidInput("rewriter broke".into()));
        }
        if req.response.contains("detox-empty") {
            return Ok(Detoxified {
                text: "  ".into(),
                kind: DetoxKind::Rewrite,
            });
        }
        Ok(Detoxified {
            text: format!("I can't help with that part. A safe answer to: {}", req.prompt),
            kind: DetoxKind::Rewrite,
        })
    }
}

fn protector() -> Protector {
    Protector::builder()
        .template_only()
        .detector(Scripted::new())
        .build()
        .unwrap()
}

#[test]
fn harmless_passes_unchanged() {
    let out = protector().guard(None, "p", "score=0.1 fine").unwrap();
    assert_eq!((out.verdict, out.action), (Verdict::Harmless, Action::Passed));
    assert_eq!(out.response, "score=0.1 fine");
    assert_eq!(out.harm_score, Some(0.1));
    assert!(!out.was_changed());
}

#[test]
fn harmful_is_replaced_by_the_template_without_repeating_it() {
    let out = protector()
        .guard(None, "p", "score=0.9 step one: acquire the precursor")
        .unwrap();
    assert_eq!((out.verdict, out.action), (Verdict::Harmful, Action::Replaced));
    assert_eq!(out.original_response, "score=0.9 step one: acquire the precursor");
    assert!(!out.response.contains("precursor"));
    assert_eq!(out.response, mllm_protector::detoxifier::template::DEFAULT_REFUSAL);
    assert_eq!(out.detoxifier.as_deref(), Some("template"));
}

#[test]
fn threshold_is_inclusive_and_overridable() {
    let at = protector().guard(None, "p", "score=0.5").unwrap();
    assert_eq!(at.verdict, Verdict::Harmful, "score == threshold is harmful");
    let strict = Protector::builder()
        .template_only()
        .detector(Scripted::new())
        .threshold(0.95)
        .build()
        .unwrap();
    assert_eq!(strict.guard(None, "p", "score=0.9").unwrap().verdict, Verdict::Harmless);
    for bad in [0.0, -1.0, 1.5, f32::NAN] {
        let err = Protector::builder()
            .template_only()
            .detector(Scripted::new())
            .threshold(bad)
            .build()
            .unwrap_err();
        assert!(matches!(err, Error::BadConfig { .. }), "{bad}: {err}");
    }
}

#[test]
fn rewriter_output_is_used_and_its_failures_fall_back() {
    let p = Protector::builder()
        .template_only()
        .detector(Scripted::new())
        .detoxifier(Rewriter)
        .build()
        .unwrap();
    let ok = p.guard(None, "the question", "score=0.8").unwrap();
    assert_eq!(ok.action, Action::Rewritten);
    assert_eq!(
        ok.response,
        "I can't help with that part. A safe answer to: the question"
    );
    for broken in ["score=0.8 detox-error", "score=0.8 detox-empty"] {
        let out = p.guard(None, "q", broken).unwrap();
        assert_eq!(out.action, Action::Replaced, "{broken}");
        assert_eq!(out.response, mllm_protector::detoxifier::template::DEFAULT_REFUSAL);
        assert!(out.fallback.is_some() && out.note.is_some(), "{:?}", out.note);
    }
}

#[test]
fn undecided_fails_closed_by_default_and_visibly() {
    for response in ["fail", "nan"] {
        let out = protector().guard(None, "p", response).unwrap();
        assert_eq!(out.verdict, Verdict::Undecided);
        assert_eq!(out.action, Action::Replaced);
        assert_eq!(out.harm_score, None);
        assert!(
            out.note.as_deref().unwrap_or("").contains("FailClosed"),
            "{:?}",
            out.note
        );
    }
}

#[test]
fn fail_open_shows_the_response_marked_undecided() {
    let p = Protector::builder()
        .template_only()
        .detector(Scripted::new())
        .on_undecided(FailurePolicy::FailOpen)
        .build()
        .unwrap();
    let out = p.guard(None, "p", "fail here").unwrap();
    assert_eq!((out.verdict, out.action), (Verdict::Undecided, Action::Passed));
    assert_eq!(out.response, "fail here");
    assert!(out.note.is_some());
}

#[test]
fn bad_input_is_a_typed_error() {
    let p = Protector::builder()
        .template_only()
        .detector(Scripted::new())
        .limits(InputLimits {
            max_response_bytes: 100,
            max_prompt_bytes: 10,
        })
        .build()
        .unwrap();
    assert!(matches!(p.guard(None, "p", "").unwrap_err(), Error::InvalidInput(_)));
    assert!(matches!(
        p.guard(None, "p", " \n\t ").unwrap_err(),
        Error::InvalidInput(_)
    ));
    let big = "x".repeat(101);
    match p.guard(None, "p", &big).unwrap_err() {
        Error::InputTooLarge { len, max, .. } => assert_eq!((len, max), (101, 100)),
        e => panic!("{e}"),
    }
    assert!(matches!(
        p.guard(None, &"q".repeat(11), "ok").unwrap_err(),
        Error::InputTooLarge { .. }
    ));
}

#[test]
fn batch_keeps_every_verdict_and_scores_once() {
    let detector = Arc::new(Scripted::new());
    let p = Protector::builder()
        .template_only()
        .shared_detector(detector.clone())
        .build()
        .unwrap();
    let requests = [
        GuardRequest {
            image: None,
            prompt: "a",
            response: "score=0.2",
        },
        GuardRequest {
            image: None,
            prompt: "b",
            response: "",
        },
        GuardRequest {
            image: None,
            prompt: "c",
            response: "score=0.7",
        },
    ];
    let out = p.guard_batch(&requests);
    assert_eq!(detector.calls.load(Ordering::SeqCst), 1, "one batched detector call");
    assert_eq!(out[0].as_ref().unwrap().verdict, Verdict::Harmless);
    assert!(matches!(out[1], Err(Error::InvalidInput(_))), "the bad item errs alone");
    assert_eq!(out[2].as_ref().unwrap().verdict, Verdict::Harmful);
    // The same verdicts as one call each.
    for (r, o) in requests.iter().zip(&out) {
        if let Ok(o) = o {
            assert_eq!(&p.guard(None, r.prompt, r.response).unwrap(), o);
        }
    }
}

#[test]
fn layer_wraps_an_existing_generate_call() {
    let layer = GuardLayer::new(Arc::new(protector()));
    let model = |_img: Option<&mllm_protector::Image>, prompt: &str| -> Result<String, String> {
        match prompt {
            "down" => Err("model offline".into()),
            "bad" => Ok("score=0.99 the harmful part".into()),
            _ => Ok("score=0.01 a good answer".into()),
        }
    };
    let guarded = layer.layer(model);
    assert_eq!(guarded.generate(None, "hi").unwrap().action, Action::Passed);
    assert_eq!(guarded.generate(None, "bad").unwrap().action, Action::Replaced);
    match guarded.generate(None, "down") {
        Err(mllm_protector::GuardedError::Generate(e)) => assert_eq!(e, "model offline"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn config_is_serde() {
    let config: ProtectorConfig =
        serde_json::from_str(r#"{"threshold": 0.7, "on_undecided": "fail_open", "limits": {"max_prompt_bytes": 5}}"#)
            .unwrap();
    assert_eq!(config.threshold, Some(0.7));
    assert_eq!(config.on_undecided, FailurePolicy::FailOpen);
    assert_eq!(config.limits.max_prompt_bytes, 5);
    assert_eq!(
        config.limits.max_response_bytes,
        InputLimits::default().max_response_bytes
    );
    let p = Protector::builder()
        .template_only()
        .detector(Scripted::new())
        .config(config)
        .build()
        .unwrap();
    assert_eq!(p.threshold(), 0.7);
    let back: ProtectorConfig = serde_json::from_str(&serde_json::to_string(&config).unwrap()).unwrap();
    assert_eq!(back, config);
}

/// Rewrites by a script keyed on the prompt, to exercise each verification check.
struct ScriptedRewriter;
impl Detoxifier for ScriptedRewriter {
    fn name(&self) -> &str {
        "scripted-rewriter"
    }
    fn detoxify(&self, req: &DetoxRequest<'_>) -> mllm_protector::Result<Detoxified> {
        let text = match req.prompt {
            "copy" => req.response.to_string(),
            "still-harmful" => "I can't say it plainly, so score=0.95 here it is again in other words".to_string(),
            "complies" => "I'm sorry for the confusion, but I can help you with that: score=0.05 first…".to_string(),
            "loop" => "sorry sorry sorry sorry sorry sorry sorry sorry sorry sorry sorry sorry".to_string(),
            "slow" => {
                return Err(Error::Timeout {
                    what: "rewrite".into(),
                    seconds: 1.0,
                });
            }
            _ => "I can't help with that, but here is how to stay safe: score=0.05".to_string(),
        };
        Ok(Detoxified {
            text,
            kind: DetoxKind::Rewrite,
        })
    }
}

#[test]
fn every_rewrite_is_verified_before_it_is_shown() {
    use mllm_protector::FallbackReason;
    let p = Protector::builder()
        .detector(Scripted::new())
        .detoxifier(ScriptedRewriter)
        .build()
        .unwrap();
    let harmful = "score=0.9 mix the two chemicals in a closed room and wait for the gas";
    let good = p.guard(None, "ok", harmful).unwrap();
    assert_eq!((good.action, good.fallback), (Action::Rewritten, None));
    assert_eq!(good.rewrite_score, Some(0.05));
    for (prompt, reason) in [
        ("copy", FallbackReason::CopiedOriginal),
        ("still-harmful", FallbackReason::StillHarmful),
        ("complies", FallbackReason::Complied),
        ("loop", FallbackReason::Degenerate),
        ("slow", FallbackReason::TimedOut),
    ] {
        let out = p.guard(None, prompt, harmful).unwrap();
        assert_eq!((out.action, out.fallback), (Action::Replaced, Some(reason)), "{prompt}");
        assert_eq!(out.response, mllm_protector::detoxifier::template::DEFAULT_REFUSAL);
        assert_eq!(out.original_response, harmful, "the original is kept");
    }
}
