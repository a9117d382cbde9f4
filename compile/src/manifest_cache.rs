//! Standalone mode's reloads: what a reload can take from the previous load instead of doing again.
//!
//! ```text
//!  file ─▶ pieces (split before each `---` line) ─▶ SHA-256 of each piece
//!        ─▶ known piece: its typed objects, as the last successful load made them (no YAML, no schema, no serde)
//!        ─▶ new piece:   parse ─▶ validate ─▶ type   (exactly what `load_paths` does)
//!        ─▶ ManifestSet, with duplicate and naming checks over all of it, in file order
//! ```
//!
//! A revocation edits one document of a file of thousands; parsing, validating and typing all of them was most of
//! a reload at 10k policies. Every step is a pure function of the piece's text and this binary, so a piece whose
//! text is unchanged yields what it yielded before. Only the latest successful load is remembered.
use crate::manifests::{
    Document, InfergateKind, ManifestError, ManifestSet, Origin, TypedObject, admit_once, files_of, identity,
    parse_documents, shown,
};
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

/// The pieces of the latest successful load, by the SHA-256 of their text.
#[derive(Default)]
pub struct ManifestCache {
    pieces: HashMap<[u8; 32], Arc<Piece>>,
    /// Documents the last call parsed and validated (the others were known): for tests and logs.
    pub last_parsed: usize,
}

/// What one piece of a file yielded.
struct Piece {
    /// YAML documents in the piece, empty and foreign ones included: they number the documents after it.
    yaml_documents: usize,
    objects: Vec<Known>,
}

struct Known {
    /// 1-based, within the piece.
    document: usize,
    kind: InfergateKind,
    namespace: String,
    name: String,
    object: TypedObject,
}

/// One piece of this load: known, or parsed now.
enum Placed {
    Known { digest: [u8; 32], piece: Arc<Piece>, source: Arc<str>, before: usize },
    Fresh { digest: [u8; 32], docs: Vec<Document>, yaml_documents: usize, before: usize },
}

/// [`crate::manifests::load_paths`] for a process that loads the same paths again and again: the same result and
/// the same errors, with unchanged pieces of the files taken from `cache`.
pub fn load_paths_cached(paths: &[PathBuf], cache: &mut ManifestCache) -> Result<ManifestSet, ManifestError> {
    let mut texts = vec![];
    for file in files_of(paths)? {
        let text = std::fs::read_to_string(&file).map_err(|cause| ManifestError::Io { path: file.clone(), cause })?;
        texts.push((file.display().to_string(), text));
    }
    load_texts_cached(&texts, cache)
}

