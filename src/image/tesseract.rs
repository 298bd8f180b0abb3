//! [`TesseractReader`]: the `tesseract` OCR program (Debian: `tesseract-ocr tesseract-ocr-eng`) run as a child
//! process, bounded in time, input size and output size.
//!
//! A process rather than bindings to libtesseract: a crash or a hang in the OCR engine, on a hostile image, cannot
//! take the host down with it, it can be killed at its deadline, and the crate builds without a C toolchain or
//! libclang.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::image::Image;
use crate::image::reader::{ImageReader, ImageText};

/// Settings of the [`TesseractReader`] (serde; every field has a default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TesseractConfig {
    /// The program (default `tesseract`, looked up on `PATH`).
    pub program: PathBuf,
    /// Tesseract's language (default `eng`).
    pub language: String,
    /// Wall-time bound per image, in seconds; past it the process is killed and the read is a
    /// [`Error::Timeout`] (default 10).
    pub max_seconds: f64,
    /// Largest image read, in pixels (width × height; default 16 MP). A larger one is an
    /// [`Error::UnreadableImage`] before any OCR runs.
    pub max_pixels: u64,
    /// Most bytes of text kept (default 16 KiB); the rest is cut.
    pub max_text_bytes: usize,
}

impl Default for TesseractConfig {
    fn default() -> Self {
        TesseractConfig {
            program: PathBuf::from("tesseract"),
            language: "eng".into(),
            max_seconds: 10.0,
            max_pixels: 16_000_000,
            max_text_bytes: 16 << 10,
        }
    }
}

/// Reads an image's text with Tesseract.
///
/// ```no_run
/// use mllm_protector::Image;
/// use mllm_protector::image::{ImageReader, TesseractReader};
/// let reader = TesseractReader::new()?; // fails clearly when `tesseract` is not installed
/// let text = reader.read(&Image::open("question.png")?)?;
/// println!("{} ({:.2} s)", text.text, text.seconds);
/// # Ok::<(), mllm_protector::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct TesseractReader {
    config: TesseractConfig,
    name: String,
}

impl TesseractReader {
    /// The reader with default settings; checks that the program runs.
    pub fn new() -> Result<Self> {
        Self::with_config(TesseractConfig::default())
    }

    /// The reader with these settings; checks that the program runs and knows the language.
    pub fn with_config(config: TesseractConfig) -> Result<Self> {
        let missing = |reason: String| Error::ImageReader {
            reader: "tesseract".into(),
            reason: format!(
                "{reason}. Install it (Debian/Ubuntu: `apt-get install tesseract-ocr tesseract-ocr-eng`; \
                 `bash scripts/install_ocr.sh`), or build without the `ocr` feature"
            ),
        };
        let output = Command::new(&config.program)
            .arg("--list-langs")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| missing(format!("cannot run {}: {e}", config.program.display())))?;
        let listed = String::from_utf8_lossy(&output.stdout);
        if !listed.lines().any(|l| l.trim() == config.language) {
            return Err(missing(format!(
                "{} has no language data for {:?}",
                config.program.display(),
                config.language
            )));
        }
        let name = format!("tesseract ({})", config.language);
        Ok(TesseractReader { config, name })
    }

    /// The settings in use.
    pub fn config(&self) -> &TesseractConfig {
        &self.config
    }
}

impl ImageReader for TesseractReader {
    fn name(&self) -> &str {
        &self.name
    }

    fn read(&self, image: &Image) -> Result<ImageText> {
        let started = Instant::now();
        let info = image.inspect()?;
        let pixels = u64::from(info.width) * u64::from(info.height);
        if pixels > self.config.max_pixels {
            return Err(Error::UnreadableImage {
                reason: format!(
                    "{}x{} is {pixels} pixels, over the OCR limit of {}",
                    info.width, info.height, self.config.max_pixels
                ),
            });
        }
        let fail = |reason: String| Error::ImageReader {
            reader: self.name.clone(),
            reason,
        };
        let mut child = Command::new(&self.config.program)
            .args(["stdin", "stdout", "-l", &self.config.language, "--psm", "3"])
            // Tesseract's OpenMP threads spin and slow everything else on a small machine; one image needs one.
            .env("OMP_THREAD_LIMIT", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| fail(format!("cannot start {}: {e}", self.config.program.display())))?;
        let mut stdin = child.stdin.take().ok_or_else(|| fail("no stdin".into()))?;
        let bytes = image.bytes().to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&bytes));
        let mut stdout = child.stdout.take().ok_or_else(|| fail("no stdout".into()))?;
        let cap = self.config.max_text_bytes as u64;
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            let read = (&mut stdout).take(cap).read_to_end(&mut out);
            // Drain the rest so the process is never blocked on a full pipe.
            let _ = std::io::copy(&mut stdout, &mut std::io::sink());
            read.map(|_| out)
        });
        let deadline = Duration::from_secs_f64(self.config.max_seconds.max(0.0));
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if started.elapsed() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(Error::Timeout {
                        what: format!("{} on a {}x{} image", self.name, info.width, info.height),
                        seconds: self.config.max_seconds,
                    });
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => return Err(fail(format!("waiting for the process: {e}"))),
            }
        };
        // A write error after the process has read what it needs (a closed pipe) is not a failure of the read.
        let _ = writer.join();
        let out = reader
            .join()
            .map_err(|_| fail("the output reader panicked".into()))?
            .map_err(|e| fail(format!("reading its output: {e}")))?;
        if !status.success() {
            return Err(fail(format!("exited with {status}")));
        }
        Ok(ImageText {
            text: normalise_whitespace(&String::from_utf8_lossy(&out)),
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

/// Whitespace collapsed to single spaces, lines kept apart by one space, ends trimmed.
fn normalise_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
