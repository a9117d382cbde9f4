//! Which tokens go into each model call, and which call's label each token keeps.
//!
//! ```text
//!  tokens ─▶ sentences: after . ! ? followed by a space (not after "Dr." or "J."), and at line breaks
//!         ─▶ pack short sentences together up to PACK tokens
//!         ─▶ a sentence longer than MAX: windows of MAX tokens, OVERLAP shared, each starting on a word
//!         ─▶ each token is owned by one window (overlaps split in the middle)
//! ```
//! Why sentences and small windows: the model finds much less in long inputs. On presidio-evaluator
//! sentences joined twelve at a time, word-level recall of names and addresses was 0.60 in one
//! 510-token window, 0.73 in 64-token windows and 0.75 split at sentences, against 0.78 for each
//! sentence alone. (The Rampart authors' own runner scans 480-character windows for the same reason.)

/// Sentences are packed into one call while the call stays within this many tokens.
pub(crate) const PACK_TOKENS: usize = 32;
/// The longest window: a sentence longer than this is cut into overlapping windows.
pub(crate) const MAX_TOKENS: usize = 64;
/// Tokens shared by neighbouring windows of one long sentence; each side keeps half, so every token is
/// labelled with at least OVERLAP / 2 tokens of context on both sides.
pub(crate) const OVERLAP_TOKENS: usize = 16;

/// Padded tokens ([CLS] and [SEP] included) one model call may hold. Several short windows in one call
/// run the dense layers as larger matrix products; past ~150 tokens the activations outgrow the cache and
/// it gets slower again (measured on the bench transcript: CPU time -25% at ~4 windows a call, less with 8
/// or 16).
pub(crate) const BATCH_TOKENS: usize = 160;

/// Abbreviations whose period does not end a sentence: titles and the address words the model needs to
/// see next to their street or unit number ("Apt. 4", "St. Louis", "Dr. Lee").
const ABBREVIATIONS: [&str; 24] = [
    "mr", "mrs", "ms", "dr", "prof", "st", "ste", "apt", "ave", "rd", "blvd", "ln", "ct", "hwy", "mt", "ft", "jr",
    "sr", "no", "co", "inc", "dept", "vs", "etc",
];

/// Tokens `start..end` go to the model; the labels of `own_start..own_end` are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Window {
    pub start: usize,
    pub end: usize,
    pub own_start: usize,
    pub own_end: usize,
}

/// Plans the calls for tokens with byte `offsets` into `text` and pre-tokenizer `words` (one per token).
/// The owned ranges partition `0..offsets.len()` in order.
pub(crate) fn plan(text: &str, offsets: &[(usize, usize)], words: &[Option<u32>]) -> Vec<Window> {
    let mut windows = Vec::new();
    let mut pending: Option<(usize, usize)> = None;
    let mut start = 0;
    for end in sentence_ends(text, offsets) {
        match &mut pending {
            Some(packed) if end - packed.0 <= PACK_TOKENS => packed.1 = end,
            _ => {
                if let Some((a, b)) = pending.take() {
                    cut(a, b, words, &mut windows);
                }
                pending = Some((start, end));
            }
        }
        start = end;
    }
    if let Some((a, b)) = pending {
        cut(a, b, words, &mut windows);
    }
    windows
}

/// Windows grouped for one model call each, as indices into `windows`: sorted by length, so a call pads its
/// windows to a length close to each one's own, and grouped while the padded call stays within
/// BATCH_TOKENS.
pub(crate) fn batches(windows: &[Window]) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..windows.len()).collect();
    order.sort_by_key(|&i| windows[i].end - windows[i].start);
    let mut batches: Vec<Vec<usize>> = Vec::new();
    for i in order {
        // Sorted, so this window is the longest of the batch it joins: it sets the padded width.
        let width = windows[i].end - windows[i].start + 2;
        match batches.last_mut() {
            Some(batch) if (batch.len() + 1) * width <= BATCH_TOKENS => batch.push(i),
            _ => batches.push(vec![i]),
        }
    }
    batches
}

/// Token indices just after each sentence's last token; the last is `offsets.len()`.
fn sentence_ends<'a>(text: &'a str, offsets: &'a [(usize, usize)]) -> impl Iterator<Item = usize> + 'a {
    (0..offsets.len())
        .filter(move |&i| {
            let (start, end) = offsets[i];
            let Some(&(next, _)) = offsets.get(i + 1) else { return true };
            // Offsets are ordered, but a normaliser can make one character several tokens: never slice backwards.
            let gap = text.get(end..next.max(end)).unwrap_or("");
            if gap.contains('\n') {
                return true;
            }
            let terminator = matches!(text.get(start..end), Some("." | "!" | "?"));
            terminator && gap.starts_with(char::is_whitespace) && !after_abbreviation(text.get(..start).unwrap_or(""))
        })
        .map(|i| i + 1)
}

/// Whether the text before a period ends in an abbreviation or an initial ("J.").
fn after_abbreviation(before: &str) -> bool {
    let word = before.rsplit(|c: char| !c.is_alphanumeric()).next().unwrap_or("");
    word.chars().count() == 1 || ABBREVIATIONS.iter().any(|a| a.eq_ignore_ascii_case(word))
}

