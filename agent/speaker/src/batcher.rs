//! Batches windows from concurrent requests into one backend call (what makes the GPU efficient).
//!
//! ```text
//! caller threads ──prepare (checks, gain)──▶ channel ──▶ worker: wait ≤ max_wait or until max_windows
//!                ◀── Embedded (its share of the batch's compute time) ──┘      └─▶ backend.embed_prepared
//! ```
//!
//! Each request is charged the batch's measured compute time in proportion to its number of windows, so the
//! GPU-seconds the limiter settles add up to what the device actually spent.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::ModelError;
use crate::frontend::{self, Limits, Prepared};
use crate::{Embedded, EmbeddingBackend};

/// When a batch is closed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchConfig {
    /// Close the batch once it holds this many partial windows.
    pub max_windows: usize,
    /// Close the batch this long after its first request arrived.
    pub max_wait: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self { max_windows: 2048, max_wait: Duration::from_millis(5) }
    }
}

struct Job {
    prepared: Prepared,
    reply: SyncSender<Result<Embedded, ModelError>>,
}

/// A cloneable front end over one backend and its batching worker thread.
pub struct Batcher {
    jobs: Mutex<Option<Sender<Job>>>,
    limits: Limits,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl Batcher {
    pub fn spawn(backend: Arc<dyn EmbeddingBackend>, config: BatchConfig, limits: Limits) -> Self {
        let (tx, rx) = mpsc::channel();
        let worker = std::thread::Builder::new()
            .name(format!("speaker-batcher-{}", backend.name()))
            .spawn(move || run(backend.as_ref(), config, rx))
            .expect("spawning the batcher thread");
        Self { jobs: Mutex::new(Some(tx)), limits, worker: Mutex::new(Some(worker)) }
    }

    /// Embeds one utterance, possibly together with other callers' utterances. Blocks until done; call it
    /// from a blocking-capable thread (e.g. tokio's `spawn_blocking`).
    pub fn embed(&self, pcm16k: &[f32]) -> Result<Embedded, ModelError> {
        let prepared = frontend::prepare(pcm16k, &self.limits)?;
        let (reply, result) = mpsc::sync_channel(1);
        let sent = match &*self.jobs.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(tx) => tx.send(Job { prepared, reply }).is_ok(),
            None => false,
        };
        if !sent {
            return Err(ModelError::Cuda { stage: "batcher", message: "the batcher has shut down".into() });
        }
        result.recv().unwrap_or_else(|_| {
            Err(ModelError::Cuda { stage: "batcher", message: "the batch worker stopped unexpectedly".into() })
        })
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        // Closing the channel ends the worker after it finishes the batch in hand.
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(worker) = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = worker.join();
        }
    }
}

fn run(backend: &dyn EmbeddingBackend, config: BatchConfig, jobs: Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let deadline = Instant::now() + config.max_wait;
        let mut windows = first.prepared.partial_starts.len();
        let mut batch = vec![first];
        while windows < config.max_windows {
            let left = deadline.saturating_duration_since(Instant::now());
            match jobs.recv_timeout(left) {
                Ok(job) => {
                    windows += job.prepared.partial_starts.len();
                    batch.push(job);
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        let (prepared, replies): (Vec<Prepared>, Vec<_>) = batch.into_iter().map(|j| (j.prepared, j.reply)).unzip();
        match backend.embed_prepared(&prepared) {
            Ok(out) => {
                let total = windows.max(1) as f64;
                for ((embedding, prep), reply) in out.embeddings.into_iter().zip(&prepared).zip(replies) {
                    let share = prep.partial_starts.len() as f64 / total;
                    let _ = reply.send(Ok(Embedded { embedding, compute: out.compute.mul_f64(share) }));
                }
            }
            Err(err) => {
                for reply in replies {
                    let _ = reply.send(Err(err.for_batch_member()));
                }
            }
        }
    }
}
