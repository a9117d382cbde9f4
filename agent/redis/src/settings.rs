//! How the store is set up: where Redis is, which mode, whose clock, and the timeouts.
use std::time::Duration;

/// How admissions use the shared bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Blocks of GPU-seconds taken from the shared bucket and spent locally.
    Leased,
    /// One Lua round trip per admission.
    Exact,
}

/// Whose clock refills buckets. Agents' monotonic clocks differ, so a real deployment uses the server's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    Server,
    /// The `now` each call passes in: deterministic tests of one store.
    Caller,
}

#[derive(Clone)]
pub struct Settings {
    /// `redis://[user@]host:port/db` or `rediss://...`. May carry a password: never logged.
    pub url: String,
    pub mode: Mode,
    pub password: Option<String>,
    /// PEM roots for `rediss://` servers signed by a private CA.
    pub ca_pem: Option<Vec<u8>>,
    /// Every Redis call runs under this.
    pub timeout: Duration,
    /// How long a stream slot outlives its agent's last heartbeat.
    pub slot_ttl: Duration,
    /// How long an unused lease is kept before it is returned.
    pub lease_ttl: Duration,
    /// This agent's name in slot members and the agents set.
    pub agent_id: String,
    pub clock: Clock,
    /// Key prefix; distinct prefixes keep deployments (or tests) sharing one server apart.
    pub prefix: String,
}

impl Settings {
    pub fn new(url: impl Into<String>, mode: Mode) -> Self {
        Settings {
            url: url.into(),
            mode,
            password: None,
            ca_pem: None,
            timeout: Duration::from_millis(100),
            slot_ttl: Duration::from_secs(15),
            lease_ttl: Duration::from_secs(1),
            agent_id: default_agent_id(),
            clock: Clock::Server,
            prefix: "ig".into(),
        }
    }
}

fn default_agent_id() -> String {
    let host = std::env::var("NODE_NAME").or_else(|_| std::env::var("HOSTNAME")).unwrap_or_else(|_| "agent".into());
    format!("{host}:{}", std::process::id())
}

/// Set-up errors: the URL or TLS material is unusable. The message never repeats the URL (it may hold a password).
#[derive(Debug, thiserror::Error)]
#[error("--counter-store: {0}")]
pub struct ConfigError(pub(crate) String);
