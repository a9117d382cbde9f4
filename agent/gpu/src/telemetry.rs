//! The telemetry contract: one trait, what a sample holds, and the errors a backend may return.
use std::fmt;

/// A source of GPU samples: NVML on a GPU node, a script in tests.
///
/// `sample` is called from one thread at the sampler's interval; it must not block for longer than a few
/// driver calls. Backends read only the fields their [`SampleFields`] ask for, because some NVML calls take
/// a driver-wide lock.
pub trait Telemetry: Send {
    /// One reading of every GPU this backend watches.
    fn sample(&mut self) -> Result<NodeSample, TelemetryError>;

    /// A short, stable name for logs and status (`"nvml"`, `"fake"`).
    fn backend(&self) -> &'static str;
}

impl<T: Telemetry + ?Sized> Telemetry for Box<T> {
    fn sample(&mut self) -> Result<NodeSample, TelemetryError> {
        (**self).sample()
    }
    fn backend(&self) -> &'static str {
        (**self).backend()
    }
}

/// Which optional fields a backend reads. Utilisation is always read: the policy needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleFields {
    /// Framebuffer memory used/total (one cheap call per GPU).
    pub memory: bool,
    /// GPU die temperature.
    pub temperature: bool,
    /// Board power draw.
    pub power: bool,
    /// Per-process SM utilisation (`nvmlDeviceGetProcessUtilization`); off by default because it walks the
    /// driver's sample buffer and is the most expensive call here.
    pub processes: bool,
}

impl SampleFields {
    /// Only what the policy needs.
    pub const UTILIZATION_ONLY: Self = Self { memory: false, temperature: false, power: false, processes: false };
    /// Everything a status page shows.
    pub const ALL: Self = Self { memory: true, temperature: true, power: true, processes: true };
}

impl Default for SampleFields {
    /// Utilisation plus memory: memory is one cheap call and is what operators look at first on a GPU node.
    fn default() -> Self {
        Self { memory: true, ..Self::UTILIZATION_ONLY }
    }
}

/// Where a GPU's utilisation figure came from. Part of every sample so status can say what the policy used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UtilizationSource {
    /// `nvmlDeviceGetUtilizationRates().gpu`: percent of time a kernel was running.
    Device,
    /// GPM SM utilisation between the previous and this sample (Hopper+; used when the GPU is in MIG mode,
    /// where the device utilisation call is not supported).
    GpmSmActivity,
    /// Framebuffer memory used / total, in percent. Only when explicitly enabled for MIG GPUs without GPM:
    /// it measures how full the GPU is, not how busy.
    MemoryUsedProxy,
    /// No utilisation could be read (MIG without GPM, the first GPM tick, or a failing call).
    Unavailable,
    /// Written by a script ([`crate::FakeTelemetry`]).
    Scripted,
}

impl UtilizationSource {
    /// A stable label value for metrics and status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Device => "device",
            Self::GpmSmActivity => "gpm_sm_activity",
            Self::MemoryUsedProxy => "memory_used_proxy",
            Self::Unavailable => "unavailable",
            Self::Scripted => "scripted",
        }
    }
}

impl fmt::Display for UtilizationSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One GPU's reading. Fields the backend was not asked for, or could not read, are `None`.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuSample {
    /// NVML device index.
    pub index: u32,
    /// Busy percent in `0.0..=100.0`; `None` exactly when `utilization_source` is `Unavailable`.
    pub utilization_percent: Option<f64>,
    pub utilization_source: UtilizationSource,
    /// True when the GPU is partitioned with MIG.
    pub mig_enabled: bool,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    pub temperature_celsius: Option<u32>,
    pub power_milliwatts: Option<u32>,
    /// Processes that used the GPU since the previous sample (empty unless `SampleFields::processes`).
    pub processes: Vec<ProcessSample>,
}

impl GpuSample {
    /// A sample that carries only a utilisation figure.
    pub fn utilization(index: u32, percent: Option<f64>, source: UtilizationSource) -> Self {
        let source = if percent.is_some() { source } else { UtilizationSource::Unavailable };
        Self {
            index,
            utilization_percent: percent.map(|p| p.clamp(0.0, 100.0)),
            utilization_source: source,
            mig_enabled: false,
            memory_used_bytes: None,
            memory_total_bytes: None,
            temperature_celsius: None,
            power_milliwatts: None,
            processes: Vec::new(),
        }
    }
}

/// Per-process use of one GPU, as the driver reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessSample {
    pub pid: u32,
    /// SM utilisation percent attributed to this process over the driver's sample period.
    pub sm_percent: u32,
    /// Framebuffer bandwidth utilisation percent.
    pub memory_percent: u32,
}

