//! Leader election through a `coordination.k8s.io/v1` Lease, so that two replicas never both write.
//!
//! The same protocol as client-go's leaderelection: the holder renews `renewTime` every [`RENEW_EVERY`]; a
//! candidate takes the Lease over only after it has seen the *same* record unchanged for the lease duration,
//! measured on its own monotonic clock (so clock skew between nodes cannot make two leaders). Every write is a
//! `replace` carrying the resourceVersion that was read, so two candidates racing for one Lease cannot both win:
//! the loser gets 409 Conflict. A leader that cannot renew for [`RENEW_DEADLINE`] steps down before its Lease can
//! expire for the others.
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use std::time::{Duration, Instant};

pub const LEASE_DURATION: Duration = Duration::from_secs(15);
pub const RENEW_EVERY: Duration = Duration::from_secs(5);
/// Shorter than [`LEASE_DURATION`]: the leader stops writing before anyone else may start.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);

pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    holder: String,
    /// The last record seen from someone else and when it was first seen unchanged.
    observed: Option<(ObservedRecord, Instant)>,
    /// When this replica last renewed successfully while leading.
    last_renewed: Option<Instant>,
}

#[derive(Clone, Debug, PartialEq)]
struct ObservedRecord {
    holder: Option<String>,
    renew_time: Option<String>,
    resource_version: Option<String>,
}

impl LeaderElector {
    pub fn new(api: Api<Lease>, name: impl Into<String>, holder: impl Into<String>) -> Self {
        Self { api, name: name.into(), holder: holder.into(), observed: None, last_renewed: None }
    }

    /// One round: acquire or renew. `true` while this replica leads.
    ///
    /// The round is bounded by what is left of the renew deadline: kube's client has no read timeout, so without
    /// this bound a hung connection would keep a deposed leader "leading" (and writing) after its Lease passed on.
    pub async fn step(&mut self) -> bool {
        let budget = self.round_budget();
        match tokio::time::timeout(budget, self.try_step()).await {
            Ok(Ok(leading)) => {
                if leading {
                    self.last_renewed = Some(Instant::now());
                }
                leading
            }
            Ok(Err(err)) => {
                tracing::warn!(lease = %self.name, error = %err, "leader lease round failed");
                // A transient API error does not end leadership at once, only after the renew deadline.
                self.still_within_deadline()
            }
            Err(_) => {
                tracing::warn!(
                    lease = %self.name,
                    timeout_ms = budget.as_millis() as u64,
                    "leader lease round timed out: the API server did not answer"
                );
                self.still_within_deadline()
            }
        }
    }

    /// How long this round may take: a leader must have its answer before its renew deadline runs out; a
    /// candidate gets one renew deadline.
    fn round_budget(&self) -> Duration {
        let left = match self.last_renewed {
            Some(renewed) => RENEW_DEADLINE.saturating_sub(renewed.elapsed()),
            None => RENEW_DEADLINE,
        };
        // Never zero: a zero timeout would fail the round before it could even be sent.
        left.max(Duration::from_millis(100))
    }

    fn still_within_deadline(&mut self) -> bool {
        let within = self.last_renewed.is_some_and(|t| t.elapsed() < RENEW_DEADLINE);
        if !within {
            self.last_renewed = None;
        }
        within
    }

    async fn try_step(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let fresh = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..Default::default() },
                spec: Some(self.spec(now.clone(), now, 0)),
            };
            return match self.api.create(&Default::default(), &fresh).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let record = ObservedRecord {
            holder: holder.clone(),
            renew_time: spec.renew_time.as_ref().map(|t| t.0.to_string()),
            resource_version: lease.metadata.resource_version.clone(),
        };
        let mine = holder.as_deref() == Some(self.holder.as_str());
        if !mine {
            let first_seen = match &self.observed {
                Some((seen, at)) if *seen == record => *at,
                _ => {
                    self.observed = Some((record.clone(), Instant::now()));
                    Instant::now()
                }
            };
            let duration =
                spec.lease_duration_seconds.map(|s| Duration::from_secs(s.max(1) as u64)).unwrap_or(LEASE_DURATION);
            // Free (released by a leader that shut down) or not renewed for a whole lease duration.
            if holder.is_some() && first_seen.elapsed() < duration {
                self.last_renewed = None;
                return Ok(false);
            }
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + if mine { 0 } else { 1 };
        let acquire = if mine { spec.acquire_time.clone().unwrap_or(now.clone()) } else { now.clone() };
        lease.spec = Some(self.spec(acquire, now, transitions));
        match self.api.replace(&self.name, &Default::default(), &lease).await {
            Ok(_) => {
                if !mine {
                    tracing::info!(lease = %self.name, holder = %self.holder, "acquired the leader lease");
                }
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                self.last_renewed = None;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    fn spec(&self, acquire: MicroTime, renew: MicroTime, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.holder.clone()),
            lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
            acquire_time: Some(acquire),
            renew_time: Some(renew),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// Gives the Lease up on shutdown so a standby takes over at once instead of after the lease duration.
    pub async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.holder.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        match self.api.replace(&self.name, &Default::default(), &lease).await {
            Ok(_) => tracing::info!(lease = %self.name, "released the leader lease"),
            Err(err) => {
                tracing::warn!(lease = %self.name, error = %err, "could not release the leader lease")
            }
        }
        self.last_renewed = None;
    }
}
