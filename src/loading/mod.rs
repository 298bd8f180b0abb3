//! Model loading, below both the detector and the detoxifier: where model files come from (a local folder, or the
//! Hugging Face hub and its cache), their sha256 pins and checks, and GGUF files with the tokenizer rebuilt from their
//! metadata.
//!
//! The choice is configuration ([`ModelSource`], serde-friendly), never code: the same detector loads from
//! `models/all-MiniLM-L6-v2` on an offline machine and from `sentence-transformers/all-MiniLM-L6-v2` where a hub is
//! reachable. Known files are pinned by sha256 ([`pins`]) and checked before they are trusted.

pub mod checksum;
pub mod gguf;
pub mod gguf_tokenizer;
pub mod pins;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Environment variable naming the folder that holds local models (default: `./models`).
pub const MODELS_DIR_ENV: &str = "MLLM_PROTECTOR_MODELS";

/// The folder local models are read from: `$MLLM_PROTECTOR_MODELS`, else `models` in the working directory
/// (what `scripts/fetch_models.sh` fills).
pub fn default_models_dir() -> PathBuf {
    std::env::var_os(MODELS_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("models"))
}

/// Where a model's files are read from.
///
/// ```
/// use mllm_protector::loading::ModelSource;
/// let local: ModelSource = serde_json::from_str(r#"{"dir": "models/all-MiniLM-L6-v2"}"#)?;
/// let hub: ModelSource = serde_json::from_str(
///     r#"{"hub": {"repo": "sentence-transformers/all-MiniLM-L6-v2", "revision": "main"}}"#,
/// )?;
/// assert_ne!(local, hub);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelSource {
    /// A local folder holding the model's files under their usual names.
    Dir(PathBuf),
    /// A model repository on the Hugging Face hub. With the `hub` cargo feature the files are downloaded (and
    /// cached); without it only the local hub cache (`HF_HOME`) is read, so nothing touches the network.
    Hub {
        /// Repository id, e.g. `sentence-transformers/all-MiniLM-L6-v2`.
        repo: String,
        /// Branch, tag or commit.
        #[serde(default = "default_revision")]
        revision: String,
    },
    /// A local folder when it holds the file, else the hub repository (its local cache; a download with the `hub`
    /// feature). The default for the detector's encoder: `./models` (or `$MLLM_PROTECTOR_MODELS`) in this
    /// repository, the standard Hugging Face cache for a crate that depends on this one.
    DirOrHub {
        /// The folder tried first.
        dir: PathBuf,
        /// Repository id tried next.
        repo: String,
        /// Branch, tag or commit.
        #[serde(default = "default_revision")]
        revision: String,
    },
}

fn default_revision() -> String {
    "main".to_string()
}

impl ModelSource {
    /// A hub repository at `main`.
    pub fn hub(repo: impl Into<String>) -> Self {
        ModelSource::Hub {
            repo: repo.into(),
            revision: default_revision(),
        }
    }

    /// A folder first, then a hub repository at `main` (see [`ModelSource::DirOrHub`]).
    pub fn dir_or_hub(dir: impl Into<PathBuf>, repo: impl Into<String>) -> Self {
        ModelSource::DirOrHub {
            dir: dir.into(),
            repo: repo.into(),
            revision: default_revision(),
        }
    }

