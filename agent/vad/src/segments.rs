//! Per-chunk probabilities -> speech segments, following silero's `get_speech_timestamps_from_probs`
//! (silero-vad 6.2.3, `utils_vad.py`) decision for decision, including its hysteresis (`neg_threshold`), the
//! max-speech split at the longest inner silence, and the padding pass that splits short gaps between
//! neighbours. A pure function, so it is tested on exact probability sequences against the Python output.

use crate::VadError;
use crate::model::CHUNK_SAMPLES;

const SAMPLES_PER_MS: i64 = 16;

/// Knobs of [`crate::SileroVad::speech_segments`]. `Default` is silero's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentParams {
    /// A chunk with probability at or above this starts (or continues) speech.
    pub threshold: f64,
    /// Inside speech, only chunks below this count as silence. `None`: `max(threshold - 0.15, 0.01)`.
    pub neg_threshold: Option<f64>,
    /// Segments not longer than this are dropped.
    pub min_speech_ms: u32,
    /// Silence must last this long to end a segment.
    pub min_silence_ms: u32,
    /// Each segment grows by this much on both sides (split evenly when neighbours are closer).
    pub speech_pad_ms: u32,
    /// Longer segments are split; `f64::INFINITY` never splits.
    pub max_speech_s: f64,
    /// Silences at least this long are split candidates when `max_speech_s` is hit.
    pub min_silence_at_max_speech_ms: u32,
    /// Split at the longest candidate silence (silero's default) rather than the last one.
    pub split_at_longest_silence: bool,
}

impl Default for SegmentParams {
    fn default() -> Self {
        SegmentParams {
            threshold: 0.5,
            neg_threshold: None,
            min_speech_ms: 250,
            min_silence_ms: 100,
            speech_pad_ms: 30,
            max_speech_s: f64::INFINITY,
            min_silence_at_max_speech_ms: 98,
            split_at_longest_silence: true,
        }
    }
}

impl SegmentParams {
    /// The four knobs most callers set; the rest keep silero's defaults.
    pub fn new(threshold: f64, min_speech_ms: u32, min_silence_ms: u32, speech_pad_ms: u32) -> Self {
        SegmentParams { threshold, min_speech_ms, min_silence_ms, speech_pad_ms, ..Self::default() }
    }

    pub(crate) fn validate(&self) -> Result<(), VadError> {
        let bad = |reason| Err(VadError::BadParams { reason });
        // Written so NaN fails every check.
        if !(self.threshold > 0.0 && self.threshold <= 1.0) {
            return bad("threshold must be in (0, 1]");
        }
        if self.neg_threshold.is_some_and(|neg| !(0.0..=self.threshold).contains(&neg)) {
            return bad("neg_threshold must be in [0, threshold]");
        }
        if self.max_speech_s.is_nan() || self.max_speech_s <= 0.0 {
            return bad("max_speech_s must be positive (use infinity for no limit)");
        }
        Ok(())
    }
}

/// A stretch of speech in samples at 16 kHz: `pcm[start..end]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpeechSegment {
    pub start: usize,
    pub end: usize,
}

impl SpeechSegment {
    pub fn start_ms(&self) -> u64 {
        self.start as u64 / SAMPLES_PER_MS as u64
    }
    pub fn end_ms(&self) -> u64 {
        self.end as u64 / SAMPLES_PER_MS as u64
    }
}

