//! What the detector's head reads: the response, the response in its "Question/Answer" frame, or the response's
//! embedding beside the prompt's.

use std::borrow::Cow;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::detector::DetectionInput;
use crate::detector::encoder::{TextEncoder, WindowEmbeddings};
use crate::error::{Error, Result};

/// Which text the head reads, recorded in the head file (a head only works with the context it was trained on).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoringContext {
    /// The response alone (the paper's inference setting).
    #[default]
    Response,
    /// `"Question: {prompt}\nAnswer: {response}"` (the paper's training format), embedded as one text.
    PromptAndResponse,
    /// Each response window's embedding followed by the prompt's (the mean of its windows, L2-normalised; zeros
    /// when there is no prompt), so the head sees what was asked next to what was answered without the prompt
    /// crowding the response out of the encoder's window.
    ResponseBesidePrompt,
}

impl ScoringContext {
    /// The text the encoder reads for `input` (the response side, for [`ScoringContext::ResponseBesidePrompt`]).
    ///
    /// ```
    /// use mllm_protector::detector::{DetectionInput, ScoringContext};
    /// let input = DetectionInput::new("What is 2 + 2?", "4.");
    /// assert_eq!(ScoringContext::PromptAndResponse.text(&input), "Question: What is 2 + 2?\nAnswer: 4.");
    /// assert_eq!(ScoringContext::ResponseBesidePrompt.text(&input), "4.");
    /// ```
    pub fn text<'a>(&self, input: &DetectionInput<'a>) -> Cow<'a, str> {
        match self {
            ScoringContext::Response | ScoringContext::ResponseBesidePrompt => Cow::Borrowed(input.response),
            ScoringContext::PromptAndResponse => {
                Cow::Owned(format!("Question: {}\nAnswer: {}", input.prompt, input.response))
            }
        }
    }

    /// The width of the head's input over an encoder of width `encoder_dim`.
    ///
    /// ```
    /// use mllm_protector::detector::ScoringContext;
    /// assert_eq!(ScoringContext::Response.feature_dim(384), 384);
    /// assert_eq!(ScoringContext::ResponseBesidePrompt.feature_dim(384), 768);
    /// ```
    pub fn feature_dim(&self, encoder_dim: usize) -> usize {
        match self {
            ScoringContext::ResponseBesidePrompt => 2 * encoder_dim,
            _ => encoder_dim,
        }
    }

    /// Whether the head also reads the prompt's own embedding.
    pub fn embeds_prompt(&self) -> bool {
        matches!(self, ScoringContext::ResponseBesidePrompt)
    }
}

/// One row per text: the mean of its window embeddings, L2-normalised, or zeros for a text with no window.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use mllm_protector::detector::context::mean_of_windows;
/// let windows = Tensor::new(&[[1f32, 0.], [0., 1.], [0., 2.]], &Device::Cpu)?;
/// let pooled = mean_of_windows(&windows, &[0, 0, 2], 3)?.to_vec2::<f32>()?;
/// assert!((pooled[0][0] - 0.7071).abs() < 1e-3 && pooled[1] == [0., 0.] && pooled[2] == [0., 1.]);
/// # Ok::<(), mllm_protector::Error>(())
/// ```
pub fn mean_of_windows(windows: &Tensor, owner: &[usize], texts: usize) -> Result<Tensor> {
    let rows = windows.dim(0)?;
    if owner.len() != rows || owner.iter().any(|&o| o >= texts) {
        return Err(Error::ShapeMismatch {
            what: "window owners".into(),
            expected: format!("{rows} owners below {texts}"),
            actual: format!("{} owners, largest {:?}", owner.len(), owner.iter().max()),
        });
    }
    // An averaging matrix (texts, rows) keeps this one matmul on whichever device the windows live on.
    let mut counts = vec![0f32; texts];
    owner.iter().for_each(|&o| counts[o] += 1.0);
    let mut average = vec![0f32; texts * rows];
    for (row, &o) in owner.iter().enumerate() {
        average[o * rows + row] = 1.0 / counts[o];
    }
    let average = Tensor::from_vec(average, (texts, rows), windows.device())?.to_dtype(windows.dtype())?;
    let mean = average.matmul(windows)?;
    let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::INFINITY)?;
    Ok(mean.broadcast_div(&norm)?)
}

