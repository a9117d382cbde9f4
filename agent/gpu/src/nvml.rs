//! NVML-backed telemetry.
//!
//! ```text
//!   libnvidia-ml.so.1 --(dlopen at start-up; absent => TelemetryError::NoDriver => CPU mode)
//!        |
//!   NvmlTelemetry::sample(): per watched GPU
//!        utilisation: MIG off -> nvmlDeviceGetUtilizationRates().gpu            (Device)
//!                     MIG on  -> GPM SM utilisation between two ticks (Hopper+) (GpmSmActivity)
//!                             -> memory used/total, only if enabled              (MemoryUsedProxy)
//!                             -> nothing                                         (Unavailable)
//!        memory / temperature / power / processes: only when SampleFields asks
//! ```
//!
//! The library is initialised once per process and kept for its lifetime (NVML asks for one init per
//! program, and `'static` handles let the sampler keep GPM samples between ticks without `unsafe`).
use std::ffi::OsStr;
use std::sync::OnceLock;

use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::enums::gpm::GpmMetricId;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::gpm::{GpmSample, gpm_metrics_get};
use nvml_wrapper::{Device, Nvml};

use crate::telemetry::{
    GpuSample, NodeSample, ProcessSample, SampleFields, Telemetry, TelemetryError, UtilizationSource,
};

/// The soname the driver package installs; the unversioned `libnvidia-ml.so` (nvml-wrapper's default)
/// exists only where the CUDA development files are installed, which a GPU node usually lacks.
const LIB_SONAME: &str = "libnvidia-ml.so.1";
const LIB_DEV_NAME: &str = "libnvidia-ml.so";

/// `nvmlDeviceGetMigMode` reports 1 for enabled.
const MIG_ENABLED: u32 = 1;

static NVML: OnceLock<Nvml> = OnceLock::new();

/// What to watch and how.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NvmlConfig {
    /// NVML indices of the GPUs this agent uses; `None` watches every GPU on the node.
    pub devices: Option<Vec<u32>>,
    pub fields: SampleFields,
    /// On a MIG GPU without GPM, report memory used/total as utilisation instead of "unavailable".
    /// Off by default: memory occupancy says how much is loaded, not how busy the GPU is, so it would
    /// keep limits tight on a GPU that merely holds large models.
    pub mig_memory_proxy: bool,
}

/// Loads NVML once per process. Errors are typed so the caller can log one line and run in CPU mode.
pub fn nvml() -> Result<&'static Nvml, TelemetryError> {
    if let Some(nvml) = NVML.get() {
        return Ok(nvml);
    }
    let loaded = load()?;
    // If another thread won the race, `loaded` is dropped here, which only decrements NVML's init count.
    Ok(NVML.get_or_init(move || loaded))
}

fn load() -> Result<Nvml, TelemetryError> {
    let first = Nvml::builder().lib_path(OsStr::new(LIB_SONAME)).init();
    let result = match first {
        Err(NvmlError::LibloadingError(_)) => Nvml::builder().lib_path(OsStr::new(LIB_DEV_NAME)).init(),
        other => other,
    };
    result.map_err(|source| match source {
        NvmlError::LibloadingError(_) | NvmlError::LibraryNotFound | NvmlError::FailedToLoadSymbol(_) => {
            TelemetryError::NoDriver { source }
        }
        NvmlError::DriverNotLoaded => TelemetryError::DriverNotLoaded { source },
        NvmlError::NoPermission => TelemetryError::NoPermission { source },
        source => TelemetryError::Init { source },
    })
}

/// How one GPU's utilisation is read, decided at start-up (MIG mode only changes across a GPU reset).
#[derive(Debug)]
enum UtilizationMode {
    Device,
    /// Keeps the previous tick's GPM sample; the metric is computed between it and the new one.
    Gpm {
        previous: Option<GpmSample<'static>>,
    },
    MemoryProxy,
    Unavailable,
}

#[derive(Debug)]
struct WatchedGpu {
    index: u32,
    device: Device<'static>,
    mig_enabled: bool,
    mode: UtilizationMode,
    /// Driver timestamp (µs) of the newest process sample seen, so each tick reads only new samples.
    last_process_timestamp: u64,
}

