//! Deterministic test signals shared by the benches, the GPU check example and tests. Not speech: a harmonic
//! tone with a wandering pitch plus seeded noise, which exercises every mel band and the whole model.

use crate::SAMPLE_RATE;

/// `seconds` of a voiced-sounding signal; the same `seed` always gives the same samples.
pub fn voice_like(seed: u64, seconds: f64) -> Vec<f32> {
    let mut state = seed;
    let tau = 2.0 * std::f64::consts::PI;
    // Each seed gets its own pitch so a batch holds different "speakers".
    let base = 90.0 + (seed % 7) as f64 * 20.0;
    let n = (seconds * SAMPLE_RATE as f64).round() as usize;
    (0..n)
        .map(|i| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let noise = ((state >> 40) as f64 / (1u64 << 24) as f64 - 0.5) * 0.01;
            let t = i as f64 / SAMPLE_RATE as f64;
            let f0 = base + 30.0 * (tau * 0.7 * t).sin();
            let voice: f64 = (1..6).map(|h| (tau * f0 * h as f64 * t).sin() / h as f64).sum();
            (0.05 * voice + noise) as f32
        })
        .collect()
}

/// The input generator of scripts/make_golden.py: 64-bit LCG noise plus sines (each `(Hz, amplitude, phase)`),
/// computed in f64 with libm `sin` (as Python's `math.sin`) and rounded to f32, with an optional tremolo.
pub fn golden_signal(seconds: f64, seed: u64, noise_amp: f64, sines: &[(f64, f64, f64)], tremolo_hz: f64) -> Vec<f32> {
    let n = (seconds * SAMPLE_RATE as f64).round() as usize;
    let sr = SAMPLE_RATE as f64;
    let tau = 2.0 * std::f64::consts::PI;
    let mut state = seed;
    (0..n)
        .map(|i| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let uniform = (state >> 40) as f64 / (1u64 << 24) as f64;
            let mut x = noise_amp * (2.0 * uniform - 1.0);
            for &(freq, amp, phase) in sines {
                x += amp * (tau * freq * i as f64 / sr + phase).sin();
            }
            if tremolo_hz > 0.0 {
                x *= 0.75 + 0.25 * (tau * tremolo_hz * i as f64 / sr).sin();
            }
            x as f32
        })
        .collect()
}
