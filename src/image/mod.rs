//! The image half of a multimodal request. The image is checked to be a real, bounded image (a decompression bomb
//! or a corrupt file is an error, not a crash) and described in the outcome; an [`ImageReader`] reads the text it
//! carries (Tesseract OCR with the `ocr` feature: [`TesseractReader`]), which the guard reads with the answer.

pub mod reader;
#[cfg(feature = "ocr")]
pub mod tesseract;

pub use reader::{ImageReader, ImageText};
#[cfg(feature = "ocr")]
pub use tesseract::{TesseractConfig, TesseractReader};

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Largest width or height accepted, in pixels.
pub const MAX_IMAGE_SIDE: u32 = 16_384;
/// Largest encoded image accepted, in bytes.
pub const MAX_IMAGE_BYTES: usize = 64 << 20;
/// Largest decoded image accepted, in bytes (guards against decompression bombs).
pub const MAX_DECODED_BYTES: u64 = 512 << 20;

/// An image given with the prompt: encoded bytes (PNG, JPEG, WebP, BMP, GIF), with where they came from.
#[derive(Debug, Clone)]
pub struct Image {
    bytes: Vec<u8>,
    origin: Option<PathBuf>,
    /// What a successful [`Image::inspect`] found: the guard checks an image and its reader reads it, and the pixels
    /// are decoded once for both.
    inspected: OnceLock<ImageInfo>,
}

impl PartialEq for Image {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes && self.origin == other.origin
    }
}

impl Eq for Image {}

/// What the guard learned of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Detected format, e.g. `Png`.
    pub format: String,
}

impl Image {
    /// Reads an image file. A missing or unreadable file is [`Error::UnreadableImage`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|e| Error::UnreadableImage {
            reason: format!("{}: {e}", path.display()),
        })?;
        if meta.len() > MAX_IMAGE_BYTES as u64 {
            return Err(Error::UnreadableImage {
                reason: format!(
                    "{}: {} bytes is over the {MAX_IMAGE_BYTES}-byte limit",
                    path.display(),
                    meta.len()
                ),
            });
        }
        let bytes = std::fs::read(path).map_err(|e| Error::UnreadableImage {
            reason: format!("{}: {e}", path.display()),
        })?;
        Ok(Image {
            bytes,
            origin: Some(path.to_path_buf()),
            inspected: OnceLock::new(),
        })
    }

    /// Wraps encoded image bytes (checked when the guard inspects them).
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Self {
        Image {
            bytes: bytes.into(),
            origin: None,
            inspected: OnceLock::new(),
        }
    }

    /// The encoded bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Decodes the image under size limits and reports its size and format (decoded once: later calls give the same
    /// answer without decoding again).
    ///
    /// ```
    /// use mllm_protector::{Error, Image};
    /// let err = Image::from_bytes(b"not an image".to_vec()).inspect().unwrap_err();
    /// assert!(matches!(err, Error::UnreadableImage { .. }));
    /// ```
    pub fn inspect(&self) -> Result<ImageInfo> {
        if let Some(info) = self.inspected.get() {
            return Ok(info.clone());
        }
        let info = self.decode_checked()?;
        Ok(self.inspected.get_or_init(|| info).clone())
    }

    fn decode_checked(&self) -> Result<ImageInfo> {
        let name = self
            .origin
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "image bytes".to_string());
        let fail = |reason: String| Error::UnreadableImage {
            reason: format!("{name}: {reason}"),
        };
        if self.bytes.is_empty() {
            return Err(fail("empty".into()));
        }
        if self.bytes.len() > MAX_IMAGE_BYTES {
            return Err(fail(format!(
                "{} bytes is over the {MAX_IMAGE_BYTES}-byte limit",
                self.bytes.len()
            )));
        }
        let mut reader = image::ImageReader::new(Cursor::new(&self.bytes))
            .with_guessed_format()
            .map_err(|e| fail(e.to_string()))?;
        let format = reader.format().ok_or_else(|| fail("not a known image format".into()))?;
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(MAX_IMAGE_SIDE);
        limits.max_image_height = Some(MAX_IMAGE_SIDE);
        limits.max_alloc = Some(MAX_DECODED_BYTES);
        reader.limits(limits);
        // Decoding the pixels (not only the header) is what proves the file is an image and not a truncated one.
        let decoded = reader.decode().map_err(|e| fail(e.to_string()))?;
        // Some decoders accept a header that declares no pixels at all (a GIF 257 wide and 0 high, found by fuzzing):
        // nothing there can be read or shown.
        if decoded.width() == 0 || decoded.height() == 0 {
            return Err(fail(format!(
                "{}x{} pixels: the image is empty",
                decoded.width(),
                decoded.height()
            )));
        }
        Ok(ImageInfo {
            width: decoded.width(),
            height: decoded.height(),
            format: format!("{format:?}"),
        })
    }
}