/// Telemetry from the NVIDIA driver.
#[derive(Debug)]
pub struct NvmlTelemetry {
    gpus: Vec<WatchedGpu>,
    fields: SampleFields,
    driver_version: Option<String>,
}

impl NvmlTelemetry {
    /// Loads NVML and resolves the GPUs to watch. Fails cleanly (never panics) when there is no driver.
    pub fn init(config: &NvmlConfig) -> Result<Self, TelemetryError> {
        let nvml = nvml()?;
        let count = nvml.device_count().map_err(|source| TelemetryError::Init { source })?;
        let indices: Vec<u32> = match &config.devices {
            Some(list) => list.clone(),
            None => (0..count).collect(),
        };
        if indices.is_empty() {
            return Err(TelemetryError::NoDevices);
        }
        let mut gpus = Vec::with_capacity(indices.len());
        for index in indices {
            if index >= count {
                return Err(TelemetryError::UnknownDevice { index, count });
            }
            let device = nvml.device_by_index(index).map_err(|source| device_error(index, source))?;
            gpus.push(watch(index, device, config.mig_memory_proxy));
        }
        let driver_version = nvml.sys_driver_version().ok();
        Ok(Self { gpus, fields: config.fields, driver_version })
    }

    /// The driver version, when NVML reports it.
    pub fn driver_version(&self) -> Option<&str> {
        self.driver_version.as_deref()
    }

    /// One line per watched GPU: index, name, MIG state and the utilisation source in use.
    pub fn describe(&self) -> Vec<String> {
        self.gpus
            .iter()
            .map(|gpu| {
                let name = gpu.device.name().unwrap_or_else(|_| "unknown".to_owned());
                let source = match gpu.mode {
                    UtilizationMode::Device => UtilizationSource::Device,
                    UtilizationMode::Gpm { .. } => UtilizationSource::GpmSmActivity,
                    UtilizationMode::MemoryProxy => UtilizationSource::MemoryUsedProxy,
                    UtilizationMode::Unavailable => UtilizationSource::Unavailable,
                };
                format!("gpu {}: {name}, mig={}, utilisation from {source}", gpu.index, gpu.mig_enabled)
            })
            .collect()
    }

