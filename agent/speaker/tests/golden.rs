//! The CPU reference against vectors written by scripts/make_golden.py from the original Resemblyzer code.

mod common;

use infergate_speaker::frontend::{self, Limits};
use infergate_speaker::{CpuEncoder, EmbeddingBackend};

const CASES: [&str; 4] = ["noise_sines_2s", "quiet_chirpish_3s", "loud_no_gain_2_5s", "short_0_8s"];
/// The bar for the CPU path against the Python model.
const EMBEDDING_TOLERANCE: f32 = 1e-4;

#[test]
fn partial_slices_match_resemblyzer() {
    let meta = common::read_json("meta.json");
    for case in meta["partial_slices"].as_array().unwrap() {
        let n = case["n_samples"].as_u64().unwrap() as usize;
        let expected: Vec<usize> =
            case["mel"].as_array().unwrap().iter().map(|r| r[0].as_u64().unwrap() as usize).collect();
        assert_eq!(frontend::partial_starts(n), expected, "n_samples = {n}");
        for r in case["mel"].as_array().unwrap() {
            assert_eq!(r[1].as_u64().unwrap() - r[0].as_u64().unwrap(), 160);
        }
    }
}

#[test]
fn cpu_matches_resemblyzer_goldens() {
    let Some(weights) = common::weights() else {
        return;
    };
    let encoder = CpuEncoder::new(weights);
    let limits = Limits { min_samples: 1, ..Limits::default() };
    for name in CASES {
        let golden = common::read_json(&format!("{name}.json"));
        let pcm = common::synth(&golden["generator"]);

        // The generator reproduces the Python input exactly.
        assert_eq!(pcm.len() as u64, golden["n_samples"].as_u64().unwrap(), "{name}: length");
        assert_eq!(&pcm[..4], common::floats(&golden["input_head"]).as_slice(), "{name}: first samples");
        let sum: f64 = pcm.iter().map(|&v| f64::from(v)).sum();
        let want_sum = golden["input_sum"].as_f64().unwrap();
        assert!((sum - want_sum).abs() <= 1e-9 * want_sum.abs().max(1.0), "{name}: input sum {sum} vs {want_sum}");

        let gain = frontend::volume_gain(&pcm);
        let want_gain = golden["gain"].as_f64().unwrap();
        assert!((gain - want_gain).abs() <= 1e-5 * want_gain, "{name}: gain {gain} vs {want_gain}");

        let prepared = frontend::prepare(&pcm, &limits).unwrap();
        let want_starts: Vec<usize> =
            golden["mel_slices"].as_array().unwrap().iter().map(|r| r[0].as_u64().unwrap() as usize).collect();
        assert_eq!(prepared.partial_starts, want_starts, "{name}: partial layout");

        // Mel power spans orders of magnitude; compare each value relative to its frame's peak band.
        let mel = encoder.mel_frames(&prepared);
        let mut worst_mel = 0.0f32;
        for (index, frame) in golden["mel_frames"].as_object().unwrap() {
            let t: usize = index.parse().unwrap();
            let want = common::floats(frame);
            if t * 40 >= mel.len() {
                continue; // frames past the last partial are not computed; none of them feed the model
            }
            let got = &mel[t * 40..(t + 1) * 40];
            let peak = want.iter().fold(0.0f32, |m, &v| m.max(v.abs())).max(f32::MIN_POSITIVE);
            for (band, (g, w)) in got.iter().zip(&want).enumerate() {
                let err = (g - w).abs() / peak;
                worst_mel = worst_mel.max(err);
                assert!(err <= 1e-4, "{name}: mel frame {t} band {band}: {g} vs {w} (peak {peak})");
            }
        }

        let out = encoder.embed_prepared(std::slice::from_ref(&prepared)).unwrap();
        let want_partials = golden["partial_embeddings"].as_array().unwrap();
        assert_eq!(out.partial_embeddings[0].len(), want_partials.len(), "{name}: partial count");
        let mut worst = 0.0f32;
        for (p, (got, want)) in out.partial_embeddings[0].iter().zip(want_partials).enumerate() {
            for (d, (g, w)) in got.iter().zip(common::floats(want)).enumerate() {
                worst = worst.max((g - w).abs());
                assert!((g - w).abs() <= EMBEDDING_TOLERANCE, "{name}: partial {p} dim {d}: {g} vs {w}");
            }
        }
        for (d, (g, w)) in out.embeddings[0].iter().zip(common::floats(&golden["embedding"])).enumerate() {
            worst = worst.max((g - w).abs());
            assert!((g - w).abs() <= EMBEDDING_TOLERANCE, "{name}: embedding dim {d}: {g} vs {w}");
        }
        println!("{name}: max |diff| embedding {worst:.2e}, mel (relative to frame peak) {worst_mel:.2e}");
    }
}
