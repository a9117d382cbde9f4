//! Prints what NVML reports on this node, or the CPU-mode message. `cargo run -p infergate-gpu --example nvml_probe`
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]
use std::time::{Duration, Instant};

use infergate_gpu::{NodeAggregate, NvmlConfig, NvmlTelemetry, SampleFields, Telemetry};

fn main() {
    let config = NvmlConfig { fields: SampleFields::ALL, ..NvmlConfig::default() };
    let mut telemetry = match NvmlTelemetry::init(&config) {
        Ok(t) => t,
        Err(error) => {
            // The same line the agent logs at start-up; exit 0 because CPU mode is a supported mode.
            println!("{error}");
            return;
        }
    };
    println!("driver: {}", telemetry.driver_version().unwrap_or("unknown"));
    for line in telemetry.describe() {
        println!("{line}");
    }
    // GPM needs two ticks, so sample a few times at the default interval.
    for tick in 0..4 {
        if tick > 0 {
            std::thread::sleep(Duration::from_millis(250));
        }
        let started = Instant::now();
        let result = telemetry.sample();
        let took = started.elapsed();
        match result {
            Ok(sample) => {
                println!(
                    "tick {tick} ({:?}): node utilisation max={:?} mean={:?} from {}",
                    took,
                    sample.utilization(NodeAggregate::Max),
                    sample.utilization(NodeAggregate::Mean),
                    sample.utilization_source()
                );
                for gpu in &sample.gpus {
                    println!(
                        "  gpu {}: util={:?}% ({}), mig={}, mem={:?}/{:?} B, temp={:?} C, power={:?} mW, processes={:?}",
                        gpu.index,
                        gpu.utilization_percent,
                        gpu.utilization_source,
                        gpu.mig_enabled,
                        gpu.memory_used_bytes,
                        gpu.memory_total_bytes,
                        gpu.temperature_celsius,
                        gpu.power_milliwatts,
                        gpu.processes
                    );
                }
            }
            Err(error) => println!("tick {tick}: sample failed ({}): {error}", error.category()),
        }
    }
    // Cost of the call the policy depends on.
    let rounds = 1000;
    let started = Instant::now();
    for _ in 0..rounds {
        let _ = telemetry.sample_utilization();
    }
    println!("utilisation-only sample: {:?} per call over {rounds} calls", started.elapsed() / rounds);
}
