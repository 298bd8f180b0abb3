//! One error type for the whole crate.
//!
//! Every failure that input can cause (a model file, a config, an image, a response) is a typed variant here, so a
//! caller can tell "my model folder is broken" from "this request was bad" without parsing strings.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `mllm-protector`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file a model needs is not where it was looked for.
    #[error("model file not found: {path} ({hint})")]
    MissingModelFile {
        /// Where the file was expected.
        path: PathBuf,
        /// What to do about it.
        hint: String,
    },

    /// A file's sha256 differs from the pinned one: the file is corrupt, truncated or not the model we expect.
    #[error("checksum mismatch for {path}: expected sha256 {expected}, found {actual}")]
    ChecksumMismatch {
        /// The file that was hashed.
        path: PathBuf,
        /// The pinned digest.
        expected: String,
        /// The digest of the file on disk.
        actual: String,
    },

    /// A configuration (a model's `config.json`, a head's metadata, a protector config) is malformed.
    #[error("bad config ({what}): {reason}")]
    BadConfig {
        /// Which configuration.
        what: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A weight file could not be read as the model it claims to be (corrupt safetensors, missing tensor, ...).
    #[error("bad weights in {what}: {reason}")]
    BadWeights {
        /// Which weights.
        what: String,
        /// What is wrong with them.
        reason: String,
    },

    /// The tokenizer failed to load or to encode a text.
    #[error("tokenizer error: {0}")]
    Tokenizer(String),

    /// A tensor does not have the shape the code needs (for example a head trained for another encoder).
    #[error("shape mismatch in {what}: expected {expected}, found {actual}")]
    ShapeMismatch {
        /// Which tensor.
        what: String,
        /// The shape the code needs.
        expected: String,
        /// The shape it got.
        actual: String,
    },

    /// The image given to `guard` could not be read or decoded.
    #[error("unreadable image: {reason}")]
    UnreadableImage {
        /// Why it could not be read.
        reason: String,
    },

    /// The response (or prompt) is not something the guard will score: empty, too large, not text.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// An input is over the configured size limit; it was not scored (a guard must not stall on huge input).
    #[error("{what} is {len} bytes, over the limit of {max} bytes")]
    InputTooLarge {
        /// Which input (response, prompt).
        what: String,
        /// Its size in bytes.
        len: usize,
        /// The configured limit.
        max: usize,
    },

    /// A bounded operation (a rewrite) ran past its time limit and was abandoned.
    #[error("{what} took longer than {seconds} s and was abandoned")]
    Timeout {
        /// What timed out.
        what: String,
        /// The limit.
        seconds: f64,
    },

    /// An [`ImageReader`](crate::image::ImageReader) could not read the text in an image (the OCR program is
    /// missing, failed or gave no usable output).
    #[error("image reader {reader}: {reason}")]
    ImageReader {
        /// Which reader.
        reader: String,
        /// What went wrong.
        reason: String,
    },

    /// A data set the examples or tests read is missing or malformed.
    #[error("data set: {0}")]
    Data(String),

    /// The device (CUDA, Metal) is not available or not compiled in.
    #[error("device: {0}")]
    Device(String),

    /// The Hugging Face hub could not provide a file.
    #[error("hub: {0}")]
    Hub(String),

    /// An I/O error on a named path.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// An error from candle while running a model.
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

impl Error {
    /// An I/O error on `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Turns a candle error raised while loading `what` into the most precise variant: a shape mismatch stays
    /// a shape mismatch, anything else is bad weights.
    pub(crate) fn from_load(what: &str, err: candle_core::Error) -> Self {
        match err {
            candle_core::Error::UnexpectedShape { msg, expected, got } => Error::ShapeMismatch {
                what: format!("{what}: {msg}"),
                expected: format!("{expected:?}"),
                actual: format!("{got:?}"),
            },
            candle_core::Error::ShapeMismatchBinaryOp { lhs, rhs, op } => Error::ShapeMismatch {
                what: format!("{what}: {op}"),
                expected: format!("{lhs:?}"),
                actual: format!("{rhs:?}"),
            },
            candle_core::Error::WithBacktrace { inner, .. } => Error::from_load(what, *inner),
            candle_core::Error::Context { inner, .. } => Error::from_load(what, *inner),
            candle_core::Error::WithPath { inner, .. } => Error::from_load(what, *inner),
            other => Error::BadWeights {
                what: what.to_string(),
                reason: other.to_string(),
            },
        }
    }
}
