//! Evaluation support: the public labelled data sets (see `../shared/data/README.md`), leak-free splits, metrics,
//! and the attack suite of disguises ([`disguise`]).
//! Used by `examples/train_detector.rs`, `examples/evaluate.rs` and the quality tests.

pub mod data;
pub mod disguise;
pub mod metrics;

pub use data::{DATA_DIR_ENV, Example, Split, data_dir, split_of};
pub use metrics::{
    BinaryMetrics, SplitMix64, auroc, auroc_bootstrap_ci, best_f1, binary_metrics, expected_calibration_error,
    fit_platt, threshold_for_recall,
};