    /// The local path of `filename` in this source, downloading it first where that is enabled.
    ///
    /// ```
    /// use mllm_protector::Error;
    /// use mllm_protector::loading::ModelSource;
    /// let source = ModelSource::dir_or_hub("/no/such/folder", "nobody/no-such-model");
    /// match source.resolve("config.json") {
    ///     Err(Error::MissingModelFile { hint, .. }) => assert!(hint.contains("MLLM_PROTECTOR_MODELS")),
    ///     other => panic!("{other:?}"),
    /// }
    /// ```
    pub fn resolve(&self, filename: &str) -> Result<PathBuf> {
        match self {
            ModelSource::Dir(dir) => {
                let path = dir.join(filename);
                if path.is_file() {
                    Ok(path)
                } else {
                    Err(Error::MissingModelFile {
                        path,
                        hint: "the folder does not hold it: point the source at a folder that has the model's files"
                            .to_string(),
                    })
                }
            }
            ModelSource::Hub { repo, revision } => resolve_hub(repo, revision, filename),
            ModelSource::DirOrHub { dir, repo, revision } => {
                let path = dir.join(filename);
                if path.is_file() {
                    return Ok(path);
                }
                resolve_hub(repo, revision, filename).map_err(|e| match e {
                    Error::MissingModelFile { .. } | Error::Hub(_) => Error::MissingModelFile {
                        path,
                        hint: format!("{}: {e}", models_hint(repo)),
                    },
                    other => other,
                })
            }
        }
    }

    /// Short human description, for logs and metadata.
    pub fn describe(&self) -> String {
        match self {
            ModelSource::Dir(dir) => dir.display().to_string(),
            ModelSource::Hub { repo, revision } => format!("hf://{repo}@{revision}"),
            ModelSource::DirOrHub { dir, repo, revision } => {
                format!("{}, else hf://{repo}@{revision}", dir.display())
            }
        }
    }
}

/// How a user gets a model that is missing, in their terms.
pub fn models_hint(repo: &str) -> String {
    format!(
        "get `{repo}` one of three ways: build with the `hub` feature (`mllm-protector = {{ version = \"…\", \
         features = [\"hub\"] }}`) and it is downloaded once into the Hugging Face cache (`HF_HOME`, default \
         ~/.cache/huggingface); or put it in that cache yourself (`huggingface-cli download {repo}`), which is read \
         offline without the feature; or set {MODELS_DIR_ENV} to a folder holding its files under `{}` (in this \
         crate's repository, `bash scripts/fetch_models.sh` fills ./models)",
        repo.rsplit('/').next().unwrap_or(repo)
    )
}

fn hub_repo(repo: &str, revision: &str) -> hf_hub::Repo {
    hf_hub::Repo::with_revision(repo.to_string(), hf_hub::RepoType::Model, revision.to_string())
}

#[cfg(feature = "hub")]
fn resolve_hub(repo: &str, revision: &str, filename: &str) -> Result<PathBuf> {
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(false)
        .build()
        .map_err(|e| Error::Hub(format!("cannot start the hub client: {e}")))?;
    api.repo(hub_repo(repo, revision))
        .get(filename)
        .map_err(|e| Error::Hub(format!("{repo}@{revision}/{filename}: {e}")))
}

#[cfg(not(feature = "hub"))]
fn resolve_hub(repo: &str, revision: &str, filename: &str) -> Result<PathBuf> {
    let cache = hf_hub::Cache::from_env();
    cache
        .repo(hub_repo(repo, revision))
        .get(filename)
        .ok_or_else(|| Error::MissingModelFile {
            path: cache.path().join(format!("{repo}@{revision}/{filename}")),
            hint: "not in the local hub cache; build with the `hub` feature to download it".to_string(),
        })
}

/// Reads a whole file, naming it in the error.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_in_dir_is_typed() {
        let src = ModelSource::Dir(PathBuf::from("/nonexistent/mllm-protector"));
        let err = src.resolve("config.json").unwrap_err();
        assert!(matches!(err, Error::MissingModelFile { .. }), "{err}");
    }

    #[cfg(not(feature = "hub"))]
    #[test]
    fn hub_without_feature_reads_cache_only() {
        // SAFETY of the test: a cache folder that cannot exist, so the lookup must miss without any network.
        let src = ModelSource::hub("nobody/no-such-model-for-mllm-protector");
        let err = src.resolve("config.json").unwrap_err();
        assert!(matches!(err, Error::MissingModelFile { .. }), "{err}");
    }
}
