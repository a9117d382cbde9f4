//! Scripted telemetry for tests and benches: utilisation as a function of the sample number.
use crate::telemetry::{GpuSample, NodeSample, Telemetry, TelemetryError, UtilizationSource};

/// Per-GPU utilisation for one step; `None` marks a GPU whose utilisation is unavailable (e.g. MIG).
pub type ScriptedStep = Vec<Option<f64>>;

type Script = Box<dyn FnMut(u64) -> Result<ScriptedStep, TelemetryError> + Send>;

/// Telemetry that plays a script. Step `n` is the `n`-th call to [`Telemetry::sample`], starting at 0.
pub struct FakeTelemetry {
    script: Script,
    step: u64,
}

impl FakeTelemetry {
    /// One GPU following `values`; the last value repeats once the sequence is exhausted.
    ///
    /// # Panics
    /// If `values` is empty (a test bug, not a runtime condition).
    pub fn sequence(values: impl Into<Vec<f64>>) -> Self {
        let values: Vec<f64> = values.into();
        assert!(!values.is_empty(), "FakeTelemetry::sequence needs at least one value");
        Self::from_fn(move |step| {
            let at = usize::try_from(step).unwrap_or(usize::MAX).min(values.len() - 1);
            values[at]
        })
    }

    /// One GPU at a constant utilisation.
    pub fn constant(percent: f64) -> Self {
        Self::from_fn(move |_| percent)
    }

    /// One GPU whose utilisation is `f(step)`.
    pub fn from_fn(mut f: impl FnMut(u64) -> f64 + Send + 'static) -> Self {
        Self::from_gpus_fn(move |step| vec![Some(f(step))])
    }

    /// Several GPUs: `f(step)` gives each GPU's utilisation, `None` for an unavailable reading.
    pub fn from_gpus_fn(mut f: impl FnMut(u64) -> ScriptedStep + Send + 'static) -> Self {
        Self::from_result_fn(move |step| Ok(f(step)))
    }

    /// Full control, including failures (to test what the controller does when telemetry breaks).
    pub fn from_result_fn(f: impl FnMut(u64) -> Result<ScriptedStep, TelemetryError> + Send + 'static) -> Self {
        Self { script: Box::new(f), step: 0 }
    }

    /// How many samples have been taken.
    pub fn steps(&self) -> u64 {
        self.step
    }
}

impl Telemetry for FakeTelemetry {
    fn sample(&mut self) -> Result<NodeSample, TelemetryError> {
        let step = self.step;
        self.step += 1;
        let values = (self.script)(step)?;
        let gpus = (0u32..)
            .zip(values)
            .map(|(index, value)| GpuSample::utilization(index, value, UtilizationSource::Scripted))
            .collect();
        Ok(NodeSample { gpus })
    }

    fn backend(&self) -> &'static str {
        "fake"
    }
}

impl std::fmt::Debug for FakeTelemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeTelemetry").field("step", &self.step).finish_non_exhaustive()
    }
}
