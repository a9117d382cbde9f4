//! Audit lines: refusals (sampled per key, so a flood cannot fill the disk), enforced revocations, applied configs
//! and closed streams. Each is one `tracing` event with `audit = true` and snake_case fields, the format the
//! operator's audit lines share (the process's subscriber writes them as one JSON object per line). Key ids only;
//! never a key, ticket, audio or transcript.
use crate::snapshot::{KeyMap, KeyRef};
use chrono::Utc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most this many refusal lines per key per window; the next line after the window says how many were dropped.
const LINES_PER_WINDOW: u32 = 5;
const WINDOW: Duration = Duration::from_secs(10);
/// Bounds the sampler's memory under a flood of distinct keys.
const MAX_TRACKED_KEYS: usize = 10_000;

struct Line<'a> {
    audit: bool,
    at: String,
    event: &'a str,
    key_id: Option<String>,
    code: Option<&'a str>,
    door: Option<&'a str>,
    endpoint: Option<&'a str>,
    request_id: Option<&'a str>,
    stream_id: Option<u64>,
    gpu_seconds: Option<f64>,
    audio_seconds: Option<f64>,
    revision: Option<&'a str>,
    dropped_before: u32,
}

struct Window {
    started: Instant,
    written: u32,
    dropped: u32,
}

#[derive(Default)]
pub struct Audit {
    sampler: Mutex<KeyMap<Window>>,
}

/// One refusal, for [`Audit::refusal`].
pub struct RefusalEvent<'a> {
    pub key: Option<KeyRef>,
    pub code: &'a str,
    pub door: &'a str,
    pub endpoint: Option<&'a str>,
    pub request_id: &'a str,
}

/// One closed stream, for [`Audit::stream_closed`].
pub struct StreamClosedEvent<'a> {
    pub key: KeyRef,
    pub stream_id: u64,
    pub door: &'a str,
    pub endpoint: &'a str,
    pub code: &'a str,
    pub request_id: &'a str,
    pub gpu_seconds: f64,
    pub audio_seconds: f64,
}

impl Audit {
    pub fn refusal(&self, e: RefusalEvent<'_>) {
        // Unidentified callers (bad checksum, unknown key) share one bucket.
        let bucket = e.key.unwrap_or(KeyRef(0));
        let dropped_before = {
            let mut sampler = self.sampler.lock().unwrap_or_else(|p| p.into_inner());
            if sampler.len() >= MAX_TRACKED_KEYS && !sampler.contains_key(&bucket) {
                sampler.clear();
            }
            let w = sampler.entry(bucket).or_insert(Window { started: Instant::now(), written: 0, dropped: 0 });
            if w.started.elapsed() >= WINDOW {
                w.started = Instant::now();
                w.written = 0;
            }
            if w.written >= LINES_PER_WINDOW {
                w.dropped += 1;
                return;
            }
            w.written += 1;
            std::mem::take(&mut w.dropped)
        };
        write_line(&Line {
            event: "refusal",
            key_id: e.key.map(|k| k.to_string()),
            code: Some(e.code),
            door: Some(e.door),
            endpoint: e.endpoint,
            request_id: Some(e.request_id),
            dropped_before,
            ..Line::base()
        });
    }

    pub fn revocation_enforced(
        &self,
        key: KeyRef,
        code: &str,
        stream_id: u64,
        door: &str,
        endpoint: &str,
        revision: &str,
    ) {
        write_line(&Line {
            event: "revocation_enforced",
            key_id: Some(key.to_string()),
            code: Some(code),
            stream_id: Some(stream_id),
            door: Some(door),
            endpoint: Some(endpoint),
            revision: Some(revision),
            ..Line::base()
        });
    }

    pub fn config_applied(&self, revision: &str) {
        write_line(&Line { event: "config_applied", revision: Some(revision), ..Line::base() });
    }

    pub fn stream_closed(&self, e: StreamClosedEvent<'_>) {
        write_line(&Line {
            event: "stream_closed",
            key_id: Some(e.key.to_string()),
            code: Some(e.code),
            stream_id: Some(e.stream_id),
            door: Some(e.door),
            endpoint: Some(e.endpoint),
            request_id: Some(e.request_id),
            gpu_seconds: Some((e.gpu_seconds * 1e6).round() / 1e6),
            audio_seconds: Some((e.audio_seconds * 1e3).round() / 1e3),
            ..Line::base()
        });
    }
}

impl Line<'_> {
    fn base() -> Self {
        Line {
            audit: true,
            at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            event: "",
            key_id: None,
            code: None,
            door: None,
            endpoint: None,
            request_id: None,
            stream_id: None,
            gpu_seconds: None,
            audio_seconds: None,
            revision: None,
            dropped_before: 0,
        }
    }
}

fn write_line(line: &Line<'_>) {
    tracing::info!(
        target: "infergate::audit",
        audit = line.audit,
        at = %line.at,
        event = line.event,
        key_id = line.key_id.as_deref(),
        code = line.code,
        door = line.door,
        endpoint = line.endpoint,
        request_id = line.request_id,
        stream_id = line.stream_id,
        gpu_seconds = line.gpu_seconds,
        audio_seconds = line.audio_seconds,
        revision = line.revision,
        dropped_before = (line.dropped_before > 0).then_some(line.dropped_before),
        "audit"
    );
}
