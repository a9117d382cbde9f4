//! EWMA over time plus a one-sided hysteresis band.
//!
//! ```text
//!   raw % --EWMA(half-life)--> smoothed % --hysteresis(band)--> held % --> policy
//! ```
//!
//! The hysteresis is asymmetric on purpose: the held value follows the smoothed value up at once (the
//! GPUs are getting hot: tighten now) but follows it down only once it has fallen more than `band`
//! points below the held value (relax only when the GPUs have clearly cooled). Noise of up to `band`
//! points around the target therefore moves the factor at most once instead of on every sample.
use std::time::{Duration, Instant};

/// Smoothing settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SmoothingConfig {
    /// Time for the EWMA to cover half of a step change. The default, 125 ms, weights a new sample 3/4 at
    /// the default 250 ms interval: NVML's utilisation figure is already an average over its own sample
    /// period (1/6 s to 1 s), and the hysteresis band, not the EWMA, is what stops flapping. With it every
    /// tier's factor covers 90% of a 50% -> 100% step within 1 s (see the bench); 250 ms would take 1.5 s
    /// for a single tier.
    pub half_life: Duration,
    /// Utilisation points the smoothed value must fall below the held value before limits relax.
    pub hysteresis_points: f64,
}

impl Default for SmoothingConfig {
    fn default() -> Self {
        Self { half_life: Duration::from_millis(125), hysteresis_points: 2.0 }
    }
}

/// The state of the smoothing filter: pure, advanced by explicit instants.
#[derive(Clone, Debug, PartialEq)]
pub struct Smoother {
    config: SmoothingConfig,
    /// `None` until the first sample: the first value is taken as is (there is no history to blend with).
    state: Option<SmootherState>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct SmootherState {
    smoothed: f64,
    held: f64,
    at: Instant,
}

/// What one update produced.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Smoothed {
    /// EWMA of the raw utilisation.
    pub smoothed: f64,
    /// After hysteresis: the value the policy uses.
    pub held: f64,
}

impl Smoother {
    pub fn new(config: SmoothingConfig) -> Self {
        Self { config, state: None }
    }

    pub fn config(&self) -> SmoothingConfig {
        self.config
    }

    /// Folds in a raw utilisation (percent) observed at `now`. Time running backwards counts as no time.
    pub fn update(&mut self, raw: f64, now: Instant) -> Smoothed {
        let raw = raw.clamp(0.0, 100.0);
        let next = match self.state {
            None => SmootherState { smoothed: raw, held: raw, at: now },
            Some(previous) => {
                let elapsed = now.saturating_duration_since(previous.at);
                let smoothed = previous.smoothed + self.weight(elapsed) * (raw - previous.smoothed);
                SmootherState { smoothed, held: hold(previous.held, smoothed, self.config.hysteresis_points), at: now }
            }
        };
        self.state = Some(next);
        Smoothed { smoothed: next.smoothed, held: next.held }
    }

    /// The last output, if any.
    pub fn current(&self) -> Option<Smoothed> {
        self.state.map(|s| Smoothed { smoothed: s.smoothed, held: s.held })
    }

    /// Forgets the history (telemetry went stale: the next sample starts afresh).
    pub fn reset(&mut self) {
        self.state = None;
    }

    /// Weight of a new sample after `elapsed`: 1 - 2^(-elapsed / half_life). A zero half-life disables smoothing.
    fn weight(&self, elapsed: Duration) -> f64 {
        if self.config.half_life.is_zero() {
            return 1.0;
        }
        1.0 - (-(elapsed.as_secs_f64() / self.config.half_life.as_secs_f64())).exp2()
    }
}

/// One-sided backlash: up at once, down only past the band.
fn hold(held: f64, smoothed: f64, band: f64) -> f64 {
    if smoothed >= held {
        smoothed
    } else if smoothed < held - band {
        // Settles `band` points above the smoothed value, so an idle GPU holds at `band`: targets are
        // >= 1% and the band is a few points, so that never tightens a sensible tier.
        smoothed + band
    } else {
        held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn first_sample_is_taken_as_is() {
        let mut s = Smoother::new(SmoothingConfig::default());
        assert_eq!(s.update(40.0, Instant::now()), Smoothed { smoothed: 40.0, held: 40.0 });
    }

    #[test]
    fn one_half_life_covers_half_the_step() {
        let t0 = Instant::now();
        let mut s = Smoother::new(SmoothingConfig { half_life: Duration::from_millis(250), hysteresis_points: 0.0 });
        s.update(0.0, t0);
        let out = s.update(100.0, at(t0, 250));
        assert!((out.smoothed - 50.0).abs() < 1e-9, "{out:?}");
        let out = s.update(100.0, at(t0, 500));
        assert!((out.smoothed - 75.0).abs() < 1e-9, "{out:?}");
    }

    #[test]
    fn held_value_rises_at_once_and_falls_only_past_the_band() {
        let t0 = Instant::now();
        let mut s = Smoother::new(SmoothingConfig { half_life: Duration::ZERO, hysteresis_points: 2.0 });
        assert_eq!(s.update(86.0, t0).held, 86.0);
        assert_eq!(s.update(88.0, at(t0, 1)).held, 88.0);
        // Within the band: held stays.
        assert_eq!(s.update(86.5, at(t0, 2)).held, 88.0);
        assert_eq!(s.update(87.9, at(t0, 3)).held, 88.0);
        // Past the band: follows at band distance.
        assert_eq!(s.update(80.0, at(t0, 4)).held, 82.0);
        assert_eq!(s.update(0.0, at(t0, 5)).held, 2.0);
    }

    #[test]
    fn noise_inside_the_band_does_not_move_the_held_value() {
        let t0 = Instant::now();
        let mut s = Smoother::new(SmoothingConfig { half_life: Duration::ZERO, hysteresis_points: 2.0 });
        let noisy = [85.0, 86.5, 84.8, 86.0, 85.1, 86.4, 84.6, 86.2];
        let held: Vec<f64> = noisy.iter().enumerate().map(|(i, v)| s.update(*v, at(t0, i as u64)).held).collect();
        assert_eq!(held, vec![85.0, 86.5, 86.5, 86.5, 86.5, 86.5, 86.5, 86.5]);
    }

    #[test]
    fn time_running_backwards_changes_nothing() {
        let t0 = Instant::now();
        let mut s = Smoother::new(SmoothingConfig::default());
        s.update(50.0, at(t0, 1000));
        assert_eq!(s.update(100.0, t0).smoothed, 50.0);
    }
}
