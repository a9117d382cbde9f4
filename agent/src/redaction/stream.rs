//! Redaction on a stream: every segment is redacted before it leaves the agent, with a short hold-back so a
//! number spoken across a segment cut ("my card is 4111 1111" | "1111 1111 ...") is seen whole.
//!
//! The choice (documented in docs/redaction.md): partials are redacted, not suppressed. A segment's trailing
//! run of numeral words (digits, spoken digits, separators) is held back and sent with the next segment, or
//! with the final result; a redacted span that reaches into that run is held back with it. At most
//! [`MAX_HELD_WORDS`] are held, so a long recitation of numbers still flows. With audio redaction, the audio
//! is held back to the same instant, so no frame leaves before the decision about its words.
use super::Counts;
use super::audio;
use super::transcript::Piece;
use crate::backend::TimedWord;
use infergate_crds::redaction::AudioRedaction;
use infergate_redact::{ModelError, Redactor};

/// Held-back words at most: longer runs are redacted as they stand (a card number is at most 19 digits).
pub const MAX_HELD_WORDS: usize = 24;
/// Released words kept (in memory only) as context for the next segment's detection: the cue in "my card
/// number is | 4111 ..." was released with the previous segment, and the number is not a card without it.
const CONTEXT_WORDS: usize = 12;

/// What a segment releases.
#[derive(Debug, Default, PartialEq)]
pub struct Released {
    /// The redacted text released now (may be empty while a trailing number is held).
    pub text: String,
    pub words: Vec<TimedWord>,
    pub counts: Counts,
    /// Redacted PCM16 audio released now and its start (stream seconds), when audio redaction is on.
    pub audio: Option<(Vec<u8>, f64)>,
}

pub struct StreamRedaction {
    redactor: Redactor,
    audio: AudioRedaction,
    held: Vec<TimedWord>,
    /// The last released words, unredacted: detection context only, never sent again.
    context: Vec<TimedWord>,
    /// Audio not yet released, starting at `audio_from` seconds.
    pcm: Vec<i16>,
    audio_from: f64,
}

impl StreamRedaction {
    pub fn new(redactor: Redactor, audio: AudioRedaction) -> Self {
        StreamRedaction { redactor, audio, held: Vec::new(), context: Vec::new(), pcm: Vec::new(), audio_from: 0.0 }
    }

    pub fn audio(&self) -> AudioRedaction {
        self.audio
    }

    /// One segment's result: its text (used when the backend gives no word times), its words (stream
    /// times), and its audio (PCM16 little-endian, from `start` to `end` seconds).
    pub fn push(
        &mut self,
        text: &str,
        words: Vec<TimedWord>,
        pcm: &[u8],
        start: f64,
        end: f64,
    ) -> Result<Released, ModelError> {
        let words = if words.is_empty() { untimed_words(text, start, end) } else { words };
        if self.audio != AudioRedaction::Off {
            if self.pcm.is_empty() {
                self.audio_from = start;
            }
            self.pcm.extend(audio::pcm16_from_le(pcm));
        }
        let mut all = std::mem::take(&mut self.held);
        all.extend(words);
        self.release(all, false, end)
    }

    /// The end of the stream: everything still held is released.
    pub fn finish(&mut self, end: f64) -> Result<Released, ModelError> {
        let all = std::mem::take(&mut self.held);
        self.release(all, true, end)
    }

    fn release(&mut self, words: Vec<TimedWord>, last: bool, end: f64) -> Result<Released, ModelError> {
        let first = self.context.len();
        let mut all = std::mem::take(&mut self.context);
        all.extend(words);
        let texts: Vec<&str> = all.iter().map(|w| w.word.trim()).collect();
        let out = self.redactor.try_redact_words(&texts)?;
        let ranges = super::transcript::word_ranges(&texts);
        let mut cut = if last { all.len() } else { trailing_numeral_run(&texts) };
        if all.len() - cut > MAX_HELD_WORDS {
            cut = all.len();
        }
        cut = cut.max(first);
        // A redacted span reaching into the held run is held with it (its words are decided together).
        while cut < all.len() {
            let held_from = ranges[cut].start;
            let Some(span) = out.redacted.spans.iter().find(|s| s.start < held_from && s.end > held_from) else {
                break;
            };
            match ranges.iter().position(|r| r.end > span.start) {
                Some(start) if start < cut && start >= first => cut = start,
                _ => break,
            }
        }
        let mut released = Released::default();
        let mut muted = Vec::new();
        for piece in super::transcript::pieces(&out, &ranges, first, cut) {
            match piece {
                Piece::Word(i) => released.words.push(all[i].clone()),
                Piece::Redacted { first, last, replacement, entity } => {
                    if let Some(entity) = entity {
                        *released.counts.entry(entity).or_insert(0) += 1;
                    }
                    let (start, end) = (all[first].start, all[last].end);
                    if !replacement.is_empty() {
                        released.words.push(TimedWord { word: format!(" {replacement}"), start, end });
                    }
                    muted.push((start, end));
                }
            }
        }
        released.text = released.words.iter().map(|w| w.word.trim()).collect::<Vec<_>>().join(" ");
        self.held = all[cut..].to_vec();
        self.context = all[cut.saturating_sub(CONTEXT_WORDS).max(0)..cut].to_vec();
        if self.audio != AudioRedaction::Off {
            let until = if cut < all.len() { all[cut].start } else { end };
            let samples = (((until - self.audio_from) * f64::from(audio::SAMPLE_RATE)).floor().max(0.0) as usize)
                .min(self.pcm.len());
            let mut out_pcm: Vec<i16> = self.pcm.drain(..samples).collect();
            audio::mute(&mut out_pcm, &muted, self.audio, self.audio_from);
            let from = self.audio_from;
            self.audio_from += samples as f64 / f64::from(audio::SAMPLE_RATE);
            if !out_pcm.is_empty() {
                released.audio = Some((audio::pcm16_to_le(&out_pcm), from));
            }
        }
        Ok(released)
    }
}

