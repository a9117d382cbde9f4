#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]
//! GPU telemetry and the dynamic-limit policy of the infergate agent.
//!
//! ```text
//!   Telemetry (NvmlTelemetry | FakeTelemetry)
//!        │ NodeSample every 250 ms (Controller: a std thread)
//!        ▼
//!   DynamicLimits::update ── node utilisation (max over GPUs) ── EWMA ── hysteresis ── policy::tier_factors
//!        │ ArcSwap<FactorSnapshot>
//!        ▼
//!   gateway token bucket: refill = nominal_rate × limits.factor(tier)      status/metrics: limits.snapshot()
//!
//!   degrade::route(primary_saturated, fallback, |f| saturated(f)) -> Primary | Fallback(f) | Refuse(reason)
//!   (the agent's one-shot path asks it with the primary's real saturation: its pre-charge was rate limited)
//! ```
//!
//! No NVIDIA driver on the node: `NvmlTelemetry::init` returns `TelemetryError::NoDriver` (one line: "no
//! NVIDIA driver found (libnvidia-ml.so.1): running in CPU mode"), `DynamicLimits` stays at nominal
//! factors, and nothing panics.
//!
//! The only `unsafe` involved lives inside nvml-wrapper; this crate keeps its NVML handles `'static` by
//! initialising the library once per process, so it needs none.

pub mod controller;
pub mod degrade;
pub mod fake;
pub mod limits;
pub mod metrics;
pub mod nvml;
pub mod policy;
#[cfg(feature = "testing")]
pub mod reaction;
pub mod smoothing;
pub mod telemetry;

pub use controller::{Controller, DEFAULT_INTERVAL, StartError};
pub use degrade::{RefuseReason, Route, route};
pub use fake::FakeTelemetry;
pub use limits::{DynamicLimits, FactorSnapshot, LimitsConfig, TelemetryState, TierFactor};
pub use metrics::GpuMetrics;
pub use nvml::{NvmlConfig, NvmlTelemetry};
pub use policy::{PolicyError, TierPolicy, tier_factors, tightening, validate_tiers};
pub use smoothing::{Smoothed, Smoother, SmoothingConfig};
pub use telemetry::{
    GpuSample, NodeAggregate, NodeSample, ProcessSample, SampleFields, Telemetry, TelemetryError, UtilizationSource,
};
