//! Word timestamps from cross-attention, as OpenAI's `find_alignment` and faster-whisper's
//! `add_word_timestamps` compute them.
//!
//! ```text
//!  [sot…, notimestamps, text…, eot] ─▶ one decoder pass ─▶ scores of the alignment heads over the window's frames
//!    ─▶ softmax over frames ─▶ standardise each frame over tokens ─▶ median filter (7) along time ─▶ mean of heads
//!    ─▶ DTW on −matrix ─▶ the frame where each token starts ─▶ words (split on spaces / punctuation)
//! ```
use crate::error::WhisperError;
use crate::model::Decoder;
use crate::tokenizer::Tokenizer;
use crate::{SECONDS_PER_POSITION, Word};

const MEDIAN_FILTER_WIDTH: usize = 7;
/// faster-whisper's defaults for gluing punctuation to words.
const PREPEND_PUNCTUATIONS: &str = "\"'“¿([{-";
const APPEND_PUNCTUATIONS: &str = "\"'.。,，!！?？:：”)]}、";
const SENTENCE_END_MARKS: &str = ".。!！?？";

/// One word of a window, times relative to the window start.
#[derive(Clone, Debug, PartialEq)]
pub struct WordTiming {
    pub word: String,
    pub tokens: Vec<u32>,
    pub start: f64,
    pub end: f64,
    pub probability: f32,
}

pub(crate) fn find_alignment(
    decoder: &mut dyn Decoder,
    tokenizer: &Tokenizer,
    sot_sequence: &[u32],
    text_tokens: &[u32],
    num_frames: usize,
    heads: &[(usize, usize)],
    language: &str,
) -> Result<Vec<WordTiming>, WhisperError> {
    if text_tokens.is_empty() || heads.is_empty() {
        return Ok(Vec::new());
    }
    let mut tokens = sot_sequence.to_vec();
    tokens.push(tokenizer.no_timestamps);
    tokens.extend(text_tokens);
    tokens.push(tokenizer.eot);
    let frames = (num_frames / 2).max(1);
    let pass = decoder.align(&tokens, heads, frames, tokenizer.eot as usize)?;
    let n_tok = tokens.len();
    // Softmax over the frames, standardise over tokens, median filter over time, average the heads.
    let mut matrix = vec![0.0f32; n_tok * frames];
    for scores in &pass.scores {
        let mut w = scores.clone();
        for row in w.chunks_exact_mut(frames) {
            crate::linalg::softmax(row);
        }
        for f in 0..frames {
            let mean = (0..n_tok).map(|t| w[t * frames + f]).sum::<f32>() / n_tok as f32;
            let var = (0..n_tok).map(|t| (w[t * frames + f] - mean).powi(2)).sum::<f32>() / n_tok as f32;
            let std = var.sqrt().max(1e-12);
            for t in 0..n_tok {
                w[t * frames + f] = (w[t * frames + f] - mean) / std;
            }
        }
        for (row, out) in w.chunks_exact(frames).zip(matrix.chunks_exact_mut(frames)) {
            let filtered = median_filter(row, MEDIAN_FILTER_WIDTH);
            for (o, v) in out.iter_mut().zip(filtered) {
                *o += v / pass.scores.len() as f32;
            }
        }
    }
    // Rows from the notimestamps position to the last text token: each predicts the next text token.
    let first = sot_sequence.len();
    let rows = n_tok - 1 - first;
    let cost: Vec<f32> = matrix[first * frames..(first + rows) * frames].iter().map(|v| -v).collect();
    let path = dtw(&cost, rows, frames);
    // The time index where each text row is entered first.
    let mut jump_times = Vec::with_capacity(rows);
    let mut previous = usize::MAX;
    for &(i, j) in &path {
        if i != previous {
            jump_times.push(j as f64 * SECONDS_PER_POSITION);
            previous = i;
        }
    }
    let mut with_eot = text_tokens.to_vec();
    with_eot.push(tokenizer.eot);
    let words = tokenizer.split_to_words(&with_eot, language);
    if words.len() <= 1 {
        return Ok(Vec::new());
    }
    let text_probs = &pass.next_prob[first..first + text_tokens.len()];
    let mut out = Vec::with_capacity(words.len() - 1);
    let mut boundary = 0usize;
    for (word, toks) in words.iter().take(words.len() - 1) {
        let end = boundary + toks.len();
        let probability =
            text_probs[boundary..end.min(text_probs.len())].iter().sum::<f32>() / toks.len().max(1) as f32;
        out.push(WordTiming {
            word: word.clone(),
            tokens: toks.clone(),
            start: jump_times.get(boundary).copied().unwrap_or(0.0),
            end: jump_times.get(end).copied().unwrap_or_else(|| jump_times.last().copied().unwrap_or(0.0)),
            probability,
        });
        boundary = end;
    }
    Ok(out)
}

