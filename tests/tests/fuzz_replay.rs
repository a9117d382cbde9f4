//! Replays every fuzz target's committed corpus and crash regressions through the target's own body, without
//! libFuzzer: a crash that was fixed cannot come back unnoticed (docs/fuzzing.md).
//!
//! ```text
//!  fuzz/corpus/<target>/*  ─┐
//!  fuzz/artifacts/<target>/* ┴─▶ fuzz/src/lib.rs <target>(bytes)  (the same function the libFuzzer binary runs)
//! ```
//! Set `INFERGATE_WRITE_FUZZ_SEEDS=1` to (re)write the seeds that are built in code.
use std::path::{Path, PathBuf};

// The bodies are compiled here as a module rather than linked as a crate: the fuzz crate is its own workspace
// (so the main build never builds libFuzzer), and this file is what both builds share.
#[allow(dead_code)]
#[path = "../../fuzz/src/lib.rs"]
mod bodies;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return vec![] };
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

/// Runs `body` on every corpus and artifact file of `target`; fails naming each input that panics.
fn replay(target: &str, body: fn(&[u8])) {
    let corpus = files_under(&fuzz_dir().join("corpus").join(target));
    assert!(!corpus.is_empty(), "fuzz/corpus/{target} has no seeds");
    let regressions = files_under(&fuzz_dir().join("artifacts").join(target));
    let from_files = corpus
        .iter()
        .chain(&regressions)
        .map(|path| (path.display().to_string(), std::fs::read(path).expect("corpus file is readable")));
    let in_memory = bodies::runtime_seeds()
        .into_iter()
        .filter(|(t, _, _)| *t == target)
        .map(|(_, name, bytes)| (format!("runtime seed {name}"), bytes));
    let failures: Vec<String> = from_files
        .chain(in_memory)
        .filter_map(|(path, bytes)| {
            std::panic::catch_unwind(|| body(&bytes)).err().map(|panic| {
                let message = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(non-string panic)");
                format!("{path}: {message}")
            })
        })
        .collect();
    assert!(failures.is_empty(), "{target}: {} input(s) panic:\n  {}", failures.len(), failures.join("\n  "));
}

/// One test per target, and the list [`every_target_is_replayed`] checks against.
macro_rules! replay_tests {
    ($($target:ident),* $(,)?) => {
        const REPLAYED: &[&str] = &[$(stringify!($target)),*];
        $(
            #[test]
            fn $target() {
                replay(stringify!($target), bodies::$target);
            }
        )*
    };
}

replay_tests!(
    key_format,
    audio_inspect,
    audio_decode,
    ct2_weights,
    ws_session,
    manifest_compile,
    redact,
    jwt,
    grpc_stream
);

#[test]
fn every_target_is_replayed_and_has_a_libfuzzer_binary() {
    let mut declared: Vec<&str> = bodies::TARGETS.iter().map(|(name, _)| *name).collect();
    declared.sort();
    let mut replayed = REPLAYED.to_vec();
    replayed.sort();
    assert_eq!(replayed, declared, "tests/tests/fuzz_replay.rs replays exactly the targets of fuzz/src/lib.rs");
    let mut binaries: Vec<String> = files_under(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .filter_map(|p| p.file_stem().and_then(|s| s.to_str()).map(str::to_string))
        .collect();
    binaries.sort();
    assert_eq!(binaries, declared, "every target has a fuzz/fuzz_targets/<target>.rs and nothing else does");
}

#[test]
fn seeds_built_in_code_are_committed_unchanged() {
    let write = std::env::var_os("INFERGATE_WRITE_FUZZ_SEEDS").is_some();
    let mut stale = vec![];
    for (target, name, bytes) in bodies::generated_seeds() {
        let path = fuzz_dir().join("corpus").join(target).join(name);
        if std::fs::read(&path).ok().as_deref() == Some(bytes.as_slice()) {
            continue;
        }
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        } else {
            stale.push(format!("fuzz/corpus/{target}/{name}"));
        }
    }
    assert!(
        stale.is_empty(),
        "seeds differ from fuzz/src/lib.rs generated_seeds(): {stale:?}; rewrite them with \
         INFERGATE_WRITE_FUZZ_SEEDS=1 cargo test -p infergate-tests --test fuzz_replay"
    );
}

/// Writes the never-committed [`bodies::runtime_seeds`] into `$INFERGATE_FUZZ_SEED_DIR/<target>/` (run by
/// tests/fuzz/run.sh before fuzzing).
#[test]
#[ignore = "run by tests/fuzz/run.sh"]
fn write_runtime_seeds() {
    let dir = PathBuf::from(std::env::var_os("INFERGATE_FUZZ_SEED_DIR").expect("INFERGATE_FUZZ_SEED_DIR is set"));
    for (target, name, bytes) in bodies::runtime_seeds() {
        std::fs::create_dir_all(dir.join(target)).unwrap();
        std::fs::write(dir.join(target).join(name), bytes).unwrap();
    }
}
