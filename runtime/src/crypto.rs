//! The one TLS crypto provider of the process.
//!
//! kube's rustls client, reqwest and the agent's listeners all ask rustls for the process-wide provider; with two
//! providers compiled in rustls refuses to pick one and the first TLS connection panics. The workspace compiles
//! only ring, and this installs it explicitly at start-up.

/// Installs ring as the process-wide rustls provider. Calling it again is harmless: an `Err` from rustls only means
/// a provider was installed already.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
