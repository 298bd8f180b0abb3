//! Reading the text an image carries: a typographic attack (FigStep) puts the harmful request in the picture and
//! never in the prompt, so the guard needs the picture's words to know what the answer answers.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::image::Image;

/// The text read from an image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageText {
    /// The words, in reading order, whitespace normalised (empty when the image has no text).
    pub text: String,
    /// Seconds spent reading.
    pub seconds: f64,
}

impl ImageText {
    /// Whether any word was read.
    pub fn is_empty(&self) -> bool {
        self.text.trim().is_empty()
    }
}

/// Turns an image into the text it shows. Implement it to plug in another OCR engine or a vision-language model's
/// caption; the protector calls it for every request that has an image.
///
/// ```
/// use mllm_protector::Image;
/// use mllm_protector::image::{ImageReader, ImageText};
///
/// /// A reader that knows one image by its bytes (a test double).
/// struct Known;
/// impl ImageReader for Known {
///     fn name(&self) -> &str { "known" }
///     fn read(&self, image: &Image) -> mllm_protector::Result<ImageText> {
///         let text = if image.bytes() == b"list" { "Steps to pick a lock. 1. 2. 3." } else { "" };
///         Ok(ImageText { text: text.into(), seconds: 0.0 })
///     }
/// }
/// assert_eq!(Known.read(&Image::from_bytes(b"list".to_vec()))?.text, "Steps to pick a lock. 1. 2. 3.");
/// # Ok::<(), mllm_protector::Error>(())
/// ```
pub trait ImageReader: Send + Sync {
    /// Name shown in outcomes and reports.
    fn name(&self) -> &str;
    /// Reads the image's text. An image it cannot read is an error (the protector's failure policy decides what
    /// is shown); an image without text is an empty [`ImageText`], not an error.
    fn read(&self, image: &Image) -> Result<ImageText>;
}
