//! The user-facing manifests: every example is accepted by the generated schemas (structure and CEL), every
//! deliberately wrong manifest is rejected with the message its `# expect:` line names, and `render` of the
//! examples works without printing key material.
use chrono::{TimeZone, Utc};
use infergate_compile::InsecureSequentialKeys;
use infergate_compile::manifests;
use infergate_operator::{render, validate};
use std::path::{Path, PathBuf};

fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_validates() {
    let files = yaml_files(&repo("examples"));
    assert!(files.len() >= 3, "examples/ should hold the example manifests");
    let mut seen_kinds = std::collections::BTreeSet::new();
    for file in &files {
        let docs = manifests::load_documents(std::slice::from_ref(file)).unwrap();
        for doc in docs {
            seen_kinds.insert(doc.kind);
            if let Err(errors) = validate::validate_object(&doc.value) {
                panic!("{}: {}", doc.origin, errors.join("\n"));
            }
        }
    }
    assert_eq!(seen_kinds.len(), 3, "the examples cover all three kinds");
    validate::validate_files(&[repo("examples")]).expect("validate -f examples/ succeeds");
}

#[test]
fn every_invalid_manifest_is_rejected_with_the_expected_message() {
    let files = yaml_files(&repo("tests/manifests/invalid"));
    assert!(files.len() >= 10);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect:"))
            .map(str::trim)
            .unwrap_or_else(|| panic!("{}: first line must be `# expect: <text>`", file.display()));
        let docs = manifests::load_documents(std::slice::from_ref(&file)).unwrap();
        assert_eq!(docs.len(), 1, "{}: one object per invalid manifest", file.display());
        let errors = match validate::validate_object(&docs[0].value) {
            Ok(()) => panic!("{} was accepted; it must be rejected with {expect:?}", file.display()),
            Err(errors) => errors.join("\n"),
        };
        assert!(errors.contains(expect), "{}: expected {expect:?} in:\n{errors}", file.display());
        // Every message names the object and a field, so the user knows where to look.
        for line in errors.lines() {
            let mut parts = line.splitn(3, ": ");
            let (object, field) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
            assert!(
                object.contains(' ') && !field.is_empty(),
                "{}: message without object/field: {line}",
                file.display()
            );
        }
        assert!(!errors.contains("sk_live_"), "{}: key-like values are never echoed", file.display());
        assert!(validate::validate_files(&[file.clone()]).is_err(), "{}: validate exits non-zero", file.display());
    }
}

#[test]
fn render_of_the_examples_shows_what_would_be_written_without_key_material() {
    let set = manifests::load_paths(&[repo("examples")]).unwrap();
    let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let out = render::render_set(&set, now, &mut InsecureSequentialKeys::starting_at(1), "infergate-system");
    assert!(!out.contains("sk_live_") && !out.contains("sk_test_"), "plaintext key in render output:\n{out}");
    assert!(out.contains("api-key: <generated>"));
    // One key Secret and one shard per policy; one shard per published endpoint; a status for everything.
    assert_eq!(out.matches("# key Secret of ApiKeyPolicy").count(), set.policies.len());
    assert_eq!(out.matches("# gateway-config shard of ApiKeyPolicy").count(), set.policies.len());
    assert!(out.contains("# gateway-config shard of InferenceEndpoint speech/whisper-large"));
    assert_eq!(out.matches("# status of ").count(), set.policies.len() + set.endpoints.len() + set.tiers.len());
    // Shards are shown readable (JSON under stringData), with digests, never keys.
    assert!(out.contains("shard.json: |") && out.contains("\"digest\":"));
    // The whole output is a valid YAML stream.
    for doc in serde_yaml::Deserializer::from_str(&out) {
        let _: serde_yaml::Value = serde::Deserialize::deserialize(doc).expect("render prints valid YAML");
    }
}