/// Median over a sliding window of `width` (odd), reflect-padded at the ends like the reference.
fn median_filter(row: &[f32], width: usize) -> Vec<f32> {
    let n = row.len();
    let half = width / 2;
    if n <= half {
        return row.to_vec();
    }
    let at = |i: isize| -> f32 {
        let mut i = i;
        if i < 0 {
            i = -i;
        }
        if i >= n as isize {
            i = 2 * (n as isize - 1) - i;
        }
        row[i.clamp(0, n as isize - 1) as usize]
    };
    let mut window = vec![0.0f32; width];
    (0..n as isize)
        .map(|c| {
            for (k, slot) in window.iter_mut().enumerate() {
                *slot = at(c - half as isize + k as isize);
            }
            window.sort_by(f32::total_cmp);
            window[half]
        })
        .collect()
}

/// Dynamic time warping over `cost[n][m]`; the path as `(row, column)` pairs from the start.
fn dtw(cost: &[f32], n: usize, m: usize) -> Vec<(usize, usize)> {
    let w = m + 1;
    let mut acc = vec![f32::INFINITY; (n + 1) * w];
    let mut trace = vec![-1i8; (n + 1) * w];
    acc[0] = 0.0;
    for j in 1..=m {
        for i in 1..=n {
            let c0 = acc[(i - 1) * w + j - 1];
            let c1 = acc[(i - 1) * w + j];
            let c2 = acc[i * w + j - 1];
            let (c, t) = if c0 < c1 && c0 < c2 {
                (c0, 0)
            } else if c1 < c0 && c1 < c2 {
                (c1, 1)
            } else {
                (c2, 2)
            };
            acc[i * w + j] = cost[(i - 1) * m + j - 1] + c;
            trace[i * w + j] = t;
        }
    }
    for j in 0..w {
        trace[j] = 2;
    }
    for i in 0..=n {
        trace[i * w] = 1;
    }
    let (mut i, mut j) = (n, m);
    let mut path = Vec::with_capacity(n + m);
    while i > 0 || j > 0 {
        path.push((i.wrapping_sub(1), j.wrapping_sub(1)));
        match trace[i * w + j] {
            0 => {
                i -= 1;
                j -= 1;
            }
            1 => i -= 1,
            _ => j -= 1,
        }
    }
    path.reverse();
    // The first entries can sit on the virtual row/column -1 (usize::MAX): drop them.
    path.retain(|&(i, j)| i != usize::MAX && j != usize::MAX);
    path
}

/// Truncates words that span a sentence boundary to twice the median word length; returns
/// `(median, max_duration)` for the segment-edge fixes.
pub(crate) fn clamp_long_words(alignment: &mut [WordTiming]) -> (f64, f64) {
    let mut durations: Vec<f64> = alignment.iter().map(|w| w.end - w.start).filter(|&d| d != 0.0).collect();
    let median = if durations.is_empty() {
        0.0
    } else {
        durations.sort_by(f64::total_cmp);
        let n = durations.len();
        if n % 2 == 1 { durations[n / 2] } else { (durations[n / 2 - 1] + durations[n / 2]) / 2.0 }
    };
    let median = median.min(0.7);
    let max_duration = median * 2.0;
    if !durations.is_empty() {
        for i in 1..alignment.len() {
            if alignment[i].end - alignment[i].start > max_duration {
                if SENTENCE_END_MARKS.contains(alignment[i].word.as_str()) {
                    alignment[i].end = alignment[i].start + max_duration;
                } else if SENTENCE_END_MARKS.contains(alignment[i - 1].word.as_str()) {
                    alignment[i].start = alignment[i].end - max_duration;
                }
            }
        }
    }
    (median, max_duration)
}

