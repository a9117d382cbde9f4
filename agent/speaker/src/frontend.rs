//! Audio front end shared by every backend: input checks, volume normalisation, partial-window layout and
//! the CPU mel spectrogram.
//!
//! ```text
//! pcm16k ──check──▶ normalise to -30 dBFS (gain >= 1) ──▶ partial starts (160 frames, step 77)
//!                                 │
//!                                 └──▶ mel frames [0, last start + 160)  (CPU here; CUDA in cuda.rs)
//! ```
//!
//! Everything mirrors Resemblyzer 0.1.4 with librosa 0.11 (`center=True`, zero padding, periodic Hann,
//! power 2, Slaney mel scale and norm). Computing only the frames the partials use is equivalent to
//! Resemblyzer's "pad the waveform to the last slice, then take the whole spectrogram": both paddings are
//! zeros, so frame `t` is always the window over samples `[160 t - 200, 160 t + 200)` with zeros outside.

use std::f64::consts::PI;

use crate::error::ModelError;
use crate::linalg::{Init, TransposedMatrix, gemm_bt};
use crate::{HOP, MEL_BANDS, N_FFT, PARTIAL_FRAMES, SAMPLE_RATE};

/// Resemblyzer's `audio_norm_target_dBFS`.
pub const TARGET_DBFS: f64 = -30.0;
/// `round((16000 / 1.3) / 160)`: Resemblyzer's default rate of 1.3 partials per second.
pub const FRAME_STEP: usize = 77;
/// Number of rfft bins of a 400-sample frame.
pub const N_BINS: usize = N_FFT / 2 + 1;

/// Request-size limits; the defaults suit verification (short clips give unreliable embeddings).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub min_samples: usize,
    pub max_samples: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { min_samples: SAMPLE_RATE / 2, max_samples: SAMPLE_RATE * 120 }
    }
}

/// One checked, volume-normalised utterance and the start frames of its partial windows.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub samples: Vec<f32>,
    pub partial_starts: Vec<usize>,
}

impl Prepared {
    /// Mel frames the partials cover: `[0, last start + 160)`.
    pub fn frames_needed(&self) -> usize {
        self.partial_starts.last().map_or(0, |s| s + PARTIAL_FRAMES)
    }
}

/// Rejects audio the model cannot embed meaningfully, with a message that says what to change.
pub fn check(pcm: &[f32], limits: &Limits) -> Result<(), ModelError> {
    let seconds = |n: usize| n as f32 / SAMPLE_RATE as f32;
    if pcm.len() < limits.min_samples {
        return Err(ModelError::TooShort { seconds: seconds(pcm.len()), min_seconds: seconds(limits.min_samples) });
    }
    if pcm.len() > limits.max_samples {
        return Err(ModelError::TooLong { seconds: seconds(pcm.len()), max_seconds: seconds(limits.max_samples) });
    }
    if let Some(index) = pcm.iter().position(|v| !v.is_finite()) {
        return Err(ModelError::NonFiniteSample { index });
    }
    if pcm.iter().all(|&v| v == 0.0) {
        return Err(ModelError::Silent);
    }
    Ok(())
}

/// Checks, normalises and lays out one utterance.
pub fn prepare(pcm: &[f32], limits: &Limits) -> Result<Prepared, ModelError> {
    check(pcm, limits)?;
    let gain = volume_gain(pcm) as f32;
    let samples = if gain == 1.0 { pcm.to_vec() } else { pcm.iter().map(|v| v * gain).collect() };
    Ok(Prepared { samples, partial_starts: partial_starts(pcm.len()) })
}

/// Gain that brings the RMS to -30 dBFS, never below 1 (Resemblyzer's `increase_only=True`).
pub fn volume_gain(pcm: &[f32]) -> f64 {
    let mean_square = pcm.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / pcm.len().max(1) as f64;
    let dbfs = 10.0 * mean_square.log10();
    let change = TARGET_DBFS - dbfs;
    if change.is_finite() && change > 0.0 { 10f64.powf(change / 20.0) } else { 1.0 }
}

/// Start frames of the partial windows for `n_samples` samples, exactly `VoiceEncoder.compute_partial_slices`
/// with rate 1.3 and min_coverage 0.75 (the last window is dropped when under 75% covered, unless it is the only
/// one).
pub fn partial_starts(n_samples: usize) -> Vec<usize> {
    let n_frames = (n_samples + 1).div_ceil(HOP);
    let steps = (n_frames + FRAME_STEP + 1).saturating_sub(PARTIAL_FRAMES).max(1);
    let mut starts: Vec<usize> = (0..steps).step_by(FRAME_STEP).collect();
    let last_start_sample = starts[starts.len() - 1] * HOP;
    let window_samples = PARTIAL_FRAMES * HOP;
    // coverage = (n - start) / window < 0.75, in integers: 4 (n - start) < 3 window.
    let covered = n_samples as i64 - last_start_sample as i64;
    if 4 * covered < 3 * window_samples as i64 && starts.len() > 1 {
        starts.pop();
    }
    starts
}

