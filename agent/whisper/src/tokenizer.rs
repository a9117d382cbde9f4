//! Whisper's tokenizer: GPT-2 byte-level BPE from `tokenizer.json` (the `tokenizers` crate) plus the special
//! tokens, whose ids are read from the file rather than assumed (English-only and multilingual models differ).
//! Timestamp tokens are not in `tokenizer.json`; they follow `<|notimestamps|>` in 20 ms steps.
use crate::error::WhisperError;

/// Python's `string.punctuation`.
const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pub eot: u32,
    pub sot: u32,
    pub sot_prev: u32,
    pub no_speech: u32,
    pub no_timestamps: u32,
    pub timestamp_begin: u32,
    pub transcribe: Option<u32>,
    pub translate: Option<u32>,
    /// `(code, id)` of every `<|xx|>` language token, in id order.
    pub languages: Vec<(String, u32)>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").field("eot", &self.eot).field("languages", &self.languages.len()).finish()
    }
}

impl Tokenizer {
    pub fn from_bytes(json: &[u8]) -> Result<Self, WhisperError> {
        let corrupt = |reason: String| WhisperError::WeightsCorrupt { path: "tokenizer.json".into(), reason };
        let inner = tokenizers::Tokenizer::from_bytes(json).map_err(|e| corrupt(e.to_string()))?;
        let id = |t: &str| inner.token_to_id(t);
        let need = |t: &str| id(t).ok_or_else(|| corrupt(format!("no {t} token")));
        let no_timestamps = need("<|notimestamps|>")?;
        let no_speech = id("<|nospeech|>")
            .or_else(|| id("<|nocaptions|>"))
            .ok_or_else(|| corrupt("no <|nospeech|> token".into()))?;
        let mut languages: Vec<(String, u32)> = inner
            .get_added_vocabulary()
            .get_vocab()
            .iter()
            .filter_map(|(tok, &i)| {
                let code = tok.strip_prefix("<|")?.strip_suffix("|>")?;
                let is_lang = (2..=3).contains(&code.len()) && code.chars().all(|c| c.is_ascii_lowercase())
                    || code == "haw"
                    || code == "yue";
                is_lang.then(|| (code.to_string(), i))
            })
            .collect();
        languages.sort_by_key(|&(_, i)| i);
        languages.dedup();
        Ok(Self {
            eot: need("<|endoftext|>")?,
            sot: need("<|startoftranscript|>")?,
            sot_prev: need("<|startofprev|>")?,
            no_speech,
            no_timestamps,
            timestamp_begin: no_timestamps + 1,
            transcribe: id("<|transcribe|>"),
            translate: id("<|translate|>"),
            languages,
            inner,
        })
    }

    /// Text tokens of `text` (no special tokens).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, WhisperError> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| WhisperError::BadInput(format!("cannot tokenise the prompt: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `tokens`, skipping special and timestamp tokens.
    pub fn decode(&self, tokens: &[u32]) -> String {
        let text: Vec<u32> = tokens.iter().copied().filter(|&t| t < self.eot).collect();
        self.inner.decode(&text, false).unwrap_or_default()
    }

    pub fn language_id(&self, code: &str) -> Option<u32> {
        self.languages.iter().find(|(c, _)| c == code).map(|&(_, i)| i)
    }

    /// Splits text tokens into words the way Whisper does: at token boundaries that complete a UTF-8 character,
    /// then joining pieces that neither start with a space nor are punctuation. Languages written without spaces
    /// keep the character-level split.
    pub fn split_to_words(&self, tokens: &[u32], language: &str) -> Vec<(String, Vec<u32>)> {
        let pieces = self.split_on_unicode(tokens);
        if matches!(language, "zh" | "ja" | "th" | "lo" | "my" | "yue") {
            return pieces;
        }
        let mut words: Vec<(String, Vec<u32>)> = Vec::new();
        for (piece, toks) in pieces {
            let special = toks[0] >= self.eot;
            let with_space = piece.starts_with(' ');
            let trimmed = piece.trim();
            // Python's `piece.strip() in string.punctuation`: a substring test, so "" and runs like "?!" count.
            let punctuation = PUNCTUATION.contains(trimmed);
            match words.last_mut() {
                Some(last) if !(special || with_space || punctuation) => {
                    last.0.push_str(&piece);
                    last.1.extend(toks);
                }
                _ => words.push((piece, toks)),
            }
        }
        words
    }

    fn split_on_unicode(&self, tokens: &[u32]) -> Vec<(String, Vec<u32>)> {
        let mut out = Vec::new();
        let mut current = Vec::new();
        for &t in tokens {
            current.push(t);
            let text = if current[0] >= self.eot { String::from("\u{1}") } else { self.decode(&current) };
            if !text.contains('\u{FFFD}') {
                out.push((if current[0] >= self.eot { String::new() } else { text }, std::mem::take(&mut current)));
            }
        }
        if !current.is_empty() {
            let text = self.decode(&current);
            out.push((text, current));
        }
        out
    }
}