/// Tokens `a..b` as one window, or as overlapping windows of at most MAX_TOKENS.
fn cut(a: usize, b: usize, words: &[Option<u32>], windows: &mut Vec<Window>) {
    let first = windows.len();
    let mut start = a;
    loop {
        let end = (start + MAX_TOKENS).min(b);
        windows.push(Window { start, end, own_start: start, own_end: end });
        if end == b {
            break;
        }
        // Start the next window on a word's first piece, so its first label is not a "##" guess, unless
        // that word began more than an overlap earlier (a long unbroken string): then cut inside it, so
        // windows always advance by at least MAX - 2 * OVERLAP tokens and cost stays linear in the text.
        let natural = end - OVERLAP_TOKENS;
        let mut next = natural;
        while next > natural - OVERLAP_TOKENS && words[next].is_some() && words[next] == words[next - 1] {
            next -= 1;
        }
        start = if words[next].is_some() && words[next] == words[next - 1] { natural } else { next };
    }
    for k in first + 1..windows.len() {
        let split = (windows[k].start + windows[k - 1].end) / 2;
        windows[k - 1].own_end = split;
        windows[k].own_start = split;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Offsets and word ids for whitespace-separated tokens, each its own word, punctuation split off
    /// like the BERT pre-tokenizer does.
    fn tokens(text: &str) -> (Vec<(usize, usize)>, Vec<Option<u32>>) {
        let mut offsets = Vec::new();
        let mut start = None;
        for (i, c) in text.char_indices().chain([(text.len(), ' ')]) {
            if c.is_alphanumeric() {
                start.get_or_insert(i);
                continue;
            }
            if let Some(s) = start.take() {
                offsets.push((s, i));
            }
            if !c.is_whitespace() && i < text.len() {
                offsets.push((i, i + c.len_utf8()));
            }
        }
        let words = (0..offsets.len() as u32).map(Some).collect();
        (offsets, words)
    }

    fn owned(windows: &[Window]) -> Vec<(usize, usize)> {
        windows.iter().map(|w| (w.own_start, w.own_end)).collect()
    }

    #[test]
    fn short_sentences_pack_into_one_window() {
        let text = "Hi. I am Ann Lee. I live in Boise.";
        let (offsets, words) = tokens(text);
        assert_eq!(
            plan(text, &offsets, &words),
            [Window { start: 0, end: offsets.len(), own_start: 0, own_end: offsets.len() }]
        );
    }

    #[test]
    fn sentences_that_do_not_fit_together_get_their_own_windows() {
        let long = "word ".repeat(20);
        let text = format!("{long}end. {long}end. {long}end.");
        let (offsets, words) = tokens(&text);
        let windows = plan(&text, &offsets, &words);
        assert_eq!(owned(&windows), [(0, 22), (22, 44), (44, 66)]);
        assert!(windows.iter().all(|w| (w.start, w.end) == (w.own_start, w.own_end)));
    }

    #[test]
    fn abbreviations_initials_and_decimals_do_not_end_sentences() {
        let text = "Dr. J. Lee lives at 4 St. Louis Ave. and paid 3.5 dollars";
        let (offsets, _) = tokens(text);
        assert_eq!(sentence_ends(text, &offsets).collect::<Vec<_>>(), [offsets.len()]);
    }

    #[test]
    fn line_breaks_and_questions_end_sentences() {
        let text = "Where? Here\nnow";
        let (offsets, _) = tokens(text);
        assert_eq!(sentence_ends(text, &offsets).collect::<Vec<_>>(), [2, 3, 4]);
    }

    #[test]
    fn a_long_sentence_is_cut_into_overlapping_windows_owning_each_token_once() {
        let text = "word ".repeat(150);
        let (offsets, words) = tokens(&text);
        let windows = plan(&text, &offsets, &words);
        let ranges: Vec<(usize, usize)> = windows.iter().map(|w| (w.start, w.end)).collect();
        assert_eq!(ranges, [(0, 64), (48, 112), (96, 150)]);
        assert_eq!(owned(&windows), [(0, 56), (56, 104), (104, 150)]);
    }

    #[test]
    fn windows_start_on_a_word_first_piece() {
        // 80 tokens; tokens 46..50 are one word in four pieces, across the natural start (48).
        let offsets: Vec<(usize, usize)> = (0..80).map(|i| (i, i + 1)).collect();
        let text = "x".repeat(80);
        let words: Vec<Option<u32>> = (0..80u32).map(|i| Some(if (46..50).contains(&i) { 46 } else { i })).collect();
        let windows = plan(&text, &offsets, &words);
        assert_eq!(windows[1].start, 46);
        assert_eq!(owned(&windows), [(0, 55), (55, 80)]);
    }

    #[test]
    fn a_word_longer_than_the_overlap_is_cut_where_it_falls() {
        let offsets: Vec<(usize, usize)> = (0..200).map(|i| (i, i + 1)).collect();
        let text = "x".repeat(200);
        let words = vec![Some(0); 200];
        let starts: Vec<usize> = plan(&text, &offsets, &words).iter().map(|w| w.start).collect();
        assert_eq!(starts, [0, 48, 96, 144]);
    }

    fn window(start: usize, end: usize) -> Window {
        Window { start, end, own_start: start, own_end: end }
    }

    #[test]
    fn batches_group_windows_of_similar_length_within_the_token_budget() {
        // Lengths 30, 10, 62, 12, 28: sorted 10, 12, 28, 30, 62. Padded widths (+2) 12, 14, 30, 32, 64.
        let windows = [window(0, 30), window(30, 40), window(40, 102), window(102, 114), window(114, 142)];
        // 10, 12, 28, 30 fit 4 x 32 = 128 <= 160; adding 62 would make 5 x 64.
        assert_eq!(batches(&windows), [vec![1, 3, 4, 0], vec![2]]);
    }

    #[test]
    fn two_long_windows_share_a_call_three_do_not() {
        assert_eq!(batches(&[window(0, 64), window(64, 128), window(128, 192)]), [vec![0, 1], vec![2]]);
    }

    #[test]
    fn no_tokens_no_windows() {
        assert!(plan("", &[], &[]).is_empty());
    }
}
