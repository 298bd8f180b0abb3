//! Replays answers token by token through the [`StreamGuard`](mllm_protector::StreamGuard) and compares it with the
//! post-hoc guard on the same answers, in the same run.
//!
//!     cargo run --release --example stream_eval -- --json target/stream-eval.json
//!
//! The answers are the JailbreakBench test split (harmful and harmless, by the head's split seed; `--set jbb-val`
//! for validation), cut into tokens by SmolLM2's tokenizer (the crate's local chat model), each token pushed as a
//! generator would push it. For each hold-back (the default, one window, first) it reports:
//! - `agreement`: the share of final verdicts equal to the post-hoc verdict, and how many answers the post-hoc
//!   guard flags were released whole by the stream (must be 0);
//! - for the answers the post-hoc guard flags: the share of their tokens generated before the stop (median: what
//!   stopping saves), and the tokens shown before the stop;
//! - the guard's compute per released token on the harmless answers, the stream's total guard compute against the
//!   post-hoc guard's (time and windows embedded), and how many tokens the hold-back delays a harmless answer.
//!
//! Times are wall time on this machine, post-hoc and stream alternating answer by answer.

mod common;

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use mllm_protector::detector::{DetectionInput, HarmDetector, WindowCache};
use mllm_protector::eval::data::{self, Example, Split, in_split};
use mllm_protector::loading::gguf_tokenizer::new_text;
use mllm_protector::{DeviceChoice, Flow, HoldBack, LlmDetoxifier, Protector, StreamConfig, Verdict};
use serde::Serialize;

