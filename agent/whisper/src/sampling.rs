//! Token choice and the quality signals of a decode: argmax or seeded sampling, log-softmax, and the compression
//! ratio the temperature fallback uses to catch repetition loops.

pub(crate) fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

pub(crate) fn log_sum_exp(v: &[f32]) -> f32 {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return max;
    }
    max + v.iter().map(|&x| (x - max).exp()).sum::<f32>().ln()
}

pub(crate) fn log_softmax(v: &[f32]) -> Vec<f32> {
    let lse = log_sum_exp(v);
    v.iter().map(|&x| x - lse).collect()
}

pub(crate) fn softmax_at(v: &[f32], i: usize) -> f32 {
    (v[i] - log_sum_exp(v)).exp()
}

/// xorshift64*: small, seedable, good enough for choosing tokens.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub(crate) fn sample(logits: &[f32], temperature: f32, rng: &mut Rng) -> u32 {
    let scaled: Vec<f32> = logits.iter().map(|&l| l / temperature).collect();
    let lse = log_sum_exp(&scaled);
    let mut u = rng.next_f64();
    for (i, &l) in scaled.iter().enumerate() {
        u -= f64::from((l - lse).exp());
        if u <= 0.0 {
            return i as u32;
        }
    }
    argmax(logits)
}

/// `len(text) / len(zlib.compress(text))`: high for the repetition loops Whisper falls into.
pub(crate) fn compression_ratio(text: &str) -> f32 {
    use std::io::Write;
    if text.is_empty() {
        return 0.0;
    }
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    let compressed = enc.write_all(text.as_bytes()).and_then(|()| enc.finish()).map(|c| c.len()).unwrap_or(text.len());
    text.len() as f32 / compressed.max(1) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_ratio_flags_repetition() {
        assert!(compression_ratio("Hello, my name is Margaret.") < 1.5);
        assert!(compression_ratio(&"thank you ".repeat(40)) > 2.4);
    }

    #[test]
    fn sampling_is_seeded() {
        let logits = vec![0.0f32, 1.0, 2.0, 0.5];
        let a: Vec<u32> = (0..20).scan(Rng(7), |r, _| Some(sample(&logits, 1.0, r))).collect();
        let b: Vec<u32> = (0..20).scan(Rng(7), |r, _| Some(sample(&logits, 1.0, r))).collect();
        assert_eq!(a, b);
        assert!(a.iter().any(|&t| t != 2), "temperature 1 explores");
    }
}
