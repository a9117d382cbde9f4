//! The sampling loop: a plain std thread, so the crate works under any async runtime or none.
//!
//! ```text
//!  Controller::spawn ──> thread "infergate-gpu-sampler"
//!                          loop every `interval` (fixed rate, no drift):
//!                            telemetry.sample() ──ok──> limits.update(sample, now)
//!                                              └─err──> limits.update_failed(err, now)  (logged on change only)
//!                          until the stop handle is dropped or `stop()` is called
//! ```
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::limits::DynamicLimits;
use crate::nvml::{NvmlConfig, NvmlTelemetry};
use crate::telemetry::{Telemetry, TelemetryError};

/// The default sampling interval: well under DCGM exporter's 30 s, and four NVML calls a second per GPU.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(250);

/// A running sampler. Dropping it stops the thread and waits for it.
#[derive(Debug)]
pub struct Controller {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    limits: Arc<DynamicLimits>,
    backend: &'static str,
}

impl Controller {
    /// Starts sampling `telemetry` every `interval` into `limits`. The first sample is taken at once.
    pub fn spawn(
        mut telemetry: impl Telemetry + 'static,
        limits: Arc<DynamicLimits>,
        interval: Duration,
    ) -> std::io::Result<Self> {
        let interval = interval.max(Duration::from_millis(1));
        let (stop, stopped) = mpsc::channel::<()>();
        let backend = telemetry.backend();
        let shared = Arc::clone(&limits);
        let thread = std::thread::Builder::new().name("infergate-gpu-sampler".to_owned()).spawn(move || {
            let mut next = Instant::now();
            let mut last_error: Option<&'static str> = None;
            loop {
                let now = Instant::now();
                // A panic in a driver binding must not leave the factors frozen where they were: stop
                // sampling and fall back to nominal limits, as in CPU mode.
                let Ok(result) = std::panic::catch_unwind(AssertUnwindSafe(|| telemetry.sample())) else {
                    tracing::error!(backend, "GPU telemetry panicked: sampling stopped, limits back to nominal");
                    shared.disable();
                    break;
                };
                match result {
                    Ok(sample) => {
                        if last_error.take().is_some() {
                            tracing::info!(backend, "GPU telemetry recovered");
                        }
                        shared.update(&sample, now);
                    }
                    Err(error) => {
                        // Log on change only: a lost GPU would otherwise log four lines a second.
                        if last_error != Some(error.category()) {
                            tracing::warn!(backend, category = error.category(), error = %error, "GPU telemetry sample failed");
                            last_error = Some(error.category());
                        }
                        shared.update_failed(&error, now);
                    }
                }
                next += interval;
                let now = Instant::now();
                if next < now {
                    // Fell behind (a slow driver call): skip missed ticks rather than bursting.
                    next = now;
                }
                match stopped.recv_timeout(next - now) {
                    Err(RecvTimeoutError::Timeout) => continue,
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                }
            }
        })?;
        Ok(Self { stop: Some(stop), thread: Some(thread), limits, backend })
    }

    /// Starts NVML sampling, or returns the reason to run in CPU mode (and marks `limits` disabled).
    /// The caller logs the error's one-line message once.
    pub fn start_nvml(config: &NvmlConfig, limits: Arc<DynamicLimits>, interval: Duration) -> Result<Self, StartError> {
        match NvmlTelemetry::init(config) {
            Ok(telemetry) => Self::spawn(telemetry, limits, interval).map_err(StartError::Thread),
            Err(error) => {
                limits.disable();
                Err(StartError::Telemetry(error))
            }
        }
    }

    pub fn limits(&self) -> &Arc<DynamicLimits> {
        &self.limits
    }

    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// Stops the thread and waits for it (at most one driver call plus a wake-up).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!(backend = self.backend, "GPU sampler thread panicked");
            }
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Why the sampler did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Telemetry(TelemetryError),
    #[error("could not start the GPU sampler thread")]
    Thread(#[source] std::io::Error),
}

impl StartError {
    pub fn category(&self) -> &'static str {
        match self {
            Self::Telemetry(e) => e.category(),
            Self::Thread(_) => "thread",
        }
    }

    /// True when the agent should carry on in CPU mode.
    pub fn is_cpu_mode(&self) -> bool {
        matches!(self, Self::Telemetry(e) if e.is_cpu_mode())
    }
}