/// How the node's utilisation is formed from its GPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NodeAggregate {
    /// The hottest GPU. The default: the agent cannot tell which GPU a request will land on, and a request
    /// that lands on a saturated GPU waits however idle the others are, so the node is as hot as its
    /// hottest GPU. Restrict `NvmlConfig::devices` to the GPUs the agent uses so that other tenants' GPUs
    /// do not count.
    #[default]
    Max,
    /// The mean over GPUs: right when the worker spreads every request over all GPUs evenly.
    Mean,
}

/// One reading of the node.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeSample {
    pub gpus: Vec<GpuSample>,
}

impl NodeSample {
    /// The node's utilisation over the GPUs that reported one; `None` when none did.
    pub fn utilization(&self, aggregate: NodeAggregate) -> Option<f64> {
        let mut values = self.gpus.iter().filter_map(|g| g.utilization_percent);
        let first = values.next()?;
        Some(match aggregate {
            NodeAggregate::Max => values.fold(first, f64::max),
            NodeAggregate::Mean => {
                let (sum, count) = values.fold((first, 1u32), |(s, c), v| (s + v, c + 1));
                sum / f64::from(count)
            }
        })
    }

    /// The source that the node figure rests on: the single source when all reporting GPUs agree,
    /// otherwise the least direct one (so status never overstates how good the figure is).
    pub fn utilization_source(&self) -> UtilizationSource {
        fn rank(s: UtilizationSource) -> u8 {
            match s {
                UtilizationSource::Scripted => 0,
                UtilizationSource::Device => 1,
                UtilizationSource::GpmSmActivity => 2,
                UtilizationSource::MemoryUsedProxy => 3,
                UtilizationSource::Unavailable => 4,
            }
        }
        self.gpus
            .iter()
            .filter(|g| g.utilization_percent.is_some())
            .map(|g| g.utilization_source)
            .max_by_key(|s| rank(*s))
            .unwrap_or(UtilizationSource::Unavailable)
    }
}

/// Why telemetry could not start or could not sample. Every start-up variant means "run in CPU mode".
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// libnvidia-ml could not be loaded: no driver installed on this node (or not mounted into the pod).
    #[error("no NVIDIA driver found (libnvidia-ml.so.1): running in CPU mode")]
    NoDriver {
        #[source]
        source: nvml_wrapper::error::NvmlError,
    },
    #[error("NVIDIA driver library found but the kernel driver is not loaded: running in CPU mode")]
    DriverNotLoaded {
        #[source]
        source: nvml_wrapper::error::NvmlError,
    },
    #[error("NVML has no permission to talk to the NVIDIA driver (check the device mounts): running in CPU mode")]
    NoPermission {
        #[source]
        source: nvml_wrapper::error::NvmlError,
    },
    #[error("NVML found no GPU to watch on this node: running in CPU mode")]
    NoDevices,
    #[error("configured GPU index {index} does not exist (the node has {count} GPUs): fix the device list")]
    UnknownDevice { index: u32, count: u32 },
    #[error("NVML failed to start: running in CPU mode")]
    Init {
        #[source]
        source: nvml_wrapper::error::NvmlError,
    },
    #[error("GPU {index} has fallen off the bus or is otherwise inaccessible")]
    GpuLost { index: u32 },
    #[error("reading GPU {index} failed")]
    Device {
        index: u32,
        #[source]
        source: nvml_wrapper::error::NvmlError,
    },
    /// A scripted telemetry was told to fail at this step (tests of the stale-data path).
    #[error("scripted telemetry failure at step {step}")]
    Scripted { step: u64 },
}

impl TelemetryError {
    /// A fixed label for metrics (never the message: that could carry unbounded text).
    pub fn category(&self) -> &'static str {
        match self {
            Self::NoDriver { .. } => "no_driver",
            Self::DriverNotLoaded { .. } => "driver_not_loaded",
            Self::NoPermission { .. } => "no_permission",
            Self::NoDevices => "no_devices",
            Self::UnknownDevice { .. } => "unknown_device",
            Self::Init { .. } => "init",
            Self::GpuLost { .. } => "gpu_lost",
            Self::Device { .. } => "device",
            Self::Scripted { .. } => "scripted",
        }
    }

    /// True for start-up failures after which the agent runs without GPU telemetry.
    pub fn is_cpu_mode(&self) -> bool {
        matches!(
            self,
            Self::NoDriver { .. }
                | Self::DriverNotLoaded { .. }
                | Self::NoPermission { .. }
                | Self::NoDevices
                | Self::Init { .. }
        )
    }
}
