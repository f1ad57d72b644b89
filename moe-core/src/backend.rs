//! Concrete backends behind cargo features, and how to pick a device by name.
//!
//! The modules of this crate are generic; this is the one place that names concrete backends,
//! so binaries and examples share one device-selection rule: parse a [`BackendKind`] and a
//! [`Precision`] from the command line, and hand a [`BackendTask`] to [`run_on`], which picks
//! the device, sets its float dtype and runs the task monomorphised for that backend.

use std::fmt;
use std::str::FromStr;

use burn::tensor::backend::Backend;
use burn::tensor::{set_default_dtypes, DType, Element, FloatDType, IntDType};

use crate::error::MoeError;

/// The CPU backend (`ndarray`, f32): the reference CPU backend.
#[cfg(feature = "ndarray")]
pub type Cpu = burn::backend::NdArray<f32>;

/// The `flex` CPU backend: pure Rust, `gemm` matmuls, and f16/bf16 as well as f32.
#[cfg(feature = "flex")]
pub type Flex = burn::backend::Flex<f32, i32>;

/// The WGPU backend (f32).
#[cfg(feature = "wgpu")]
pub type Wgpu = burn::backend::Wgpu<f32, i32>;

/// The CUDA backend (f32 storage by default; f16/bf16 via `set_default_dtypes`).
#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Cuda<f32, i32>;

/// A backend named on a command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// `Cpu`: burn-ndarray, f32 only.
    Ndarray,
    /// `Flex`: burn-flex on the CPU, f32/f16/bf16.
    Flex,
    /// `Wgpu`: any GPU wgpu can drive (or Lavapipe); f16 where the adapter has `SHADER_F16`.
    Wgpu,
    /// `Cuda`: NVIDIA GPUs; f32/f16/bf16.
    Cuda,
}

impl BackendKind {
    /// The fastest CPU backend compiled in: `flex` (`gemm` matmuls; faster than `ndarray` for
    /// prompts, decoding and the MoE layer, see docs/benchmarks-history.md), else `ndarray`.
    pub fn fastest_cpu() -> Self {
        if cfg!(feature = "flex") || !cfg!(feature = "ndarray") {
            Self::Flex
        } else {
            Self::Ndarray
        }
    }

    /// Whether this build was compiled with the backend's feature.
    pub fn is_compiled(self) -> bool {
        match self {
            Self::Ndarray => cfg!(feature = "ndarray"),
            Self::Flex => cfg!(feature = "flex"),
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
            Self::Flex => "flex",
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
            "flex" => Ok(Self::Flex),
            "wgpu" => Ok(Self::Wgpu),
            "cuda" => Ok(Self::Cuda),
            other => {
                Err(MoeError::Unsupported(format!("unknown backend `{other}` (expected ndarray, flex, wgpu or cuda)")))
            }
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

/// The float type a model computes in, named on a command line as `f32`, `f16` or `bf16`.
///
/// Half precision follows HF transformers: weights, activations and matmuls in the half type;
/// RMSNorm statistics, router and attention softmax, and losses in f32 (see the `cast`s in
/// [`crate::nn`] and [`crate::moe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// 32-bit float: every backend.
    #[default]
    F32,
    /// IEEE half: `flex`, `cuda`, and `wgpu` on adapters with `SHADER_F16`.
    F16,
    /// bfloat16: `flex` and `cuda`.
    Bf16,
}

impl Precision {
    /// Every precision, widest first.
    pub const ALL: [Precision; 3] = [Self::F32, Self::F16, Self::Bf16];

    /// Bytes per element.
    pub fn bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::Bf16 => 2,
        }
    }

    /// The Burn float dtype.
    pub fn float_dtype(self) -> FloatDType {
        match self {
            Self::F32 => FloatDType::F32,
            Self::F16 => FloatDType::F16,
            Self::Bf16 => FloatDType::BF16,
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
        })
    }
}

impl FromStr for Precision {
    type Err = MoeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" | "fp32" => Ok(Self::F32),
            "f16" | "float16" | "fp16" | "half" => Ok(Self::F16),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            other => Err(MoeError::Unsupported(format!("unknown dtype `{other}` (expected f32, f16 or bf16)"))),
        }
    }
}

/// Makes `precision` the default float dtype of `device`: every float tensor created on it
/// afterwards (weights included) has that dtype.
///
/// Must run before the first tensor is created on the device (Burn fixes a device's dtypes
/// then), so call it once, first; [`run_on`] does.
pub fn set_precision<B: Backend>(device: &B::Device, precision: Precision) -> Result<(), MoeError> {
    let dtype = precision.float_dtype();
    if !B::supports_dtype(device, DType::from(dtype)) {
        return Err(MoeError::Unsupported(format!(
            "{precision} is not supported by this backend on {device:?} \
             (f16/bf16 need --backend flex or cuda; wgpu has f16 only on adapters with SHADER_F16)"
        )));
    }
    if precision == Precision::F32 {
        // Every backend alias here is f32 already; leave the device's settings untouched.
        return Ok(());
    }
    set_default_dtypes::<B>(device, dtype, IntDType::from(<B::IntElem as Element>::dtype()))
        .map_err(|e| MoeError::Unsupported(format!("cannot switch the device to {precision}: {e}")))
}

/// Work to run on whichever backend the user picked at run time.
///
/// Implement it for a struct holding the arguments; [`run_on`] calls [`BackendTask::run`]
/// with the concrete backend type, so the task's body is written once, generically.
pub trait BackendTask {
    /// What the task returns.
    type Output;
    /// Runs the task on `device` of backend `B`.
    fn run<B: Backend>(self, device: B::Device) -> Self::Output;
}

/// Runs `task` on the backend `kind` in `precision`: the device is chosen as described in
/// [`BackendKind`] (`wgpu_device` for WGPU, device 0 otherwise) and its float dtype set with
/// [`set_precision`].
///
/// Errors if the backend is not compiled in or does not support the precision.
// Without any backend feature every kind is an error and the arguments go unused.
#[cfg_attr(
    not(any(feature = "ndarray", feature = "flex", feature = "wgpu", feature = "cuda")),
    allow(unused_variables, dead_code)
)]
pub fn run_on<T: BackendTask>(kind: BackendKind, precision: Precision, task: T) -> Result<T::Output, MoeError> {
    fn go<B: Backend, T: BackendTask>(device: B::Device, precision: Precision, task: T) -> Result<T::Output, MoeError> {
        set_precision::<B>(&device, precision)?;
        Ok(task.run::<B>(device))
    }
    match kind.ensure_compiled()? {
        #[cfg(feature = "ndarray")]
        BackendKind::Ndarray => go::<Cpu, T>(Default::default(), precision, task),
        #[cfg(feature = "flex")]
        BackendKind::Flex => go::<Flex, T>(Default::default(), precision, task),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => go::<Wgpu, T>(wgpu_device(), precision, task),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => go::<Cuda, T>(Default::default(), precision, task),
        #[allow(unreachable_patterns)]
        other => Err(MoeError::Unsupported(format!("backend `{other}` is not compiled into this build"))),
    }
}