/// The prompts' embeddings, one row each (zeros for an empty prompt, so a caller without a prompt still gets a
/// score, from the response alone).
pub fn prompt_embeddings(encoder: &dyn TextEncoder, prompts: &[&str]) -> Result<Tensor> {
    let present: Vec<usize> = (0..prompts.len()).filter(|&i| !prompts[i].trim().is_empty()).collect();
    if present.is_empty() {
        return Ok(Tensor::zeros(
            (prompts.len(), encoder.dim()),
            DType::F32,
            &candle_core::Device::Cpu,
        )?);
    }
    let texts: Vec<&str> = present.iter().map(|&i| prompts[i]).collect();
    let windows = encoder.embed_windows(&texts)?;
    // Spread the pooled rows back to every prompt, the empty ones pointing at an appended zero row.
    let pooled = mean_of_windows(&windows.embeddings, &windows.owner, texts.len())?;
    let zero = Tensor::zeros((1, pooled.dim(1)?), pooled.dtype(), pooled.device())?;
    let mut slot = vec![present.len() as u32; prompts.len()];
    present.iter().enumerate().for_each(|(k, &i)| slot[i] = k as u32);
    let slot = Tensor::new(slot, pooled.device())?;
    Ok(Tensor::cat(&[pooled, zero], 0)?.index_select(&slot, 0)?)
}

