//! One test body for every telemetry backend: the fake always, NVML where a driver is present. On a machine
//! without a driver the NVML test checks that start-up fails cleanly with the CPU-mode message instead.
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]
use std::collections::BTreeSet;

use infergate_gpu::{
    FakeTelemetry, NodeAggregate, NvmlConfig, NvmlTelemetry, SampleFields, Telemetry, TelemetryError, UtilizationSource,
};

/// What every backend promises about its samples.
fn check_contract(telemetry: &mut dyn Telemetry) {
    for _ in 0..3 {
        let sample = telemetry.sample().unwrap_or_else(|e| panic!("{} sample failed: {e}", telemetry.backend()));
        assert!(!sample.gpus.is_empty(), "a sample covers at least one GPU");
        let indices: BTreeSet<u32> = sample.gpus.iter().map(|g| g.index).collect();
        assert_eq!(indices.len(), sample.gpus.len(), "GPU indices are unique");
        for gpu in &sample.gpus {
            match gpu.utilization_percent {
                Some(u) => {
                    assert!((0.0..=100.0).contains(&u), "utilisation {u} out of range");
                    assert_ne!(gpu.utilization_source, UtilizationSource::Unavailable);
                }
                None => assert_eq!(gpu.utilization_source, UtilizationSource::Unavailable),
            }
            if let (Some(used), Some(total)) = (gpu.memory_used_bytes, gpu.memory_total_bytes) {
                assert!(used <= total, "memory used {used} > total {total}");
            }
        }
        match (sample.utilization(NodeAggregate::Max), sample.utilization(NodeAggregate::Mean)) {
            (Some(max), Some(mean)) => assert!(max + 1e-9 >= mean),
            (None, None) => assert_eq!(sample.utilization_source(), UtilizationSource::Unavailable),
            other => panic!("max and mean disagree on availability: {other:?}"),
        }
    }
}

#[test]
fn fake_telemetry_keeps_the_contract() {
    check_contract(&mut FakeTelemetry::sequence([10.0, 50.0, 120.0]));
    check_contract(&mut FakeTelemetry::from_gpus_fn(|step| vec![Some(step as f64), None, Some(90.0)]));
    check_contract(&mut FakeTelemetry::from_gpus_fn(|_| vec![None, None]));
}

#[test]
fn nvml_keeps_the_contract_or_fails_cleanly() {
    match NvmlTelemetry::init(&NvmlConfig { fields: SampleFields::ALL, ..NvmlConfig::default() }) {
        Ok(mut nvml) => check_contract(&mut nvml),
        Err(error) => {
            eprintln!("NVML not available, checking the CPU-mode path instead: {error}");
            assert!(error.is_cpu_mode(), "{error:?}");
            let message = error.to_string();
            assert!(!message.contains('\n'), "one line: {message}");
            assert!(message.ends_with("running in CPU mode"), "{message}");
            if matches!(error, TelemetryError::NoDriver { .. }) {
                assert_eq!(message, "no NVIDIA driver found (libnvidia-ml.so.1): running in CPU mode");
                assert_eq!(error.category(), "no_driver");
            }
            // Asking again neither panics nor changes the answer.
            let again = NvmlTelemetry::init(&NvmlConfig::default()).unwrap_err();
            assert_eq!(again.category(), error.category());
        }
    }
}

#[test]
fn scripted_values_are_clamped_and_sequences_repeat_their_last_value() {
    let mut fake = FakeTelemetry::sequence([10.0, 150.0]);
    let values: Vec<Option<f64>> = (0..4).map(|_| fake.sample().unwrap().utilization(NodeAggregate::Max)).collect();
    assert_eq!(values, vec![Some(10.0), Some(100.0), Some(100.0), Some(100.0)]);
    assert_eq!(fake.steps(), 4);
}

#[test]
fn node_utilisation_is_the_hottest_gpu_by_default() {
    let mut fake = FakeTelemetry::from_gpus_fn(|_| vec![Some(20.0), Some(90.0), None]);
    let sample = fake.sample().unwrap();
    assert_eq!(sample.utilization(NodeAggregate::default()), Some(90.0));
    assert_eq!(sample.utilization(NodeAggregate::Mean), Some(55.0));
}