/// Precomputed tables for the CPU mel spectrogram (and the ones the CUDA path uploads).
#[derive(Debug, Clone)]
pub struct MelFrontend {
    /// Periodic Hann window, `scipy.signal.get_window("hann", 400, fftbins=True)`.
    pub window: Vec<f64>,
    /// Real DFT of a 400-sample frame as a `[2 * N_BINS][N_FFT]` matrix: rows `k` hold `cos(2 pi k n / 400)`,
    /// rows `N_BINS + k` the sines (their sign does not matter for the power).
    dft: TransposedMatrix,
    /// librosa's float32 Slaney filterbank as `[n_mels][N_BINS]`.
    pub mel_basis: Vec<f32>,
    /// Non-zero bin range of each band, to skip the zeros.
    band_bins: Vec<(usize, usize)>,
    n_mels: usize,
}

/// What a frame reads beyond the ends of the signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// Zeros (Resemblyzer's librosa call on a pre-padded signal).
    Zero,
    /// `numpy.pad(mode="reflect")` by half a frame, as `torch.stft(center=True)` and Whisper's front end do.
    Reflect,
}

impl Default for MelFrontend {
    fn default() -> Self {
        Self::new()
    }
}

impl MelFrontend {
    pub fn new() -> Self {
        Self::with_bands(MEL_BANDS)
    }

    /// The same STFT with `n_mels` Slaney bands (Whisper uses 80).
    pub fn with_bands(n_mels: usize) -> Self {
        let window = (0..N_FFT).map(|n| 0.5 - 0.5 * (2.0 * PI * n as f64 / N_FFT as f64).cos()).collect();
        let mut dft = vec![0.0f32; 2 * N_BINS * N_FFT];
        for k in 0..N_BINS {
            for n in 0..N_FFT {
                // Reduce k*n mod N first so the argument stays small and exact.
                let phase = 2.0 * PI * ((k * n) % N_FFT) as f64 / N_FFT as f64;
                dft[k * N_FFT + n] = phase.cos() as f32;
                dft[(N_BINS + k) * N_FFT + n] = phase.sin() as f32;
            }
        }
        let dft = TransposedMatrix::new(&dft, 2 * N_BINS, N_FFT);
        let mel_basis = slaney_mel_basis(n_mels);
        let band_bins = (0..n_mels)
            .map(|m| {
                let row = &mel_basis[m * N_BINS..(m + 1) * N_BINS];
                let first = row.iter().position(|&w| w != 0.0).unwrap_or(0);
                let last = row.iter().rposition(|&w| w != 0.0).map_or(first, |l| l + 1);
                (first, last)
            })
            .collect();
        Self { window, dft, mel_basis, band_bins, n_mels }
    }

    /// The DFT matrix the CUDA path multiplies windowed frames by: `[N_FFT][2 * N_BINS]`, column `k` holds the
    /// cosines and column `N_BINS + k` the sines of bin `k`.
    pub fn dft_matrix_f32(&self) -> &[f32] {
        self.dft.transposed()
    }

    /// Mel power frames `[n_frames][n_mels]` of `samples` (zero outside the slice).
    pub fn mel_frames(&self, samples: &[f32], n_frames: usize) -> Vec<f32> {
        self.mel_frames_padded(samples, n_frames, Padding::Zero)
    }

    /// Mel power frames `[n_frames][n_mels]`; frame `t` is centred on sample `t * HOP`.
    pub fn mel_frames_padded(&self, samples: &[f32], n_frames: usize, padding: Padding) -> Vec<f32> {
        let n_mels = self.n_mels;
        let len = samples.len() as isize;
        let mut frames = vec![0.0f32; n_frames * N_FFT];
        for (t, frame) in frames.chunks_exact_mut(N_FFT).enumerate() {
            let first = (t * HOP) as isize - (N_FFT / 2) as isize;
            for (i, slot) in frame.iter_mut().enumerate() {
                let mut at = first + i as isize;
                if padding == Padding::Reflect && len > 1 {
                    // Reflect about the end samples (without repeating them), as numpy's "reflect" mode.
                    if at < 0 {
                        at = -at;
                    }
                    if at >= len {
                        at = 2 * (len - 1) - at;
                    }
                }
                let x = if at >= 0 && at < len { f64::from(samples[at as usize]) } else { 0.0 };
                *slot = (x * self.window[i]) as f32;
            }
        }
        // The DFT of every frame as one GEMM: [frames][400] x [400][402].
        let mut spectrum = vec![0.0f32; n_frames * 2 * N_BINS];
        gemm_bt(&frames, n_frames, &self.dft, &mut spectrum, Init::Accumulate);
        let mut out = vec![0.0f32; n_frames * n_mels];
        let mut power = [0.0f64; N_BINS];
        for (t, spec) in spectrum.chunks_exact(2 * N_BINS).enumerate() {
            let (re, im) = spec.split_at(N_BINS);
            for k in 0..N_BINS {
                power[k] = f64::from(re[k]) * f64::from(re[k]) + f64::from(im[k]) * f64::from(im[k]);
            }
            for (m, &(lo, hi)) in self.band_bins.iter().enumerate() {
                let weights = &self.mel_basis[m * N_BINS + lo..m * N_BINS + hi];
                let energy: f64 = weights.iter().zip(&power[lo..hi]).map(|(&w, &p)| f64::from(w) * p).sum();
                out[t * n_mels + m] = energy as f32;
            }
        }
        out
    }
}

