//! Every failure the plugin reports, each with what was wrong and what to do. `main` prints the message and exits
//! with status 1 (clap exits with 2 on a command-line mistake before any of this runs).
use infergate_crds::NamespacedName;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot load a Kubernetes client configuration (KUBECONFIG, ~/.kube/config or in-cluster): {0}")]
    Config(String),
    #[error("ApiKeyPolicy {0} not found; list the policies with `kubectl get apikeypolicies -n {ns}`", ns = .0.namespace)]
    PolicyNotFound(NamespacedName),
    #[error(
        "{shown} is not a key id: key ids are `kid_` and 16 hex characters, as `kubectl infergate keys list` shows"
    )]
    BadKeyId { shown: String },
    #[error(
        "key {key_id} is not a key of ApiKeyPolicy {policy} (its keys: {}); see `kubectl infergate keys list -n {ns}`",
        if known.is_empty() { "none".to_string() } else { known.join(", ") },
        ns = policy.namespace
    )]
    KeyNotInPolicy { policy: NamespacedName, key_id: String, known: Vec<String> },
    #[error("{0}")]
    Usage(String),
    #[error("{action}: {message}")]
    Api { action: String, message: String },
    #[error(
        "no agent to ask: no agent Lease in namespace {namespace} carries an address (agents publish one when \
         started with --pod-ip); pass --agent http://HOST:ADMIN_PORT, or --operator-namespace if infergate runs elsewhere"
    )]
    NoAgents { namespace: String },
    #[error("cannot read --admin-token-file {path}: {source}")]
    TokenFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{failed} of {total} agent(s) did not answer (listed above); the usage shown is partial")]
    PartialUsage { failed: usize, total: usize },
}

impl Error {
    /// A malformed key id, not echoed when it looks like an API key someone pasted by mistake.
    pub fn bad_key_id(presented: &str) -> Self {
        let shown = if presented.starts_with("sk_") {
            "the argument (it looks like an API key, not a key id; never paste keys into commands)".to_string()
        } else {
            format!("{presented:?}")
        };
        Error::BadKeyId { shown }
    }

    /// A failed API call, said as the API server said it: `404 NotFound: apikeypolicies ... not found`.
    pub fn api(action: impl Into<String>, err: kube::Error) -> Self {
        let message = match &err {
            kube::Error::Api(status) => format!("{} {}: {}", status.code, status.reason, status.message),
            other => other.to_string(),
        };
        Error::Api { action: action.into(), message }
    }
}

/// Whether a kube error is the API server's 404.
pub fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 404)
}
