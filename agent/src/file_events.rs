//! Change notifications for standalone mode's manifests and state file (inotify on Linux, FSEvents on macOS,
//! through `notify`): an edit is applied as soon as it is written, not at the next poll. The poll stays as the
//! fallback where no notifier can be set up, and for changes a notifier does not see (network file systems,
//! a symlinked directory swapped underneath).
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;

/// An editor's write is several events (truncate, write, close; or write a temporary file, rename): a change is
/// reported once none has followed for this long, so a half-written file is not read.
const QUIET: Duration = Duration::from_millis(25);

/// The OS watch (dropping it stops the notifications) and the channel it signals.
pub struct FileEvents {
    _watcher: RecommendedWatcher,
    changed: mpsc::Receiver<()>,
}

impl FileEvents {
    /// Watches `paths`: a file through its directory (so a replace-by-rename is seen), a directory recursively.
    /// `None`, after one warning, where that cannot be set up.
    pub fn watch(paths: &[PathBuf]) -> Option<Self> {
        let wanted: Vec<PathBuf> = paths.iter().filter_map(|p| std::path::absolute(p).ok()).collect();
        let (tx, changed) = mpsc::channel(1);
        let filter = wanted.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            if event.paths.iter().any(|p| filter.iter().any(|w| p.starts_with(w))) {
                let _ = tx.try_send(()); // full: a change is already pending
            }
        });
        let mut watcher = match watcher {
            Ok(w) => w,
            Err(err) => {
                tracing::warn!(error = %err, "no file-change notifications; manifests are polled only");
                return None;
            }
        };
        for path in &wanted {
            let (target, mode) = match path.parent() {
                Some(parent) if !path.is_dir() => (parent.to_path_buf(), RecursiveMode::NonRecursive),
                _ => (path.clone(), RecursiveMode::Recursive),
            };
            if let Err(err) = watcher.watch(&target, mode) {
                tracing::warn!(path = %target.display(), error = %err, "no file-change notifications; manifests are polled only");
                return None;
            }
        }
        Some(FileEvents { _watcher: watcher, changed })
    }

    /// Resolves once a change has been written and has settled; never, if the watch has ended.
    pub async fn next(&mut self) {
        if self.changed.recv().await.is_none() {
            return std::future::pending().await;
        }
        loop {
            tokio::time::sleep(QUIET).await;
            if self.changed.try_recv().is_err() {
                return;
            }
        }
    }
}