/// [`load_paths_cached`] over (source, text) pairs already read.
pub fn load_texts_cached(texts: &[(String, String)], cache: &mut ManifestCache) -> Result<ManifestSet, ManifestError> {
    let mut placed = vec![];
    for (source, text) in texts {
        place_file(source, text, cache, &mut placed)?;
    }

    // Validation of the new documents first, all problems at once (as `load_paths` reports them).
    let fresh = placed.iter().flat_map(|p| match p {
        Placed::Fresh { docs, .. } => docs.as_slice(),
        Placed::Known { .. } => &[],
    });
    let fresh: Vec<Document> = fresh.cloned().collect();
    let parsed = fresh.len();
    crate::manifests::validated(fresh)?;

    // Sized up front: the objects are large and a growing vector copies them all.
    let mut count = [0usize; 4];
    for p in &placed {
        let kinds: Box<dyn Iterator<Item = InfergateKind> + '_> = match p {
            Placed::Known { piece, .. } => Box::new(piece.objects.iter().map(|k| k.kind)),
            Placed::Fresh { docs, .. } => Box::new(docs.iter().map(|d| d.kind)),
        };
        kinds.for_each(|kind| count[kind as usize] += 1);
    }
    let mut set = ManifestSet {
        tiers: Vec::with_capacity(count[InfergateKind::RateTier as usize]),
        endpoints: Vec::with_capacity(count[InfergateKind::InferenceEndpoint as usize]),
        policies: Vec::with_capacity(count[InfergateKind::ApiKeyPolicy as usize]),
        secrets: Vec::with_capacity(count[InfergateKind::Secret as usize]),
    };
    let mut seen = BTreeSet::new();
    let mut next = HashMap::with_capacity(placed.len());
    for p in placed {
        match p {
            Placed::Known { digest, piece, source, before } => {
                for k in &piece.objects {
                    let origin = Origin { source: source.to_string(), document: before + k.document };
                    admit_once(&mut seen, &origin, k.kind, &k.namespace, &k.name)?;
                    k.object.clone().push_into(&mut set);
                }
                next.insert(digest, piece);
            }
            Placed::Fresh { digest, docs, yaml_documents, before } => {
                let mut objects = vec![];
                for doc in docs {
                    let (namespace, name) = identity(&doc)?;
                    admit_once(&mut seen, &doc.origin, doc.kind, &namespace, &name)?;
                    let object = TypedObject::of(&doc, &shown(&namespace, &name))?;
                    object.clone().push_into(&mut set);
                    objects.push(Known {
                        document: doc.origin.document - before,
                        kind: doc.kind,
                        namespace,
                        name,
                        object,
                    });
                }
                next.insert(digest, Arc::new(Piece { yaml_documents, objects }));
            }
        }
    }
    cache.pieces = next;
    cache.last_parsed = parsed;
    Ok(set)
}

/// Splits one file into pieces and places each: known from `cache`, or parsed. A piece that does not parse on its
/// own sends the whole file down the ordinary path, so an error reads exactly as `load_paths` words it.
fn place_file(source: &str, text: &str, cache: &ManifestCache, placed: &mut Vec<Placed>) -> Result<(), ManifestError> {
    let source_arc: Arc<str> = Arc::from(source);
    let start = placed.len();
    let mut before = 0;
    for piece in split_documents(text).unwrap_or_else(|| vec![text]) {
        let digest: [u8; 32] = Sha256::digest(piece.as_bytes()).into();
        if let Some(known) = cache.pieces.get(&digest) {
            placed.push(Placed::Known { digest, piece: known.clone(), source: source_arc.clone(), before });
            before += known.yaml_documents;
            continue;
        }
        match parse_documents(piece, source, before) {
            Ok((docs, yaml_documents)) => {
                placed.push(Placed::Fresh { digest, docs, yaml_documents, before });
                before += yaml_documents;
            }
            Err(_) => {
                placed.truncate(start);
                let (docs, yaml_documents) = parse_documents(text, source, 0)?;
                let digest = Sha256::digest(text.as_bytes()).into();
                placed.push(Placed::Fresh { digest, docs, yaml_documents, before: 0 });
                return Ok(());
            }
        }
    }
    Ok(())
}