/// The head's input for [`ScoringContext::ResponseBesidePrompt`]: each response window beside its text's prompt row.
pub fn beside_prompt(responses: &WindowEmbeddings, prompts: &Tensor) -> Result<Tensor> {
    let owner: Vec<u32> = responses.owner.iter().map(|&o| o as u32).collect();
    let rows = prompts.dim(0)?;
    if responses.owner.iter().any(|&o| o >= rows) {
        return Err(Error::ShapeMismatch {
            what: "prompt rows vs response owners".into(),
            expected: format!("more than {:?} prompt rows", responses.owner.iter().max()),
            actual: format!("{:?}", prompts.dims()),
        });
    }
    let prompts = prompts
        .to_device(responses.embeddings.device())?
        .to_dtype(responses.embeddings.dtype())?;
    let spread = prompts.index_select(&Tensor::new(owner, responses.embeddings.device())?, 0)?;
    Ok(Tensor::cat(&[&responses.embeddings, &spread], 1)?)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use super::*;
    use crate::detector::head::{DeltaStorage, EncoderIdentity, EncoderKind, HeadMetadata};
    use crate::detector::{ClassifierHead, EmbeddingDetector, HarmDetector, Windowing};

    /// Counts of a few letters, one window per 8 words: enough to tell texts apart and to have several windows.
    struct LetterCounts;

    impl TextEncoder for LetterCounts {
        fn dim(&self) -> usize {
            3
        }
        fn weights_sha256(&self) -> &str {
            "letters"
        }
        fn embed_windows(&self, texts: &[&str]) -> Result<WindowEmbeddings> {
            let (mut rows, mut owner) = (Vec::new(), Vec::new());
            for (i, t) in texts.iter().enumerate() {
                let words: Vec<&str> = t.split_whitespace().collect();
                for chunk in words.chunks(8) {
                    let w = chunk.join(" ");
                    let v: Vec<f32> = ['a', 'b', 'c']
                        .iter()
                        .map(|&c| w.matches(c).count() as f32 + 0.5)
                        .collect();
                    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                    rows.extend(v.iter().map(|x| x / n));
                    owner.push(i);
                }
            }
            let embeddings = Tensor::from_vec(rows, (owner.len(), 3), &candle_core::Device::Cpu)?;
            Ok(WindowEmbeddings::new(embeddings, owner))
        }
    }

    #[test]
    fn empty_prompts_get_zero_rows_and_others_unit_rows_in_order() {
        let rows = prompt_embeddings(&LetterCounts, &["aaa", "", "  ", "bbb c"]).unwrap();
        let rows = rows.to_vec2::<f32>().unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[1], vec![0.0; 3]);
        assert_eq!(rows[2], vec![0.0; 3]);
        for r in [&rows[0], &rows[3]] {
            assert!((r.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-5);
        }
        assert!(rows[0][0] > rows[0][1] && rows[3][1] > rows[3][0]);
        let none = prompt_embeddings(&LetterCounts, &["", ""]).unwrap();
        assert_eq!(none.dims(), &[2, 3]);
    }

    #[test]
    fn each_window_sits_beside_its_own_prompt() {
        let long = "a b c ".repeat(10);
        let responses = LetterCounts.embed_windows(&["ccc", &long]).unwrap();
        let prompts = prompt_embeddings(&LetterCounts, &["aaa", "bbb"]).unwrap();
        let x = beside_prompt(&responses, &prompts).unwrap();
        assert_eq!(x.dims(), &[responses.owner.len(), 6]);
        let x = x.to_vec2::<f32>().unwrap();
        let p = prompts.to_vec2::<f32>().unwrap();
        for (row, &o) in responses.owner.iter().enumerate() {
            assert_eq!(x[row][3..], p[o][..]);
        }
        let too_few = prompts.narrow(0, 0, 1).unwrap();
        assert!(matches!(
            beside_prompt(&responses, &too_few),
            Err(Error::ShapeMismatch { .. })
        ));
    }

    fn head(context: ScoringContext, weights: Vec<f32>) -> Result<ClassifierHead> {
        let width = weights.len();
        let metadata = HeadMetadata {
            format_version: crate::detector::head::FORMAT_VERSION,
            layer_sizes: vec![width, 1],
            threshold: 0.5,
            temperature: 1.0,
            logit_bias: 0.0,
            encoder: EncoderIdentity {
                name: "letters".into(),
                kind: EncoderKind::SentenceTransformer,
                weights_sha256: "letters".into(),
                dim: 3,
                windowing: Windowing::default(),
                delta_sha256: None,
                delta_storage: DeltaStorage::Float,
            },
            context,
            categories: Vec::new(),
            training: serde_json::Value::Null,
            metrics: serde_json::Value::Null,
        };
        let device = candle_core::Device::Cpu;
        let tensors = HashMap::from([
            (
                "layers.0.weight".to_string(),
                Tensor::from_vec(weights, (1, width), &device)?,
            ),
            ("layers.0.bias".to_string(), Tensor::zeros(1, DType::F32, &device)?),
        ]);
        ClassifierHead::from_tensors(tensors, metadata, "test head")
    }

    #[test]
    fn a_detector_beside_the_prompt_reads_the_prompt_and_checks_its_width() {
        // All weight on the prompt's "a" count: the same response scores by what was asked.
        let h = head(ScoringContext::ResponseBesidePrompt, vec![0., 0., 0., 8., 0., -4.]).unwrap();
        let d = EmbeddingDetector::new(Arc::new(LetterCounts), h, "beside").unwrap();
        let scores = d
            .score_batch(&[
                DetectionInput::new("aaaa", "bb"),
                DetectionInput::new("cccc", "bb"),
                DetectionInput::response("bb"),
            ])
            .unwrap();
        assert!(scores[0].probability > 0.9, "{scores:?}");
        assert!(scores[1].probability < 0.1, "{scores:?}");
        assert!(
            (scores[2].probability - 0.5).abs() < 1e-6,
            "no prompt: zeros, logit 0: {scores:?}"
        );
        // A head as wide as the encoder cannot be declared to read the prompt too.
        let err = head(ScoringContext::ResponseBesidePrompt, vec![1., 0., 0.]).unwrap_err();
        assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
        let err = head(ScoringContext::Response, vec![0.; 6]).unwrap_err();
        assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    }
}
