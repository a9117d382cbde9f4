//! Prometheus view of the policy, read from the published snapshot at scrape time: the sampler does no
//! metrics work, and a scrape never blocks an update.
//!
//! Names carry no prefix: the agent's registry adds `infergate_`. Labels are bounded: tier names come from
//! the config, GPU indices from the node, states and sources from fixed enums.
use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, Opts, Registry};

use crate::limits::{DynamicLimits, TelemetryState};
use crate::telemetry::UtilizationSource;

const STATES: [TelemetryState; 4] =
    [TelemetryState::Waiting, TelemetryState::Live, TelemetryState::Stale, TelemetryState::Disabled];
const SOURCES: [UtilizationSource; 5] = [
    UtilizationSource::Device,
    UtilizationSource::GpmSmActivity,
    UtilizationSource::MemoryUsedProxy,
    UtilizationSource::Unavailable,
    UtilizationSource::Scripted,
];

/// Gauges for the refill factors, the node utilisation the policy used and the last per-GPU sample.
#[derive(Clone)]
pub struct GpuMetrics {
    limits: Arc<DynamicLimits>,
    refill_factor: GaugeVec,
    refill_factor_min: GaugeVec,
    node_utilization: GaugeVec,
    telemetry_state: GaugeVec,
    utilization_source: GaugeVec,
    gpu_utilization: GaugeVec,
    gpu_memory_used: GaugeVec,
    gpu_memory_total: GaugeVec,
    gpu_temperature: GaugeVec,
    gpu_power: GaugeVec,
}

impl GpuMetrics {
    /// Registers the GPU gauges in `registry`; they read `limits` on every scrape.
    pub fn register(registry: &Registry, limits: Arc<DynamicLimits>) -> prometheus::Result<Self> {
        let gauge = |name: &str, help: &str, labels: &[&str]| GaugeVec::new(Opts::new(name, help), labels);
        let metrics = Self {
            limits,
            refill_factor: gauge(
                "gpu_refill_factor",
                "Factor applied to each tier's refill rate by GPU utilisation (1 = nominal)",
                &["tier"],
            )?,
            refill_factor_min: gauge(
                "gpu_refill_factor_min",
                "Each tier's lowest refill factor (its gpuUtilization.minFactor): a factor at it is pinned",
                &["tier"],
            )?,
            node_utilization: gauge(
                "gpu_node_utilization_percent",
                "Node GPU utilisation: raw (last sample), smoothed (EWMA) and held (after hysteresis; drives the factors)",
                &["stage"],
            )?,
            telemetry_state: gauge(
                "gpu_telemetry_state",
                "1 for the current GPU telemetry state (waiting, live, stale, disabled = CPU mode)",
                &["state"],
            )?,
            utilization_source: gauge(
                "gpu_utilization_source",
                "1 for the source of the node utilisation (device, gpm_sm_activity, memory_used_proxy, unavailable)",
                &["source"],
            )?,
            gpu_utilization: gauge(
                "gpu_device_utilization_percent",
                "Per-GPU utilisation in the last sample",
                &["gpu"],
            )?,
            gpu_memory_used: gauge("gpu_device_memory_used_bytes", "Per-GPU framebuffer memory in use", &["gpu"])?,
            gpu_memory_total: gauge("gpu_device_memory_total_bytes", "Per-GPU framebuffer memory", &["gpu"])?,
            gpu_temperature: gauge("gpu_device_temperature_celsius", "Per-GPU die temperature", &["gpu"])?,
            gpu_power: gauge("gpu_device_power_watts", "Per-GPU board power draw", &["gpu"])?,
        };
        registry.register(Box::new(metrics.clone()))?;
        Ok(metrics)
    }

    fn gauges(&self) -> [&GaugeVec; 10] {
        [
            &self.refill_factor,
            &self.refill_factor_min,
            &self.node_utilization,
            &self.telemetry_state,
            &self.utilization_source,
            &self.gpu_utilization,
            &self.gpu_memory_used,
            &self.gpu_memory_total,
            &self.gpu_temperature,
            &self.gpu_power,
        ]
    }