/// `text` cut before each document start marker (`---` at the start of a line, then a space, a tab or the line's
/// end). In YAML such a line is a marker wherever it stands (no scalar may contain one), so the pieces hold the
/// file's documents in order, each piece parsed alone as it parses within the file. `None` (do not split) when
/// the file has directive lines (`%YAML`, `%TAG`), which belong to the document after them.
fn split_documents(text: &str) -> Option<Vec<&str>> {
    let mut cuts = vec![0];
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        if line.starts_with('%') {
            return None;
        }
        let marker =
            line.strip_prefix("---").is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']));
        if marker && at > 0 {
            cuts.push(at);
        }
        at += line.len();
    }
    cuts.push(text.len());
    Some(cuts.windows(2).map(|w| &text[w[0]..w[1]]).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifests::{documents_from_str, load_str, tests::MIXED};

    fn load(text: &str, cache: &mut ManifestCache) -> Result<ManifestSet, ManifestError> {
        load_texts_cached(&[("m.yaml".to_string(), text.to_string())], cache)
    }

    /// The pieces parse to the file's documents, numbered as in the file, for texts that stress the split.
    #[test]
    fn split_pieces_parse_as_the_whole_file() {
        let tier = "apiVersion: infergate.dev/v1alpha1\nkind: RateTier\nmetadata: {name: t}\nspec: {gpuSecondsPerMinute: 1, burstGpuSeconds: 1}\n";
        let texts = [
            MIXED.to_string(),
            format!("---\n{tier}"),
            format!("---\n---\n# c\n---\n{tier}---\n"),
            format!("# lead\n{tier}...\n# after end\n---\n{}", tier.replace("name: t", "name: u")),
            format!("--- # comment on the marker\n{tier}--- \n{}", tier.replace("name: t", "name: u")),
            format!("{tier}---\r\n{}", tier.replace("name: t", "name: v")),
            format!(
                "{}\n---\n{tier}",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata:\n  text: |\n    ---\n    not a marker\n"
            ),
            format!("--- {{apiVersion: v1, kind: Namespace, metadata: {{name: n}}}}\n---\n{tier}"),
            "----\n".to_string(),
            format!("%YAML 1.2\n---\n{tier}"),
        ];
        for text in &texts {
            let pieces = split_documents(text).unwrap_or_else(|| vec![text.as_str()]);
            assert_eq!(pieces.concat(), *text);
            if let Ok(whole) = documents_from_str(text, "m.yaml") {
                let mut before = 0;
                let mut docs = vec![];
                for piece in pieces {
                    let (d, n) = parse_documents(piece, "m.yaml", before).unwrap();
                    docs.extend(d);
                    before += n;
                }
                assert_eq!(whole, docs, "{text:?}");
            }
            // And through the cache, twice (the second from known pieces), the same set as the ordinary load.
            let mut cache = ManifestCache::default();
            let expected = format!("{:?}", load_str(text, "m.yaml").map(|s| s.tiers));
            assert_eq!(format!("{:?}", load(text, &mut cache).map(|s| s.tiers)), expected);
            assert_eq!(format!("{:?}", load(text, &mut cache).map(|s| s.tiers)), expected);
        }
    }

    #[test]
    fn a_reload_parses_only_the_documents_that_changed() {
        let mut cache = ManifestCache::default();
        let set = load(MIXED, &mut cache).unwrap();
        assert_eq!((set.tiers.len(), set.policies.len()), (1, 1));
        assert_eq!(cache.last_parsed, 2);
        load(MIXED, &mut cache).unwrap();
        assert_eq!(cache.last_parsed, 0, "nothing changed");

        // A changed document is parsed and validated again, and a bad change is still refused, naming the document.
        let bad = MIXED.replace("gpuSecondsPerMinute: 6", "gpuSecondsPerMinute: lots");
        let err = load(&bad, &mut cache).unwrap_err().to_string();
        assert!(err.starts_with("m.yaml (document 2): RateTier free: spec.gpuSecondsPerMinute:"), "{err}");
        let good = MIXED.replace("gpuSecondsPerMinute: 6", "gpuSecondsPerMinute: 7");
        let set = load(&good, &mut cache).unwrap();
        assert_eq!(cache.last_parsed, 1);
        assert_eq!(set.tiers[0].spec.gpu_seconds_per_minute, 7.0);
        // Only the latest load is remembered: the first version is new again.
        load(MIXED, &mut cache).unwrap();
        assert_eq!(cache.last_parsed, 1);

        // Checks across pieces still hold: a known piece defined twice is refused, numbered where it stands.
        let tier_piece = MIXED.split("---\n").nth(1).unwrap();
        let err = load(&format!("{MIXED}---\n{tier_piece}"), &mut cache).unwrap_err().to_string();
        assert!(err.starts_with("m.yaml (document 5): RateTier free is defined twice"), "{err}");
        // A YAML error reads as the ordinary load's.
        let broken = format!("{MIXED}---\na: [\n");
        assert_eq!(
            load(&broken, &mut cache).unwrap_err().to_string(),
            load_str(&broken, "m.yaml").unwrap_err().to_string()
        );
    }
}
