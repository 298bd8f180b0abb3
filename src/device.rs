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
