//! Which candle backend runs the models. CPU always works; CUDA and Metal need their cargo features.

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The compute device, as configuration.
///
/// ```
/// use mllm_protector::DeviceChoice;
/// let device = DeviceChoice::default().to_device()?;
/// assert!(device.is_cpu());
/// # Ok::<(), mllm_protector::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceChoice {
    /// The CPU (default; needs no feature).
    #[default]
    Cpu,
    /// A CUDA GPU by ordinal (cargo feature `cuda`).
    Cuda(usize),
    /// A Metal GPU by ordinal (cargo feature `metal`).
    Metal(usize),
}

impl DeviceChoice {
    /// The first GPU compiled in and present, else the CPU.
    pub fn best_available() -> Self {
        if candle_core::utils::cuda_is_available() {
            DeviceChoice::Cuda(0)
        } else if candle_core::utils::metal_is_available() {
            DeviceChoice::Metal(0)
        } else {
            DeviceChoice::Cpu
        }
    }

    /// Opens the device, with a typed error when its backend is missing.
    pub fn to_device(self) -> Result<Device> {
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Cuda(i) => Device::new_cuda(i)
                .map_err(|e| Error::Device(format!("CUDA device {i} (needs the `cuda` feature): {e}"))),
            DeviceChoice::Metal(i) => Device::new_metal(i)
                .map_err(|e| Error::Device(format!("Metal device {i} (needs the `metal` feature): {e}"))),
        }
    }
}

/// Makes candle's CPU backend stop re-counting the machine's cores on every operation; returns the thread count in
/// force.
///
/// candle (0.11) asks how many threads to use on every matmul and every parallel element-wise operation, and unless
/// `RAYON_NUM_THREADS` is set each answer reads `/proc` and sysfs files: on a 16-token answer that was about 5 of
/// 12 ms here (BENCHMARKS.md). When the variable is unset, this sets it to the count candle picks anyway
/// ([`candle_core::utils::get_num_threads`]), so nothing changes but the cost. A set value is left as it is.
///
/// # Safety
/// It changes the process environment: call it at the start of `main`, before any other thread runs (the rule of
/// [`std::env::set_var`]).
///
/// ```
/// // At the start of `main`:
/// let threads = unsafe { mllm_protector::pin_cpu_threads() };
/// assert!(threads >= 1);
/// ```
pub unsafe fn pin_cpu_threads() -> usize {
    const VAR: &str = "RAYON_NUM_THREADS";
    if let Some(set) = std::env::var(VAR)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
    {
        return set;
    }
    let threads = candle_core::utils::get_num_threads().max(1);
    // SAFETY: the caller guarantees no other thread reads or writes the environment now.
    unsafe { std::env::set_var(VAR, threads.to_string()) };
    threads
}