/// Segments from one probability per 512-sample chunk of an `audio_len`-sample signal.
pub fn segments_from_probabilities(
    probs: &[f32],
    audio_len: usize,
    params: &SegmentParams,
) -> Result<Vec<SpeechSegment>, VadError> {
    params.validate()?;
    let window = CHUNK_SAMPLES as i64;
    let audio_len = audio_len as i64;
    let threshold = params.threshold;
    let neg_threshold = params.neg_threshold.unwrap_or((threshold - 0.15).max(0.01));
    let min_speech = SAMPLES_PER_MS * i64::from(params.min_speech_ms);
    let min_silence = SAMPLES_PER_MS * i64::from(params.min_silence_ms);
    let pad = SAMPLES_PER_MS * i64::from(params.speech_pad_ms);
    let min_silence_at_max = SAMPLES_PER_MS * i64::from(params.min_silence_at_max_speech_ms);
    let max_speech = 16_000.0 * params.max_speech_s - window as f64 - 2.0 * pad as f64;
    let longest = params.split_at_longest_silence;

    // Sample positions use 0 as "unset", as silero does; chunk 0 can never set them (it starts speech or is
    // skipped), so 0 is never a real position here.
    let mut triggered = false;
    let mut start: i64 = 0; // meaningful while `triggered`
    let mut speeches: Vec<(i64, i64)> = Vec::new();
    let (mut temp_end, mut prev_end, mut next_start) = (0i64, 0i64, 0i64);
    let mut possible_ends: Vec<(i64, i64)> = Vec::new();

    for (i, &p) in probs.iter().enumerate() {
        let p = f64::from(p);
        let cur = window * i as i64;

        if p >= threshold && temp_end != 0 {
            let silence = cur - temp_end;
            if silence > min_silence_at_max {
                possible_ends.push((temp_end, silence));
            }
            temp_end = 0;
            if next_start < prev_end {
                next_start = cur;
            }
        }

        if p >= threshold && !triggered {
            triggered = true;
            start = cur;
            continue;
        }

        if triggered && (cur - start) as f64 > max_speech {
            if longest && !possible_ends.is_empty() {
                // First of the longest silences, as Python's max() picks.
                let &(end, silence) =
                    possible_ends.iter().min_by_key(|(_, d)| std::cmp::Reverse(*d)).expect("non-empty");
                speeches.push((start, end));
                next_start = end + silence;
                // Silero's condition, kept verbatim: still in that silence -> the next segment starts after it.
                if next_start < end + cur {
                    start = next_start;
                } else {
                    triggered = false;
                }
                (prev_end, next_start, temp_end) = (0, 0, 0);
                possible_ends.clear();
            } else if prev_end != 0 {
                speeches.push((start, prev_end));
                if next_start < prev_end {
                    triggered = false;
                } else {
                    start = next_start;
                }
                (prev_end, next_start, temp_end) = (0, 0, 0);
                possible_ends.clear();
            } else {
                speeches.push((start, cur));
                (prev_end, next_start, temp_end) = (0, 0, 0);
                triggered = false;
                possible_ends.clear();
                continue;
            }
        }

        if p < neg_threshold && triggered {
            if temp_end == 0 {
                temp_end = cur;
            }
            let silence_now = cur - temp_end;
            if !longest && silence_now > min_silence_at_max {
                prev_end = temp_end;
            }
            if silence_now < min_silence {
                continue;
            }
            if temp_end - start > min_speech {
                speeches.push((start, temp_end));
            }
            (prev_end, next_start, temp_end) = (0, 0, 0);
            triggered = false;
            possible_ends.clear();
        }
    }

    if triggered && audio_len - start > min_speech {
        speeches.push((start, audio_len));
    }

    let n = speeches.len();
    for i in 0..n {
        if i == 0 {
            speeches[0].0 = (speeches[0].0 - pad).max(0);
        }
        if i + 1 < n {
            let gap = speeches[i + 1].0 - speeches[i].1;
            if gap < 2 * pad {
                let half = gap.div_euclid(2);
                speeches[i].1 += half;
                speeches[i + 1].0 = (speeches[i + 1].0 - half).max(0);
            } else {
                speeches[i].1 = (speeches[i].1 + pad).min(audio_len);
                speeches[i + 1].0 = (speeches[i + 1].0 - pad).max(0);
            }
        } else {
            speeches[i].1 = (speeches[i].1 + pad).min(audio_len);
        }
    }

    Ok(speeches.into_iter().map(|(s, e)| SpeechSegment { start: s as usize, end: e as usize }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probs(pattern: &str) -> Vec<f32> {
        // One char per chunk: '#' speech (0.9), '.' silence (0.05), '~' in the hysteresis band (0.4).
        pattern
            .chars()
            .map(|c| match c {
                '#' => 0.9,
                '~' => 0.4,
                _ => 0.05,
            })
            .collect()
    }

    fn seg(start: usize, end: usize) -> SpeechSegment {
        SpeechSegment { start, end }
    }

    #[test]
    fn one_burst_is_padded_on_both_sides() {
        let p = probs("....########........");
        let got = segments_from_probabilities(&p, p.len() * 512, &SegmentParams::default()).unwrap();
        // Speech chunks 4..12; the first silent chunk (12) marks the end, padded by 480 samples.
        assert_eq!(got, vec![seg(4 * 512 - 480, 12 * 512 + 480)]);
    }

    #[test]
    fn the_hysteresis_band_keeps_speech_going() {
        let p = probs("..####~~~~####........");
        let got = segments_from_probabilities(&p, p.len() * 512, &SegmentParams::default()).unwrap();
        assert_eq!(got, vec![seg(2 * 512 - 480, 14 * 512 + 480)]);
    }

    #[test]
    fn short_bursts_are_dropped_and_speech_at_the_end_runs_to_the_end() {
        let p = probs("..##......##########");
        let got = segments_from_probabilities(&p, p.len() * 512 - 100, &SegmentParams::default()).unwrap();
        assert_eq!(got, vec![seg(10 * 512 - 480, 20 * 512 - 100)]);
    }

    #[test]
    fn bad_params_are_rejected_with_a_reason() {
        let p = SegmentParams { threshold: 1.5, ..SegmentParams::default() };
        let err = segments_from_probabilities(&[], 0, &p).unwrap_err();
        assert_eq!(err.category(), "bad_params");
        let p = SegmentParams { max_speech_s: f64::NAN, ..SegmentParams::default() };
        assert!(segments_from_probabilities(&[], 0, &p).is_err());
        assert_eq!(segments_from_probabilities(&[], 0, &SegmentParams::default()).unwrap(), vec![]);
    }
}