#[derive(Parser, Debug)]
struct Args {
    /// jbb-test (default), jbb-val, or gptfuzz-train (GPTFuzz's answers to the questions of its training split:
    /// jailbreak answers that open like a compliant answer, for choosing the stop rule on more than JBB's
    /// validation split).
    #[arg(long, default_value = "jbb-test")]
    set: String,
    /// At most this many answers (0: all), spread evenly over the set.
    #[arg(long, default_value_t = 0)]
    limit: usize,
    /// Print each answer whose streamed verdict differs from the post-hoc one.
    #[arg(long)]
    show_disagreements: bool,
    /// Stop thresholds to compare (repeatable; default: the crate's default only). 0 stops at the guard's threshold.
    #[arg(long)]
    stop_threshold: Vec<f32>,
    /// Confirmation distances to compare, in words (repeatable; default: the crate's default only). 0 stops at once.
    #[arg(long)]
    confirm_words: Vec<usize>,
    /// Only the default hold-back.
    #[arg(long)]
    default_only: bool,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
struct Row {
    hold_back: String,
    stop_threshold: Option<f32>,
    confirm_words: usize,
    answers: usize,
    flagged_post_hoc: usize,
    agreement: f64,
    disagreements: usize,
    flagged_released_whole: usize,
    stopped_early: usize,
    median_generated_share_at_stop: f64,
    median_tokens_shown_before_stop: f64,
    max_tokens_shown_before_stop: usize,
    flagged_with_tokens_shown: usize,
    harmless_ms_per_released_token: f64,
    harmless_mean_delay_tokens: f64,
    compute_ratio_time: f64,
    compute_ratio_windows: f64,
    checks_per_answer: f64,
}

/// One answer's tokens as a generator hands them over: each piece is the text one token adds (a token ending
/// inside a multi-byte character waits for the next).
fn pieces(tokenizer: &tokenizers::Tokenizer, text: &str) -> anyhow::Result<Vec<String>> {
    let ids = tokenizer
        .encode(text, false)
        .map_err(anyhow::Error::msg)?
        .get_ids()
        .to_vec();
    let mut out = Vec::with_capacity(ids.len());
    let mut emitted = 0;
    for end in 1..=ids.len() {
        let decoded = tokenizer.decode(&ids[..end], false).map_err(anyhow::Error::msg)?;
        if let Some(piece) = new_text(&decoded, &mut emitted) {
            out.push(piece.to_string());
        }
    }
    Ok(out)
}

struct PostHoc {
    verdict: Verdict,
    seconds: f64,
    windows: usize,
}

fn main() -> anyhow::Result<()> {
    // SAFETY: the first statement of `main`, before any other thread exists.
    unsafe { mllm_protector::pin_cpu_threads() };
    let args = Args::parse();
    let protector = Protector::builder().device(DeviceChoice::Cpu).build()?;
    let seed = common::head_split_seed()?;
    let dir = data::data_dir()?;
    let answers: Vec<Example> = match args.set.as_str() {
        "jbb-test" => in_split(data::load_jbb(&dir)?, Split::Test, seed),
        "jbb-val" => in_split(data::load_jbb(&dir)?, Split::Validation, seed),
        "gptfuzz-train" => in_split(data::load_gptfuzz(&dir)?, Split::Train, seed),
        other => anyhow::bail!("unknown set {other:?} (jbb-test, jbb-val, gptfuzz-train)"),
    };
    let answers = common::evenly(answers, args.limit);
    let llm = LlmDetoxifier::load_default()?;
    let tokenized: Vec<Vec<String>> = answers
        .iter()
        .map(|e| pieces(llm.tokenizer(), &e.response))
        .collect::<anyhow::Result<_>>()?;
    drop(llm);
    eprintln!(
        "{} answers ({} labelled harmful), {} tokens",
        answers.len(),
        answers.iter().filter(|e| e.harmful).count(),
        tokenized.iter().map(Vec::len).sum::<usize>()
    );

    // Warm up the allocator and the model before timing.
    protector.guard(None, "warm-up", "A warm-up answer about baking bread at home.")?;

    let hold_backs = [
        ("checked(192), default", HoldBack::default()),
        ("checked(64)", HoldBack::Checked(64)),
        ("checked(0)", HoldBack::Checked(0)),
        ("unchecked(16)", HoldBack::Unchecked(16)),
    ];
    let stops: Vec<Option<f32>> = if args.stop_threshold.is_empty() {
        vec![StreamConfig::default().stop_threshold]
    } else {
        args.stop_threshold.iter().map(|&t| (t > 0.0).then_some(t)).collect()
    };
    let confirms: Vec<usize> = if args.confirm_words.is_empty() {
        vec![StreamConfig::default().confirm_words]
    } else {
        args.confirm_words.clone()
    };
    let mut runs = Vec::new();
    for &stop in &stops {
        for &confirm_words in &confirms {
            for &(label, hold_back) in hold_backs.iter().take(if args.default_only { 1 } else { 4 }) {
                runs.push((stop, confirm_words, label, hold_back));
            }
        }
    }
    let mut rows = Vec::new();
    for (stop_threshold, confirm_words, label, hold_back) in runs {
        let config = StreamConfig {
            hold_back,
            stop_threshold,
            confirm_words,
            ..StreamConfig::default()
        };
        let mut post_hoc: Vec<PostHoc> = Vec::with_capacity(answers.len());
        let (mut t_post, mut t_stream) = (0.0, 0.0);
        let (mut w_post, mut w_stream) = (0usize, 0usize);
        let (mut agree, mut released_whole, mut stopped_early, mut checks) = (0, 0, 0, 0);
        let (mut gen_share, mut shown_tokens) = (Vec::new(), Vec::new());
        let (mut harmless_seconds, mut harmless_tokens, mut delay) = (0.0, 0usize, Vec::new());
        for (example, tokens) in answers.iter().zip(&tokenized) {
            // Post-hoc: the whole answer at once. Its windows are counted through a fresh cache.
            let started = Instant::now();
            let outcome = protector.guard(None, &example.prompt, &example.response)?;
            let seconds = started.elapsed().as_secs_f64();
            let mut cache = WindowCache::default();
            protector
                .detector()
                .score_batch_cached(&[DetectionInput::new(&example.prompt, &example.response)], &mut cache)?;
            let p = PostHoc {
                verdict: outcome.verdict,
                seconds,
                windows: cache.misses(),
            };

            // Streamed: token by token, as released text would reach the user.
            let started = Instant::now();
            let mut stream = protector.stream_with(None, &example.prompt, config)?;
            let ends: Vec<usize> = tokens
                .iter()
                .scan(0, |at, t| {
                    *at += t.len();
                    Some(*at)
                })
                .collect();
            let (mut released_bytes, mut released_tokens) = (0usize, 0usize);
            let mut delays = Vec::new();
            for (i, token) in tokens.iter().enumerate() {
                let step = stream.push(token)?;
                // A token counts as shown once all of its text is.
                released_bytes += step.release.len();
                while released_tokens < tokens.len() && ends[released_tokens] <= released_bytes {
                    delays.push((i - released_tokens) as f64);
                    released_tokens += 1;
                }
                if step.flow == Flow::Stop {
                    break;
                }
            }
            let end = stream.finish()?;
            let s_seconds = started.elapsed().as_secs_f64();

            t_post += p.seconds;
            t_stream += s_seconds;
            w_post += p.windows;
            w_stream += end.stats.windows_embedded;
            checks += end.stats.checks;
            if end.outcome.verdict == p.verdict {
                agree += 1;
            } else if args.show_disagreements {
                eprintln!(
                    "disagree: post-hoc {:?} {:?}, stream {:?} {:?} at token {:?} of {}: {:?}",
                    p.verdict,
                    outcome.harm_score,
                    end.outcome.verdict,
                    end.outcome.harm_score,
                    end.stats.pieces_at_stop,
                    tokens.len(),
                    example.response.chars().take(300).collect::<String>()
                );
            }
            if end.stopped {
                stopped_early += 1;
            }
            if p.verdict != Verdict::Harmless {
                if end.shown == tokens.concat() {
                    released_whole += 1;
                }
                let at_stop = end.stats.pieces_at_stop.unwrap_or(tokens.len());
                gen_share.push(at_stop as f64 / tokens.len().max(1) as f64);
                shown_tokens.push(released_tokens as f64);
            } else if !end.outcome.was_changed() {
                // The tail released at the end waited for the whole answer.
                let last = tokens.len().saturating_sub(1);
                delays.extend((released_tokens..tokens.len()).map(|t| (last - t) as f64));
                harmless_seconds += s_seconds;
                harmless_tokens += tokens.len();
                delay.extend(delays);
            }
            post_hoc.push(p);
        }
        let flagged = post_hoc.iter().filter(|p| p.verdict != Verdict::Harmless).count();
        let row = Row {
            hold_back: label.into(),
            stop_threshold,
            confirm_words,
            answers: answers.len(),
            flagged_post_hoc: flagged,
            agreement: agree as f64 / answers.len().max(1) as f64,
            disagreements: answers.len() - agree,
            flagged_released_whole: released_whole,
            stopped_early,
            median_generated_share_at_stop: common::median(gen_share),
            median_tokens_shown_before_stop: common::median(shown_tokens.clone()),
            max_tokens_shown_before_stop: shown_tokens.iter().copied().fold(0.0, f64::max) as usize,
            flagged_with_tokens_shown: shown_tokens.iter().filter(|&&t| t > 0.0).count(),
            harmless_ms_per_released_token: 1000.0 * harmless_seconds / harmless_tokens.max(1) as f64,
            harmless_mean_delay_tokens: delay.iter().sum::<f64>() / delay.len().max(1) as f64,
            compute_ratio_time: t_stream / t_post.max(1e-9),
            compute_ratio_windows: w_stream as f64 / w_post.max(1) as f64,
            checks_per_answer: checks as f64 / answers.len().max(1) as f64,
        };
        eprintln!("{}", serde_json::to_string(&row)?);
        rows.push(row);
    }

    println!(
        "\n| hold-back | stop threshold | confirm (words) | agreement | flagged released whole | stopped early | generated at stop (median) | tokens shown before stop (median / max / answers) | guard ms per released token (harmless) | mean delay (tokens) | compute vs post-hoc (time / windows) | checks per answer |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.4} ({} of {}) | {} of {} | {} | {:.2} | {:.0} / {} / {} | {:.2} | {:.1} | {:.2}x / {:.2}x | {:.1} |",
            r.hold_back,
            r.stop_threshold.map_or("guard's".to_string(), |t| format!("{t}")),
            r.confirm_words,
            r.agreement,
            r.disagreements,
            r.answers,
            r.flagged_released_whole,
            r.flagged_post_hoc,
            r.stopped_early,
            r.median_generated_share_at_stop,
            r.median_tokens_shown_before_stop,
            r.max_tokens_shown_before_stop,
            r.flagged_with_tokens_shown,
            r.harmless_ms_per_released_token,
            r.harmless_mean_delay_tokens,
            r.compute_ratio_time,
            r.compute_ratio_windows,
            r.checks_per_answer,
        );
    }
    if let Some(path) = &args.json {
        let default = &rows[0];
        let json = serde_json::json!({
            "set": args.set,
            "agreement": default.agreement,
            "flagged_released_whole": default.flagged_released_whole,
            "median_generated_share_at_stop": default.median_generated_share_at_stop,
            "harmful_tokens_shown_default": default.median_tokens_shown_before_stop,
            "max_harmful_tokens_shown_default": default.max_tokens_shown_before_stop,
            "harmless_ms_per_released_token": default.harmless_ms_per_released_token,
            "compute_ratio": default.compute_ratio_time,
            "rows": rows,
        });
        common::write_json(path, &json)?;
    }
    Ok(())
}
