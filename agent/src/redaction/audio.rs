//! Audio redaction: the redacted words' time spans replaced by silence or a 1 kHz tone, every other sample
//! left exactly as it was. The agent returns the audio it transcribed (16 kHz mono PCM16) and keeps nothing.
use infergate_crds::redaction::AudioRedaction;

pub const SAMPLE_RATE: u32 = 16_000;
/// The tone's frequency: the broadcast "bleep".
const BEEP_HZ: f64 = 1000.0;
/// -12 dBFS: clearly audible, far from clipping.
const BEEP_AMPLITUDE: f64 = 0.25 * 32767.0;

/// Replaces each `(start, end)` span (seconds) of `pcm` per `how`. A span is widened outwards to whole
/// samples, so nothing of a redacted word survives rounding; samples outside every span are not touched.
pub fn mute(pcm: &mut [i16], spans: &[(f64, f64)], how: AudioRedaction, offset_seconds: f64) {
    if how == AudioRedaction::Off {
        return;
    }
    let rate = f64::from(SAMPLE_RATE);
    for &(start, end) in spans {
        let (start, end) = (start - offset_seconds, end - offset_seconds);
        if !(start.is_finite() && end.is_finite()) || end <= 0.0 {
            continue;
        }
        let first = ((start.max(0.0) * rate).floor() as usize).min(pcm.len());
        let last = ((end * rate).ceil() as usize).min(pcm.len());
        for (i, sample) in pcm[first..last].iter_mut().enumerate() {
            *sample = match how {
                AudioRedaction::Beep => {
                    let t = (first + i) as f64 / rate;
                    (BEEP_AMPLITUDE * (2.0 * std::f64::consts::PI * BEEP_HZ * t).sin()).round() as i16
                }
                _ => 0,
            };
        }
    }
}

/// Decoded samples (-1..1) as PCM16, the exact inverse of how 16-bit input was decoded (`i / 32768`).
pub fn to_pcm16(samples: &[f32]) -> Vec<i16> {
    samples.iter().map(|s| (s * 32768.0).round().clamp(-32768.0, 32767.0) as i16).collect()
}

/// A 16 kHz mono PCM16 RIFF WAVE file.
pub fn wav(pcm: &[i16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(44 + pcm.len() * 2);
    out.extend_from_slice(&infergate_gate::audio::wav_header((pcm.len() * 2) as u32));
    for s in pcm {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

pub fn pcm16_from_le(bytes: &[u8]) -> Vec<i16> {
    bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect()
}

pub fn pcm16_to_le(pcm: &[i16]) -> Vec<u8> {
    pcm.iter().flat_map(|s| s.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_spans_change() {
        let original: Vec<i16> = (0..16_000).map(|i| (i % 300) as i16 + 100).collect();
        let mut pcm = original.clone();
        mute(&mut pcm, &[(0.25, 0.5)], AudioRedaction::Silence, 0.0);
        assert!(pcm[4000..8000].iter().all(|s| *s == 0));
        assert_eq!(pcm[..4000], original[..4000]);
        assert_eq!(pcm[8000..], original[8000..]);
        let mut beeped = original.clone();
        mute(&mut beeped, &[(0.25, 0.5)], AudioRedaction::Beep, 0.0);
        let peak = beeped[4000..8000].iter().map(|s| s.unsigned_abs()).max().unwrap();
        assert!((8000..=8192).contains(&peak), "{peak}");
        assert_eq!(beeped[8000..], original[8000..]);
        // Stream offsets, spans past the end and nonsense times.
        let mut tail = original.clone();
        mute(&mut tail, &[(10.9, 12.0), (f64::NAN, 1.0), (-2.0, -1.0)], AudioRedaction::Silence, 10.0);
        assert!(tail[14_400..].iter().all(|s| *s == 0));
        assert_eq!(tail[..14_400], original[..14_400]);
    }

    #[test]
    fn pcm16_round_trips_through_decoded_floats() {
        let pcm: Vec<i16> = vec![-32768, -1, 0, 1, 12345, 32767];
        let floats: Vec<f32> = pcm.iter().map(|s| f32::from(*s) / 32768.0).collect();
        assert_eq!(to_pcm16(&floats), pcm);
        assert_eq!(pcm16_from_le(&pcm16_to_le(&pcm)), pcm);
        assert_eq!(wav(&pcm).len(), 44 + 12);
    }
}