fn hz_to_mel(hz: f64) -> f64 {
    // Slaney: linear below 1 kHz (200/3 Hz per mel), logarithmic above.
    let f_sp = 200.0 / 3.0;
    let min_log_mel = 1000.0 / f_sp;
    let logstep = 6.4f64.ln() / 27.0;
    if hz >= 1000.0 { min_log_mel + (hz / 1000.0).ln() / logstep } else { hz / f_sp }
}

fn mel_to_hz(mel: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_mel = 1000.0 / f_sp;
    let logstep = 6.4f64.ln() / 27.0;
    if mel >= min_log_mel { 1000.0 * (logstep * (mel - min_log_mel)).exp() } else { f_sp * mel }
}

/// `librosa.filters.mel(sr=16000, n_fft=400, n_mels, fmin=0, fmax=8000, htk=False, norm="slaney")`,
/// including its float32 rounding points. Whisper's `mel_filters.npz` is this call with 80 bands.
fn slaney_mel_basis(n_mels: usize) -> Vec<f32> {
    let fmax = SAMPLE_RATE as f64 / 2.0;
    let n_points = n_mels + 2;
    let max_mel = hz_to_mel(fmax);
    // np.linspace(0, max_mel, n): i * step, with the end point set exactly.
    let step = max_mel / (n_points - 1) as f64;
    let mel_f: Vec<f64> =
        (0..n_points).map(|i| if i == n_points - 1 { max_mel } else { i as f64 * step }).map(mel_to_hz).collect();
    let fft_freqs: Vec<f64> = (0..N_BINS).map(|k| k as f64 * SAMPLE_RATE as f64 / N_FFT as f64).collect();
    let mut basis = vec![0.0f32; n_mels * N_BINS];
    for m in 0..n_mels {
        let lower_width = mel_f[m + 1] - mel_f[m];
        let upper_width = mel_f[m + 2] - mel_f[m + 1];
        let enorm = 2.0 / (mel_f[m + 2] - mel_f[m]);
        for (k, &f) in fft_freqs.iter().enumerate() {
            let lower = -(mel_f[m] - f) / lower_width;
            let upper = (mel_f[m + 2] - f) / upper_width;
            let w = lower.min(upper).max(0.0) as f32;
            basis[m * N_BINS + k] = (f64::from(w) * enorm) as f32;
        }
    }
    basis
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_layout_matches_known_cases() {
        // 5 s: six candidate windows, the last only 72% covered, so five remain.
        assert_eq!(partial_starts(80_000), vec![0, 77, 154, 231, 308]);
        // Shorter than one window: always exactly one.
        assert_eq!(partial_starts(1), vec![0]);
        assert_eq!(partial_starts(32_000), vec![0, 77]);
    }

    #[test]
    fn gain_only_increases_quiet_audio() {
        let loud = vec![0.5f32; 100];
        assert_eq!(volume_gain(&loud), 1.0);
        let quiet = vec![0.001f32; 100];
        let g = volume_gain(&quiet);
        let rms_after = f64::from(0.001f32) * g;
        assert!((20.0 * rms_after.log10() - TARGET_DBFS).abs() < 1e-9);
    }

    #[test]
    fn check_explains_bad_input() {
        let limits = Limits::default();
        assert_eq!(check(&[0.1; 10], &limits).unwrap_err().category(), "too_short");
        assert_eq!(check(&vec![0.0; 16_000], &limits).unwrap_err().category(), "silent");
        let mut nan = vec![0.1; 16_000];
        nan[7] = f32::NAN;
        let err = check(&nan, &limits).unwrap_err();
        assert_eq!(err.category(), "non_finite_sample");
        assert!(err.to_string().contains("sample 7"));
        assert_eq!(check(&vec![0.1; 16_000 * 121], &limits).unwrap_err().category(), "too_long");
    }

    #[test]
    fn mel_basis_rows_have_slaney_area() {
        // Slaney norm makes each triangle's area (in Hz) 1: sum(w) * 40 Hz bin width ~= 1 for wide bands.
        let fe = MelFrontend::new();
        let row = &fe.mel_basis[30 * N_BINS..31 * N_BINS];
        let area: f32 = row.iter().sum::<f32>() * 40.0;
        assert!((area - 1.0).abs() < 0.05, "area {area}");
    }
}
