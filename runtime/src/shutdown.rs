//! Signal handling and graceful drain, one way for both binaries.
//!
//! ```text
//!  SIGTERM / SIGINT ─▶ Trigger::fire ─▶ every Shutdown clone's wait() resolves
//!                                        (listeners stop accepting, streams get going-away, controllers drain)
//! ```
use tokio::sync::watch;

/// Fires the shutdown once; every [`Shutdown`] made from it sees it.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

/// A cheap, clonable view of "has shutdown begun".
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

/// A trigger and its first view, for callers that decide themselves when to stop (tests, a lost leader lease).
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    pub fn fire(&self) {
        self.0.send_replace(true);
    }

    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

impl Shutdown {
    /// A view that fires on the first SIGTERM or SIGINT. Spawns the signal listener on the current runtime.
    pub fn on_signals() -> Shutdown {
        let (trigger, shutdown) = channel();
        tokio::spawn(async move {
            terminate_signal().await;
            tracing::info!("shutdown signal received: draining");
            trigger.fire();
        });
        shutdown
    }

    /// Resolves once shutdown has begun (at once if it already has).
    pub async fn wait(mut self) {
        // An Err means every trigger is gone without firing: treat that as shutdown too, never as "run forever".
        let _ = self.0.wait_for(|fired| *fired).await;
    }

    pub fn has_begun(&self) -> bool {
        *self.0.borrow()
    }
}

/// Resolves at the first SIGTERM (what the kubelet sends) or SIGINT (Ctrl-C).
async fn terminate_signal() {
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot install a SIGTERM handler; only SIGINT stops the process");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_view_sees_one_fire() {
        let (trigger, first) = channel();
        let second = trigger.subscribe();
        assert!(!first.has_begun());
        trigger.fire();
        first.clone().wait().await;
        second.wait().await;
        assert!(first.has_begun());
    }

    #[tokio::test]
    async fn a_dropped_trigger_counts_as_shutdown() {
        let (trigger, view) = channel();
        drop(trigger);
        view.wait().await;
    }
}
