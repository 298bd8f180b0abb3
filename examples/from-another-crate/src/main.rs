//! A user's binary: guards one answer with the default protector and prints the outcome as JSON.
//!
//!     guard-from-another-crate PROMPT RESPONSE
//!
//! The models are found as the README says: `$MLLM_PROTECTOR_MODELS`, else the Hugging Face cache (`HF_HOME`), which
//! the `hub` feature fills with a download.

use std::process::ExitCode;

use mllm_protector::Protector;

fn main() -> ExitCode {
    // SAFETY: the first statement of `main`, before any other thread exists (see `pin_cpu_threads`).
    unsafe { mllm_protector::pin_cpu_threads() };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [prompt, response] = args.as_slice() else {
        eprintln!("usage: guard-from-another-crate PROMPT RESPONSE");
        return ExitCode::from(2);
    };
    let outcome = Protector::new().and_then(|protector| protector.guard(None, prompt, response));
    match outcome {
        Ok(outcome) => match serde_json::to_string(&outcome) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
