//! The sampler thread with scripted telemetry. Progress is observed through the script itself (each call
//! reports its step), so no assertion depends on how fast the machine is.
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use infergate_gpu::{
    Controller, DynamicLimits, FakeTelemetry, LimitsConfig, NvmlConfig, SmoothingConfig, TelemetryError,
    TelemetryState, TierPolicy,
};

/// Only a guard against a hung test, never a pass/fail threshold.
const HANG_GUARD: Duration = Duration::from_secs(30);

fn limits() -> Arc<DynamicLimits> {
    let config = LimitsConfig {
        smoothing: SmoothingConfig { half_life: Duration::ZERO, hysteresis_points: 0.0 },
        ..LimitsConfig::default()
    };
    Arc::new(DynamicLimits::new(vec![TierPolicy::new("free", 1, 85.0, 0.2, 1.0)], config).unwrap())
}

#[test]
fn controller_feeds_samples_into_the_limits_and_stops() {
    let limits = limits();
    let (steps, seen) = mpsc::channel();
    let telemetry = FakeTelemetry::from_fn(move |step| {
        let _ = steps.send(step);
        100.0
    });
    let controller = Controller::spawn(telemetry, Arc::clone(&limits), Duration::from_millis(1)).unwrap();
    // When step 2 is being sampled, step 1's update has been published.
    while seen.recv_timeout(HANG_GUARD).expect("sampler made no progress") < 2 {}
    assert_eq!(limits.factor("free"), 0.2);
    assert_eq!(limits.snapshot().state, TelemetryState::Live);
    assert_eq!(controller.backend(), "fake");
    controller.stop();
    // Stopped: the script is not called again (the sender inside it was dropped with the thread).
    while seen.recv_timeout(HANG_GUARD).is_ok() {}
}

#[test]
fn failing_telemetry_is_recorded_not_fatal() {
    let limits = limits();
    let (steps, seen) = mpsc::channel();
    let telemetry = FakeTelemetry::from_result_fn(move |step| {
        let _ = steps.send(step);
        if step == 0 { Ok(vec![Some(100.0)]) } else { Err(TelemetryError::Scripted { step }) }
    });
    let controller = Controller::spawn(telemetry, Arc::clone(&limits), Duration::from_millis(1)).unwrap();
    while seen.recv_timeout(HANG_GUARD).expect("sampler made no progress") < 3 {}
    let snapshot = limits.snapshot();
    assert_eq!(snapshot.last_error, Some("scripted"));
    drop(controller);
}

#[test]
fn start_nvml_without_a_driver_marks_cpu_mode() {
    let limits = limits();
    match Controller::start_nvml(&NvmlConfig::default(), Arc::clone(&limits), Duration::from_millis(250)) {
        Ok(controller) => controller.stop(), // a GPU machine: nothing to check here
        Err(error) => {
            assert!(error.is_cpu_mode(), "{error:?}");
            assert!(error.to_string().ends_with("running in CPU mode"));
            assert_eq!(limits.snapshot().state, TelemetryState::Disabled);
            assert_eq!(limits.factor("free"), 1.0);
        }
    }
}

#[test]
fn a_panicking_backend_stops_sampling_and_restores_nominal_limits() {
    let limits = limits();
    let (steps, seen) = mpsc::channel();
    let telemetry = FakeTelemetry::from_fn(move |step| {
        let _ = steps.send(step);
        if step == 0 { 100.0 } else { panic!("scripted panic") }
    });
    let controller = Controller::spawn(telemetry, Arc::clone(&limits), Duration::from_millis(1)).unwrap();
    // The sender is dropped when the thread ends, so this loop ends once sampling has stopped.
    while seen.recv_timeout(HANG_GUARD).is_ok() {}
    assert_eq!(limits.snapshot().state, TelemetryState::Disabled);
    assert_eq!(limits.factor("free"), 1.0);
    controller.stop();
}