/// Glues opening punctuation to the next word and closing punctuation to the previous one.
pub(crate) fn merge_punctuations(alignment: &mut [WordTiming]) {
    let n = alignment.len();
    if n < 2 {
        return;
    }
    let (mut i, mut j) = (n as isize - 2, n - 1);
    while i >= 0 {
        let iu = i as usize;
        let previous = &alignment[iu];
        if previous.word.starts_with(' ') && PREPEND_PUNCTUATIONS.contains(previous.word.trim()) {
            let (word, tokens) = (previous.word.clone(), previous.tokens.clone());
            let following = &mut alignment[j];
            following.word = word + &following.word;
            following.tokens = [tokens, std::mem::take(&mut following.tokens)].concat();
            alignment[iu].word.clear();
            alignment[iu].tokens.clear();
        } else {
            j = iu;
        }
        i -= 1;
    }
    let (mut i, mut j) = (0usize, 1usize);
    while j < n {
        let following = &alignment[j];
        // Python's `following["word"] in appended` is a substring test: an emptied word matches too.
        if !alignment[i].word.ends_with(' ') && APPEND_PUNCTUATIONS.contains(following.word.as_str()) {
            let (word, tokens) = (following.word.clone(), following.tokens.clone());
            alignment[i].word.push_str(&word);
            alignment[i].tokens.extend(tokens);
            alignment[j].word.clear();
            alignment[j].tokens.clear();
        } else {
            i = j;
        }
        j += 1;
    }
}

/// faster-whisper's segment-edge heuristics: after a pause, a first word longer than twice the median is cut;
/// the segment's own timestamps win over an implausibly long first or last word, else the words set them.
pub(crate) fn fix_segment_edges(
    words: &mut [Word],
    seg_start: &mut f64,
    seg_end: &mut f64,
    last_speech: f64,
    median: f64,
    max_duration: f64,
) {
    if words[0].end - last_speech > median * 4.0
        && (words[0].end - words[0].start > max_duration
            || (words.len() > 1 && words[1].end - words[0].start > max_duration * 2.0))
    {
        if words.len() > 1 && words[1].end - words[1].start > max_duration {
            let boundary = (words[1].end / 2.0).max(words[1].end - max_duration);
            words[0].end = boundary;
            words[1].start = boundary;
        }
        words[0].start = (words[0].end - max_duration).max(0.0);
    }
    if *seg_start < words[0].end && *seg_start - 0.5 > words[0].start {
        words[0].start = (words[0].end - median).min(*seg_start).max(0.0);
    } else {
        *seg_start = words[0].start;
    }
    let last = words.len() - 1;
    if *seg_end > words[last].start && *seg_end + 0.5 < words[last].end {
        words[last].end = (words[last].start + median).max(*seg_end);
    } else {
        *seg_end = words[last].end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtw_follows_the_cheap_diagonal() {
        // Three rows, six columns: row r is cheap at columns 2r and 2r+1.
        let (n, m) = (3, 6);
        let cost: Vec<f32> = (0..n * m).map(|k| if (k % m) / 2 == k / m { -1.0 } else { 1.0 }).collect();
        let path = dtw(&cost, n, m);
        assert_eq!(path.first(), Some(&(0, 0)));
        assert_eq!(path.last(), Some(&(2, 5)));
        let entered: Vec<usize> = (0..n).map(|r| path.iter().find(|&&(i, _)| i == r).unwrap().1).collect();
        assert_eq!(entered, vec![0, 2, 4]);
    }

    #[test]
    fn median_filter_reflects_at_the_edges() {
        let row = [5.0, 1.0, 1.0, 9.0, 1.0, 1.0, 1.0];
        assert_eq!(median_filter(&row, 3), vec![1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]);
        assert_eq!(median_filter(&[1.0, 2.0], 7), vec![1.0, 2.0]);
    }

    #[test]
    fn punctuation_is_glued_to_words() {
        let w = |s: &str| WordTiming { word: s.into(), tokens: vec![1], start: 0.0, end: 0.1, probability: 1.0 };
        let mut a = vec![w(" \""), w(" Hello"), w(","), w(" world"), w(".")];
        merge_punctuations(&mut a);
        let words: Vec<&str> = a.iter().map(|x| x.word.as_str()).collect();
        assert_eq!(words, vec!["", " \" Hello,", "", " world.", ""]);
    }
}
