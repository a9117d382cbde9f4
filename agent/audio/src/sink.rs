//! Where decoded frames go: channel mixdown, the length cap, and conversion to 16 kHz, one packet at a time.
//!
//! ```text
//!  packet frames (interleaved, any rate) ─▶ Trim (warm-up, padding) ─▶ average channels ─▶ cap check
//!                                        ─▶ Resampler ─▶ 16 kHz mono Vec<f32>
//! ```
//! The cap is checked before a packet's samples are kept, so memory stays within `max_seconds` of 16 kHz
//! mono however small the compressed upload that expands to it.
use crate::TARGET_RATE;
use crate::error::AudioError;
use crate::resample::Resampler;

/// Frames the codec outputs that are not part of the recording, where the container says so only indirectly.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Trim {
    /// Decoder warm-up at the start (Opus pre-skip, AAC priming), dropped.
    pub(crate) start: u64,
    /// Frames of real audio after `start`, where the container states it; output past it is padding, dropped.
    pub(crate) length: Option<u64>,
}

pub(crate) struct Sink {
    /// Rate of the frames pushed in (for Opus, the rate the decoder was asked for, not the container's 48 kHz).
    rate: u32,
    max_seconds: f64,
    trim: Trim,
    /// Frames accepted so far at `rate`.
    frames: u64,
    /// `None` when `rate` is already 16 kHz.
    resampler: Option<Resampler>,
    mono: Vec<f32>,
    out: Vec<f32>,
}

impl Sink {
    pub(crate) fn new(rate: u32, max_seconds: f64, trim: Trim) -> Self {
        let resampler = (rate != TARGET_RATE).then(|| Resampler::new(rate, TARGET_RATE));
        Sink { rate, max_seconds, trim, frames: 0, resampler, mono: Vec::new(), out: Vec::new() }
    }

    /// Takes interleaved audio with `channels` channels.
    pub(crate) fn push_interleaved(&mut self, samples: &[f32], channels: usize) -> Result<(), AudioError> {
        if channels == 0 {
            return Ok(());
        }
        let mut frames = (samples.len() / channels) as u64;
        let skipped = frames.min(self.trim.start);
        self.trim.start -= skipped;
        frames -= skipped;
        if let Some(length) = self.trim.length {
            frames = frames.min(length.saturating_sub(self.frames));
        }
        if frames == 0 {
            return Ok(());
        }
        let samples = &samples[skipped as usize * channels..][..frames as usize * channels];
        self.admit(frames)?;
        self.mono.clear();
        if channels == 1 {
            self.mono.extend(samples.iter().copied().map(sanitize));
        } else {
            let scale = 1.0 / channels as f32;
            self.mono.extend(samples.chunks_exact(channels).map(|frame| sanitize(frame.iter().sum::<f32>() * scale)));
        }
        match &mut self.resampler {
            Some(resampler) => resampler.push(&self.mono, &mut self.out),
            None => self.out.extend_from_slice(&self.mono),
        }
        Ok(())
    }

    /// Refuses the frames that would take the audio past the cap, before they are stored.
    fn admit(&mut self, frames: u64) -> Result<(), AudioError> {
        let total = self.frames + frames;
        let seconds = total as f64 / f64::from(self.rate);
        if seconds > self.max_seconds {
            return Err(AudioError::TooLong { seconds, max: self.max_seconds });
        }
        self.frames = total;
        Ok(())
    }

    pub(crate) fn rate(&self) -> u32 {
        self.rate
    }

    pub(crate) fn seconds(&self) -> f64 {
        self.frames as f64 / f64::from(self.rate)
    }

    /// 16 kHz mono in [-1, 1]: the sinc filter can overshoot a full-scale input slightly, so the end is clamped.
    pub(crate) fn finish(mut self) -> Vec<f32> {
        if let Some(resampler) = self.resampler.take() {
            resampler.finish(&mut self.out);
        }
        for sample in &mut self.out {
            *sample = sample.clamp(-1.0, 1.0);
        }
        self.out
    }
}

/// Float WAV may carry NaN or infinities; the models must never see them.
fn sanitize(sample: f32) -> f32 {
    if sample.is_nan() { 0.0 } else { sample.clamp(-1.0, 1.0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stereo_is_averaged() {
        let mut sink = Sink::new(16_000, 10.0, Trim::default());
        sink.push_interleaved(&[0.5, 0.25, -1.0, 1.0], 2).unwrap();
        assert_eq!(sink.finish(), vec![0.375, 0.0]);
    }

    #[test]
    fn the_cap_refuses_before_storing() {
        let mut sink = Sink::new(16_000, 1.0, Trim::default());
        sink.push_interleaved(&[0.0; 16_000], 1).unwrap();
        let error = sink.push_interleaved(&[0.0; 2], 1).unwrap_err();
        assert!(matches!(error, AudioError::TooLong { max: 1.0, .. }), "{error:?}");
        assert_eq!(sink.seconds(), 1.0);
    }

    #[test]
    fn warm_up_and_padding_are_trimmed_across_packets() {
        let mut sink = Sink::new(16_000, 10.0, Trim { start: 3, length: Some(4) });
        sink.push_interleaved(&[0.1, 0.1], 1).unwrap();
        sink.push_interleaved(&[0.1, 0.2, 0.3], 1).unwrap();
        sink.push_interleaved(&[0.4, 0.5, 0.6, 0.7], 1).unwrap();
        assert_eq!(sink.seconds(), 4.0 / 16_000.0);
        assert_eq!(sink.finish(), vec![0.2, 0.3, 0.4, 0.5]);
    }

    #[test]
    fn nan_and_out_of_range_floats_are_cleaned() {
        let mut sink = Sink::new(16_000, 10.0, Trim::default());
        sink.push_interleaved(&[f32::NAN, 2.0, f32::NEG_INFINITY], 1).unwrap();
        assert_eq!(sink.finish(), vec![0.0, 1.0, -1.0]);
    }
}
