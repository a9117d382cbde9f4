//! Whisper's log-mel front end, computed as faster-whisper computes it (the reference the tests compare with).
//!
//! 160 zero samples are appended, the STFT is centred with reflect padding (periodic Hann, 400 taps, 10 ms hop),
//! the last frame is dropped, power goes through 80 Slaney mel bands, then `log10(max(x, 1e-10))`, clamped to
//! 8 below the clip's own maximum, and scaled `(x + 4) / 4`. A 30 s window is a slice of that, padded with 0.0
//! in log-mel space (not the log-mel of silence: that is what faster-whisper feeds the encoder).
use infergate_speaker::frontend::{MelFrontend, Padding};

use crate::{CHUNK_FRAMES, HOP, N_MELS};

/// Log-mel features of a whole clip, `[N_MELS][n_frames]` row-major.
#[derive(Clone, Debug)]
pub struct LogMel {
    pub data: Vec<f32>,
    pub n_frames: usize,
}

impl LogMel {
    /// Frames that hold audio (the last frame comes from the padding only).
    pub fn content_frames(&self) -> usize {
        self.n_frames.saturating_sub(1)
    }

    /// `[N_MELS][CHUNK_FRAMES]` starting at frame `seek`, `size` frames of content, zero after.
    pub fn window(&self, seek: usize, size: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; N_MELS * CHUNK_FRAMES];
        let size = size.min(CHUNK_FRAMES).min(self.n_frames.saturating_sub(seek));
        for m in 0..N_MELS {
            let src = &self.data[m * self.n_frames + seek..m * self.n_frames + seek + size];
            out[m * CHUNK_FRAMES..m * CHUNK_FRAMES + size].copy_from_slice(src);
        }
        out
    }
}

pub struct Frontend {
    stft: MelFrontend,
}

impl Default for Frontend {
    fn default() -> Self {
        Self::new()
    }
}

impl Frontend {
    pub fn new() -> Self {
        Self { stft: MelFrontend::with_bands(N_MELS) }
    }

    pub fn log_mel(&self, samples: &[f32]) -> LogMel {
        let mut padded = Vec::with_capacity(samples.len() + HOP);
        padded.extend_from_slice(samples);
        padded.resize(samples.len() + HOP, 0.0);
        let n_frames = padded.len() / HOP;
        let power = self.stft.mel_frames_padded(&padded, n_frames, Padding::Reflect);
        let mut data = vec![0.0f32; N_MELS * n_frames];
        let mut max = f32::NEG_INFINITY;
        for t in 0..n_frames {
            for m in 0..N_MELS {
                let v = power[t * N_MELS + m].max(1e-10).log10();
                max = max.max(v);
                data[m * n_frames + t] = v;
            }
        }
        let floor = max - 8.0;
        data.iter_mut().for_each(|v| *v = (v.max(floor) + 4.0) / 4.0);
        LogMel { data, n_frames }
    }
}