/// Where a segment's trailing run of numeral words begins (its length when there is none).
fn trailing_numeral_run(words: &[&str]) -> usize {
    let mut cut = words.len();
    while cut > 0 && is_numeral_word(words[cut - 1]) {
        cut -= 1;
    }
    cut
}

/// A word that could be part of a number: digits and separators, or a spoken digit ("four", "oh",
/// "double").
fn is_numeral_word(word: &str) -> bool {
    let bare = word.trim_matches(|c: char| c.is_ascii_punctuation());
    if bare.is_empty() {
        return !word.is_empty();
    }
    if bare.chars().all(|c| c.is_ascii_digit() || matches!(c, '-' | '.' | '/' | '+' | '(' | ')')) {
        return true;
    }
    const SPOKEN: &[&str] = &[
        "zero", "oh", "o", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "double", "triple",
        "ten", "eleven", "twelve", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
        "hundred", "thousand", "dash",
    ];
    SPOKEN.iter().any(|s| s.eq_ignore_ascii_case(bare))
}

/// A backend that gives no word times: the words of its text, all timed as the whole segment.
fn untimed_words(text: &str, start: f64, end: f64) -> Vec<TimedWord> {
    text.split_whitespace().map(|w| TimedWord { word: format!(" {w}"), start, end }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use infergate_redact::{EntitySet, Policy};

    fn words(text: &str, start: f64) -> Vec<TimedWord> {
        text.split_whitespace()
            .enumerate()
            .map(|(i, w)| TimedWord {
                word: format!(" {w}"),
                start: start + i as f64 * 0.3,
                end: start + i as f64 * 0.3 + 0.25,
            })
            .collect()
    }

    fn stream(audio: AudioRedaction) -> StreamRedaction {
        StreamRedaction::new(Redactor::new(Policy::new(EntitySet::PII)), audio)
    }

    #[test]
    fn a_card_number_split_over_segments_never_leaks() {
        let mut s = stream(AudioRedaction::Off);
        let first = s.push("", words("my card is 4111 1111", 0.0), &[], 0.0, 2.0).unwrap();
        assert_eq!(first.text, "my card is", "the trailing digits are held back");
        let second = s.push("", words("1111 1111 thanks", 2.0), &[], 2.0, 4.0).unwrap();
        assert_eq!(second.text, "[CREDIT_CARD] thanks");
        assert_eq!(second.counts.values().sum::<u32>(), 1);
        let fin = s.finish(4.0).unwrap();
        assert!(fin.text.is_empty());
    }

    #[test]
    fn a_number_held_to_the_end_keeps_its_cue() {
        let mut s = stream(AudioRedaction::Off);
        let first = s.push("", words("my card number is 4111, 22223334444", 0.0), &[], 0.0, 3.0).unwrap();
        assert_eq!(first.text, "my card number is");
        let last = s.finish(3.0).unwrap();
        assert_eq!(last.text, "[CREDIT_CARD]", "the cue released earlier still counts");
        assert_eq!(last.counts.get(&infergate_redact::Entity::CreditCard), Some(&1));
    }

    #[test]
    fn held_words_come_out_at_the_end_and_long_runs_flow() {
        let mut s = stream(AudioRedaction::Off);
        assert_eq!(s.push("", words("room 12", 0.0), &[], 0.0, 1.0).unwrap().text, "room");
        assert_eq!(s.finish(1.0).unwrap().text, "12");
        let long = (0..30).map(|i| (i % 10).to_string()).collect::<Vec<_>>().join(" ");
        let mut s = stream(AudioRedaction::Off);
        let out = s.push("", words(&long, 0.0), &[], 0.0, 10.0).unwrap();
        assert!(!out.text.is_empty(), "a run longer than the hold-back is released");
    }

    #[test]
    fn audio_is_released_up_to_the_held_words_and_muted_under_redactions() {
        let mut s = stream(AudioRedaction::Silence);
        let pcm: Vec<u8> = (0..32_000).flat_map(|_| 1000i16.to_le_bytes()).collect();
        let w = words("ssn 536 22 8726 ok", 0.0);
        let out = s.push("", w.clone(), &pcm, 0.0, 2.0).unwrap();
        let (audio, from) = out.audio.expect("audio released");
        assert_eq!(from, 0.0);
        let samples = audio::pcm16_from_le(&audio);
        assert_eq!(samples.len(), 32_000, "nothing held: the segment ends in a word");
        let muted_at = (w[1].start * 16_000.0) as usize + 10;
        assert_eq!(samples[muted_at], 0);
        assert_eq!(samples[100], 1000);
    }

    #[test]
    fn numeral_words() {
        for w in ["4111", "four,", "oh", "Double", "(555)", "-"] {
            assert!(is_numeral_word(w), "{w}");
        }
        for w in ["card", "is", "four-wheel"] {
            assert!(!is_numeral_word(w), "{w}");
        }
    }
}
