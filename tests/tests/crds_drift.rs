//! The CRD YAML committed under `charts/infergate/crds/` must be exactly what the Rust types generate.
use std::path::PathBuf;

const REGENERATE: &str = "regenerate with: cargo run -p infergate-operator -- crds --out-dir charts/infergate/crds";

#[test]
fn committed_crds_match_the_generated_ones() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/infergate/crds");
    let generated = infergate_crds::crdgen::all();
    for (file, crd) in &generated {
        let path = dir.join(file);
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{} is missing ({e}); {REGENERATE}", path.display()));
        let expected = infergate_crds::crdgen::to_yaml(crd);
        if committed != expected {
            let line = committed
                .lines()
                .zip(expected.lines())
                .position(|(a, b)| a != b)
                .map_or_else(|| "length".to_string(), |i| format!("line {}", i + 1));
            panic!("{} differs from the generated CRD (first difference at {line}); {REGENERATE}", path.display());
        }
    }
    // No stale CRD files for kinds that no longer exist.
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("charts/infergate/crds exists")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    on_disk.sort();
    let mut names: Vec<String> = generated.iter().map(|(f, _)| f.to_string()).collect();
    names.sort();
    assert_eq!(on_disk, names, "charts/infergate/crds holds files crdgen does not generate; {REGENERATE}");
}