    fn refresh(&self) {
        let snapshot = self.limits.snapshot();
        // Reset first so tiers removed by a config reload and GPUs no longer reported disappear.
        for gauge in self.gauges() {
            gauge.reset();
        }
        for tier in &snapshot.tiers {
            self.refill_factor.with_label_values(&[tier.name.as_str()]).set(tier.factor);
            self.refill_factor_min.with_label_values(&[tier.name.as_str()]).set(tier.min_factor);
        }
        for (stage, value) in [
            ("raw", snapshot.raw_utilization),
            ("smoothed", snapshot.smoothed_utilization),
            ("held", snapshot.held_utilization),
        ] {
            if let Some(value) = value {
                self.node_utilization.with_label_values(&[stage]).set(value);
            }
        }
        for state in STATES {
            self.telemetry_state.with_label_values(&[state.as_str()]).set(f64::from(u8::from(state == snapshot.state)));
        }
        for source in SOURCES {
            let current = source == snapshot.utilization_source;
            self.utilization_source.with_label_values(&[source.as_str()]).set(f64::from(u8::from(current)));
        }
        if snapshot.state != TelemetryState::Live {
            return;
        }
        for gpu in snapshot.last_sample.iter().flat_map(|s| &s.gpus) {
            let index = gpu.index.to_string();
            let label = [index.as_str()];
            if let Some(u) = gpu.utilization_percent {
                self.gpu_utilization.with_label_values(&label).set(u);
            }
            if let Some(bytes) = gpu.memory_used_bytes {
                self.gpu_memory_used.with_label_values(&label).set(bytes as f64);
            }
            if let Some(bytes) = gpu.memory_total_bytes {
                self.gpu_memory_total.with_label_values(&label).set(bytes as f64);
            }
            if let Some(celsius) = gpu.temperature_celsius {
                self.gpu_temperature.with_label_values(&label).set(f64::from(celsius));
            }
            if let Some(milliwatts) = gpu.power_milliwatts {
                self.gpu_power.with_label_values(&label).set(f64::from(milliwatts) / 1000.0);
            }
        }
    }
}

impl Collector for GpuMetrics {
    fn desc(&self) -> Vec<&Desc> {
        self.gauges().into_iter().flat_map(|g| g.desc()).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.refresh();
        self.gauges().into_iter().flat_map(|g| g.collect()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::LimitsConfig;
    use crate::policy::TierPolicy;
    use crate::telemetry::{GpuSample, NodeSample};
    use prometheus::{Encoder, TextEncoder};
    use std::time::Instant;

    fn render(registry: &Registry) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&registry.gather(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn scrape_shows_factors_state_and_gpus() {
        let limits = Arc::new(
            DynamicLimits::new(vec![TierPolicy::new("free", 1, 85.0, 0.25, 1.0)], LimitsConfig::default()).unwrap(),
        );
        let registry = Registry::new_custom(Some("infergate".into()), None).unwrap();
        GpuMetrics::register(&registry, Arc::clone(&limits)).unwrap();
        let text = render(&registry);
        assert!(text.contains("infergate_gpu_refill_factor{tier=\"free\"} 1\n"), "{text}");
        assert!(text.contains("infergate_gpu_telemetry_state{state=\"waiting\"} 1\n"), "{text}");

        let mut gpu = GpuSample::utilization(0, Some(100.0), UtilizationSource::Device);
        gpu.memory_used_bytes = Some(1024);
        gpu.power_milliwatts = Some(350_000);
        limits.update(&NodeSample { gpus: vec![gpu] }, Instant::now());
        let text = render(&registry);
        assert!(text.contains("infergate_gpu_refill_factor{tier=\"free\"} 0.25\n"), "{text}");
        assert!(text.contains("infergate_gpu_telemetry_state{state=\"live\"} 1\n"), "{text}");
        assert!(text.contains("infergate_gpu_utilization_source{source=\"device\"} 1\n"), "{text}");
        assert!(text.contains("infergate_gpu_node_utilization_percent{stage=\"held\"} 100\n"), "{text}");
        assert!(text.contains("infergate_gpu_device_memory_used_bytes{gpu=\"0\"} 1024\n"), "{text}");
        assert!(text.contains("infergate_gpu_device_power_watts{gpu=\"0\"} 350\n"), "{text}");
        assert!(!text.contains("temperature_celsius{"), "not sampled, not shown: {text}");
    }
}
