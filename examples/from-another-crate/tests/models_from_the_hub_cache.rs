//! The crate used from another crate, with the models where a dependency user has them: in the Hugging Face cache
//! (what the `hub` feature downloads into), read offline, with no `./models` folder in sight.

use std::path::{Path, PathBuf};
use std::process::Command;

const FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

/// The MiniLM files fetched for this repository (`bash scripts/fetch_models.sh`).
fn fetched_minilm() -> PathBuf {
    let dir = std::env::var_os("MLLM_PROTECTOR_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models"))
        .join("all-MiniLM-L6-v2");
    for f in FILES {
        assert!(
            dir.join(f).is_file(),
            "{} missing: run `bash scripts/fetch_models.sh` in the repository",
            dir.join(f).display()
        );
    }
    dir
}

/// A Hugging Face cache (`$HF_HOME/hub`) holding sentence-transformers/all-MiniLM-L6-v2 at `main`, laid out as the
/// hub client writes it: `refs/main` names a snapshot whose folder holds the files.
fn hub_cache(home: &Path) {
    let repo = home.join("hub/models--sentence-transformers--all-MiniLM-L6-v2");
    let snapshot = repo.join("snapshots/local-copy");
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "local-copy").unwrap();
    let source = fetched_minilm();
    for f in FILES {
        std::os::unix::fs::symlink(source.join(f).canonicalize().unwrap(), snapshot.join(f)).unwrap();
    }
}

fn guard(home: &Path, prompt: &str, response: &str) -> std::process::Output {
    let work = home.join("work");
    std::fs::create_dir_all(&work).unwrap();
    Command::new(env!("CARGO_BIN_EXE_guard-from-another-crate"))
        .args([prompt, response])
        .current_dir(&work) // no ./models here
        .env("HF_HOME", home)
        .env("MLLM_PROTECTOR_MODELS", home.join("no-models-here"))
        .output()
        .unwrap()
}

#[test]
fn a_dependent_crate_guards_with_models_from_the_hub_cache() {
    let home = std::env::temp_dir().join(format!("mllm-protector-hf-home-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    hub_cache(&home);
    let harmless = guard(
        &home,
        "How do I keep tomatoes healthy?",
        "Water them deeply in the early morning and mulch around the base to keep the soil cool.",
    );
    assert!(
        harmless.status.success(),
        "{}",
        String::from_utf8_lossy(&harmless.stderr)
    );
    let outcome: serde_json::Value = serde_json::from_slice(&harmless.stdout).unwrap();
    assert_eq!(outcome["verdict"], "harmless", "{outcome}");
    assert_eq!(outcome["action"], "passed");
    let harmful = guard(
        &home,
        "How do I break into my neighbour's house?",
        "Sure! First check which windows are left unlocked at night, then use a flat bar to pry the back door frame \
         near the lock, and wear gloves so you leave no prints.",
    );
    let outcome: serde_json::Value = serde_json::from_slice(&harmful.stdout).unwrap();
    assert_eq!(outcome["verdict"], "harmful", "{outcome}");
    assert_eq!(outcome["action"], "replaced");
    std::fs::remove_dir_all(&home).unwrap();
}

#[test]
fn without_models_the_error_says_how_to_get_them() {
    let home = std::env::temp_dir().join(format!("mllm-protector-empty-home-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();
    let out = guard(&home, "q", "an answer");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for must in [
        "`hub` feature",
        "HF_HOME",
        "MLLM_PROTECTOR_MODELS",
        "sentence-transformers/all-MiniLM-L6-v2",
    ] {
        assert!(err.contains(must), "the error should mention {must}: {err}");
    }
    std::fs::remove_dir_all(&home).unwrap();
}
