//! Concrete backends behind cargo features, and how to pick a device by name.
//!
//! The modules of this crate are generic; this is the one place that names concrete backends,
//! so binaries and examples share one device-selection rule.

use std::fmt;
use std::str::FromStr;

use crate::error::MoeError;

/// The CPU backend (`ndarray`, f32).
#[cfg(feature = "ndarray")]
pub type Cpu = burn::backend::NdArray<f32>;

/// The WGPU backend (f32).
#[cfg(feature = "wgpu")]
pub type Wgpu = burn::backend::Wgpu<f32, i32>;

/// The CUDA backend (f32 storage by default; f16/bf16 via `set_default_dtypes`).
#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Cuda<f32, i32>;

/// A backend named on a command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Ndarray,
    Wgpu,
    Cuda,
}

impl BackendKind {
    /// Whether this build was compiled with the backend's feature.
    pub fn is_compiled(self) -> bool {
        match self {
            Self::Ndarray => cfg!(feature = "ndarray"),
            Self::Wgpu => cfg!(feature = "wgpu"),
            Self::Cuda => cfg!(feature = "cuda"),
        }
    }

    /// An error unless the backend is compiled in.
    pub fn ensure_compiled(self) -> Result<Self, MoeError> {
        if self.is_compiled() {
            Ok(self)
        } else {
            Err(MoeError::Unsupported(format!(
                "backend `{self}` is not compiled into this build; rebuild with `--features {self}`"
            )))
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ndarray => "ndarray",
            Self::Wgpu => "wgpu",
            Self::Cuda => "cuda",
        })
    }
}

impl FromStr for BackendKind {
    type Err = MoeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "ndarray" | "cpu" => Ok(Self::Ndarray),
            "wgpu" => Ok(Self::Wgpu),
            "cuda" => Ok(Self::Cuda),
            other => Err(MoeError::Unsupported(format!(
                "unknown backend `{other}` (expected ndarray, wgpu or cuda)"
            ))),
        }
    }
}

/// The WGPU device to use: a real GPU adapter when there is one, else the CPU (software) adapter.
///
/// burn 0.21's `WgpuDevice::DefaultDevice` fails on machines whose only Vulkan adapter is the
/// software one (Lavapipe, as on CI), so this asks wgpu which adapters exist first.
/// `MOE_WGPU_DEVICE=cpu|discrete|integrated|default` forces a choice.
#[cfg(feature = "wgpu")]
pub fn wgpu_device() -> burn::backend::wgpu::WgpuDevice {
    use burn::backend::wgpu::WgpuDevice;
    match std::env::var("MOE_WGPU_DEVICE").ok().as_deref() {
        Some("cpu") => return WgpuDevice::Cpu,
        Some("discrete") => return WgpuDevice::DiscreteGpu(0),
        Some("integrated") => return WgpuDevice::IntegratedGpu(0),
        Some("default") => return WgpuDevice::DefaultDevice,
        _ => {}
    }
    use wgpu::DeviceType;
    let instance = wgpu::Instance::default();
    let adapters = futures_lite::future::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    let has = |t| adapters.iter().any(|a| a.get_info().device_type == t);
    if has(DeviceType::DiscreteGpu) {
        WgpuDevice::DiscreteGpu(0)
    } else if has(DeviceType::IntegratedGpu) {
        WgpuDevice::IntegratedGpu(0)
    } else {
        WgpuDevice::Cpu
    }
}