    /// Utilisation only, for the sampling-cost bench: the one call the policy cannot do without.
    pub fn sample_utilization(&mut self) -> Result<Option<f64>, TelemetryError> {
        let mut node = None::<f64>;
        for gpu in &mut self.gpus {
            let (value, _) = read_utilization(gpu)?;
            node = match (node, value) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(node)
    }
}

fn watch(index: u32, device: Device<'static>, mig_memory_proxy: bool) -> WatchedGpu {
    // NotSupported here means a GPU without MIG: the normal case.
    let mig_enabled = device.mig_mode().map(|m| m.current == MIG_ENABLED).unwrap_or(false);
    let mode = if !mig_enabled {
        UtilizationMode::Device
    } else if device.gpm_support().unwrap_or(false) {
        UtilizationMode::Gpm { previous: None }
    } else if mig_memory_proxy {
        UtilizationMode::MemoryProxy
    } else {
        UtilizationMode::Unavailable
    };
    if mig_enabled {
        tracing::info!(gpu = index, source = ?mode_source(&mode), "GPU is in MIG mode: device utilisation is not reported");
    }
    WatchedGpu { index, device, mig_enabled, mode, last_process_timestamp: 0 }
}

fn mode_source(mode: &UtilizationMode) -> UtilizationSource {
    match mode {
        UtilizationMode::Device => UtilizationSource::Device,
        UtilizationMode::Gpm { .. } => UtilizationSource::GpmSmActivity,
        UtilizationMode::MemoryProxy => UtilizationSource::MemoryUsedProxy,
        UtilizationMode::Unavailable => UtilizationSource::Unavailable,
    }
}

fn device_error(index: u32, source: NvmlError) -> TelemetryError {
    match source {
        NvmlError::GpuLost => TelemetryError::GpuLost { index },
        source => TelemetryError::Device { index, source },
    }
}

/// Reads one GPU's utilisation by its mode. A `NotSupported` from the device call (MIG enabled after
/// start-up, or a GPU that never reports it) switches the GPU to "unavailable" instead of failing every tick.
fn read_utilization(gpu: &mut WatchedGpu) -> Result<(Option<f64>, UtilizationSource), TelemetryError> {
    match &mut gpu.mode {
        UtilizationMode::Device => match gpu.device.utilization_rates() {
            Ok(rates) => Ok((Some(f64::from(rates.gpu)), UtilizationSource::Device)),
            Err(NvmlError::NotSupported) => {
                tracing::warn!(gpu = gpu.index, "GPU stopped reporting utilisation (MIG?): marking it unavailable");
                gpu.mode = UtilizationMode::Unavailable;
                Ok((None, UtilizationSource::Unavailable))
            }
            Err(source) => Err(device_error(gpu.index, source)),
        },
        UtilizationMode::Gpm { previous } => {
            let current = gpu.device.gpm_sample().map_err(|source| device_error(gpu.index, source))?;
            let value = match previous.take() {
                // The first tick has nothing to compare against.
                None => None,
                Some(before) => {
                    let nvml = nvml()?;
                    let metrics = gpm_metrics_get(nvml, &before, &current, &[GpmMetricId::SmUtil])
                        .map_err(|source| device_error(gpu.index, source))?;
                    metrics.into_iter().next().and_then(Result::ok).map(|m| m.value.clamp(0.0, 100.0))
                }
            };
            *previous = Some(current);
            let source =
                if value.is_some() { UtilizationSource::GpmSmActivity } else { UtilizationSource::Unavailable };
            Ok((value, source))
        }
        UtilizationMode::MemoryProxy => {
            let memory = gpu.device.memory_info().map_err(|source| device_error(gpu.index, source))?;
            let value = (memory.total > 0).then(|| memory.used as f64 * 100.0 / memory.total as f64);
            let source =
                if value.is_some() { UtilizationSource::MemoryUsedProxy } else { UtilizationSource::Unavailable };
            Ok((value, source))
        }
        UtilizationMode::Unavailable => Ok((None, UtilizationSource::Unavailable)),
    }
}

/// `NotSupported` for an optional field is an absent field, not an error.
fn optional<T>(index: u32, result: Result<T, NvmlError>) -> Result<Option<T>, TelemetryError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(NvmlError::NotSupported | NvmlError::NoPermission) => Ok(None),
        Err(source) => Err(device_error(index, source)),
    }
}

impl Telemetry for NvmlTelemetry {
    fn sample(&mut self) -> Result<NodeSample, TelemetryError> {
        let fields = self.fields;
        let mut gpus = Vec::with_capacity(self.gpus.len());
        for gpu in &mut self.gpus {
            let (utilization, source) = read_utilization(gpu)?;
            let mut sample = GpuSample::utilization(gpu.index, utilization, source);
            sample.mig_enabled = gpu.mig_enabled;
            let index = gpu.index;
            if fields.memory {
                if let Some(memory) = optional(index, gpu.device.memory_info())? {
                    sample.memory_used_bytes = Some(memory.used);
                    sample.memory_total_bytes = Some(memory.total);
                }
            }
            if fields.temperature {
                sample.temperature_celsius = optional(index, gpu.device.temperature(TemperatureSensor::Gpu))?;
            }
            if fields.power {
                sample.power_milliwatts = optional(index, gpu.device.power_usage())?;
            }
            if fields.processes {
                let since = gpu.last_process_timestamp;
                // NotFound: no process sample newer than `since`.
                let stats = match gpu.device.process_utilization_stats(since) {
                    Err(NvmlError::NotFound) => Some(Vec::new()),
                    other => optional(index, other)?,
                };
                for stat in stats.unwrap_or_default() {
                    gpu.last_process_timestamp = gpu.last_process_timestamp.max(stat.timestamp);
                    sample.processes.push(ProcessSample {
                        pid: stat.pid,
                        sm_percent: stat.sm_util,
                        memory_percent: stat.mem_util,
                    });
                }
            }
            gpus.push(sample);
        }
        Ok(NodeSample { gpus })
    }

    fn backend(&self) -> &'static str {
        "nvml"
    }
}
