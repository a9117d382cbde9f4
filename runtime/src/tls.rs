//! TLS for the listeners of both binaries: the agent's HTTP/WebSocket and gRPC doors, the operator's admin port.
//!
//! ```text
//!  --tls-cert / --tls-key (PEM chain + RSA, ECDSA or Ed25519 key) [--tls-client-ca, --tls-client-auth]
//!     ─▶ Tls::start: load once (a bad pair fails start-up), then poll the files every 2 s
//!          changed and valid ─▶ new ServerConfig swapped in: new handshakes use it, open connections keep theirs
//!          changed and invalid ─▶ the old pair keeps serving; logged; infergate_tls_reload_failures_total
//!  accept ─▶ acceptor() (the current config) ─▶ handshake within the header-read timeout ─▶ hyper / tonic
//! ```
//! TLS 1.3 only by default; `--tls-min-version 1.2` adds TLS 1.2 with rustls's suites, all ECDHE with AEAD.
//! ALPN: `h2` and `http/1.1` on the HTTP listener, `h2` on gRPC. A Kubernetes Secret volume swaps a `..data`
//! symlink on renewal; polling file contents sees that without inotify.
use anyhow::Context as _;
use arc_swap::ArcSwapOption;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The lowest TLS version the listeners accept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum MinVersion {
    #[value(name = "1.2")]
    Tls12,
    #[default]
    #[value(name = "1.3")]
    Tls13,
}

/// Whether clients must present a certificate signed by `--tls-client-ca`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientAuth {
    /// A client without a valid certificate fails the handshake.
    #[default]
    Required,
    /// A certificate is verified when presented; clients without one connect (policies may still require one).
    Optional,
}

#[derive(Clone, Debug)]
pub struct TlsSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
    pub client_auth: ClientAuth,
    pub min_version: MinVersion,
}

/// The current server configs, one per listener (they differ only in ALPN), reloaded from the files.
pub struct Tls {
    settings: TlsSettings,
    /// `None` until a valid pair has been loaded (then the TLS ports refuse handshakes and `problem` says why).
    http: ArcSwapOption<ServerConfig>,
    grpc: ArcSwapOption<ServerConfig>,
    /// Why no valid pair is serving, while none is.
    problem: Mutex<Option<String>>,
    /// The bytes of cert, key and client CA last loaded successfully or tried, to notice a change.
    seen: Mutex<Vec<u8>>,
    reload_failures: prometheus::IntCounter,
    /// The serving leaf certificate's notAfter, in Unix seconds.
    expiry: prometheus::IntGauge,
}

const POLL: Duration = Duration::from_secs(2);

impl Tls {
    /// Loads the pair and starts watching the files. A pair that cannot be loaded yet (cert-manager has not
    /// issued it, a bad key) does not stop the process: the TLS ports refuse handshakes, [`problem`](Self::problem)
    /// says why (the agent's `/readyz` reports it), and the first valid pair that appears is served.
    pub fn start(settings: TlsSettings, registry: &prometheus::Registry) -> anyhow::Result<Arc<Tls>> {
        let reload_failures = prometheus::IntCounter::new(
            "tls_reload_failures_total",
            "Certificate reloads that failed (unreadable files, key not matching); the previous pair keeps serving",
        )
        .expect("valid metric");
        registry.register(Box::new(reload_failures.clone())).context("registering the TLS metrics")?;
        let expiry = prometheus::IntGauge::new(
            "tls_certificate_expiry_timestamp_seconds",
            "When the serving certificate (the leaf of --tls-cert) expires, in Unix seconds",
        )
        .expect("valid metric");
        registry.register(Box::new(expiry.clone())).context("registering the TLS metrics")?;
        let tls = Arc::new(Tls {
            http: ArcSwapOption::empty(),
            grpc: ArcSwapOption::empty(),
            problem: Mutex::new(None),
            seen: Mutex::new(read_files(&settings).unwrap_or_default()),
            settings,
            reload_failures,
            expiry,
        });
        match build(&tls.settings) {
            Ok(built) => tls.serve(built),
            Err(err) => {
                tls.reload_failures.inc();
                let why = format!("{err:#}");
                tracing::error!(error = %why, "no valid TLS certificate pair yet; the TLS ports refuse handshakes until one appears");
                *tls.problem.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
            }
        }
        let watcher = Arc::clone(&tls);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(POLL).await;
                watcher.reload_if_changed();
            }
        });
        Ok(tls)
    }

    /// Why no certificate pair is serving, when none is (never once a valid pair has loaded: a later bad
    /// replacement keeps the old pair serving).
    pub fn problem(&self) -> Option<String> {
        self.problem.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The acceptor for the next HTTP connection; `None` while no valid pair exists.
    pub fn http_acceptor(&self) -> Option<tokio_rustls::TlsAcceptor> {
        self.http.load_full().map(tokio_rustls::TlsAcceptor::from)
    }

    /// The acceptor for the next gRPC connection; `None` while no valid pair exists.
    pub fn grpc_acceptor(&self) -> Option<tokio_rustls::TlsAcceptor> {
        self.grpc.load_full().map(tokio_rustls::TlsAcceptor::from)
    }

    fn serve(&self, (http, grpc, not_after): (ServerConfig, ServerConfig, i64)) {
        self.http.store(Some(Arc::new(http)));
        self.grpc.store(Some(Arc::new(grpc)));
        self.expiry.set(not_after);
        *self.problem.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn reload_if_changed(&self) {
        let Ok(files) = read_files(&self.settings) else {
            // Mid-swap (the symlink briefly points nowhere) or really gone: count it only once the bytes change.
            return;
        };
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if *seen == files {
            return;
        }
        *seen = files;
        match build(&self.settings) {
            Ok(built) => {
                self.serve(built);
                tracing::info!(cert = %self.settings.cert.display(), "TLS certificate reloaded; new connections use it");
            }
            Err(err) => {
                self.reload_failures.inc();
                tracing::error!(error = %format!("{err:#}"), "TLS certificate reload failed; the previous certificate keeps serving");
            }
        }
    }
}

fn read_files(settings: &TlsSettings) -> anyhow::Result<Vec<u8>> {
    let mut bytes = std::fs::read(&settings.cert)?;
    bytes.extend(std::fs::read(&settings.key)?);
    if let Some(ca) = &settings.client_ca {
        bytes.extend(std::fs::read(ca)?);
    }
    Ok(bytes)
}

/// The HTTP and gRPC server configs from the files, and the leaf certificate's notAfter (Unix seconds).
fn build(settings: &TlsSettings) -> anyhow::Result<(ServerConfig, ServerConfig, i64)> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&settings.cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .with_context(|| format!("cannot read the certificate chain in --tls-cert {}", settings.cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "--tls-cert {} holds no PEM certificate", settings.cert.display());
    let not_after = x509_parser::parse_x509_certificate(&chain[0])
        .map(|(_, leaf)| leaf.validity().not_after.timestamp())
        .map_err(|e| {
            anyhow::anyhow!("the first certificate in --tls-cert {} is not valid X.509: {e}", settings.cert.display())
        })?;
    let key = PrivateKeyDer::from_pem_file(&settings.key).with_context(|| {
        format!("cannot read a PEM private key (PKCS#8, PKCS#1 or SEC1) in --tls-key {}", settings.key.display())
    })?;
    let versions: &[&'static rustls::SupportedProtocolVersion] = match settings.min_version {
        MinVersion::Tls13 => &[&rustls::version::TLS13],
        MinVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let config = |alpn: &[&[u8]]| -> anyhow::Result<ServerConfig> {
        let builder = ServerConfig::builder_with_protocol_versions(versions);
        let builder = match &settings.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(ca)
                    .with_context(|| format!("cannot read --tls-client-ca {}", ca.display()))?
                {
                    roots.add(cert.with_context(|| format!("bad PEM in --tls-client-ca {}", ca.display()))?)?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots));
                let verifier = match settings.client_auth {
                    ClientAuth::Required => verifier.build(),
                    ClientAuth::Optional => verifier.allow_unauthenticated().build(),
                }
                .context("the client CA bundle is not usable")?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(chain.clone(), key.clone_key()).with_context(|| {
            format!(
                "--tls-key {} does not match the certificate in --tls-cert {}, or its type is not supported \
                 (RSA, ECDSA P-256/P-384, Ed25519)",
                settings.key.display(),
                settings.cert.display()
            )
        })?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    };
    Ok((config(&[b"h2", b"http/1.1"])?, config(&[b"h2"])?, not_after))
}

/// A throwaway certificate for localhost (`--tls-self-signed` in standalone mode): an ECDSA P-256 key and a
/// self-signed certificate for `localhost`, `127.0.0.1` and `::1`, written to `dir` (the key 0600). Returns the
/// settings to serve it and the certificate's SHA-256 fingerprint (`AB:CD:...`) for the person to check.
pub fn self_signed(dir: &std::path::Path) -> anyhow::Result<(TlsSettings, String)> {
    use sha2::Digest as _;
    use std::io::Write as _;
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into(), "::1".into()])
        .context("cannot generate a self-signed certificate")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (cert, key) = (dir.join("localhost.crt"), dir.join("localhost.key"));
    std::fs::write(&cert, generated.cert.pem()).with_context(|| format!("cannot write {}", cert.display()))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(&key)
        .and_then(|mut f| f.write_all(generated.signing_key.serialize_pem().as_bytes()))
        .with_context(|| format!("cannot write {}", key.display()))?;
    let digest = sha2::Sha256::digest(generated.cert.der());
    let fingerprint = digest.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":");
    let settings =
        TlsSettings { cert, key, client_ca: None, client_auth: ClientAuth::Required, min_version: MinVersion::Tls13 };
    Ok((settings, fingerprint))
}

/// A TLS listener for `axum::serve` (the operator's admin port): handshakes one connection at a time, each within
/// `handshake`; a failed or slow handshake is dropped and the next connection accepted.
pub struct TlsListener {
    pub inner: tokio::net::TcpListener,
    pub tls: Arc<Tls>,
    pub handshake: Duration,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.inner.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let Some(acceptor) = self.tls.http_acceptor() else { continue };
            if let Ok(Ok(tls)) = tokio::time::timeout(self.handshake, acceptor.accept(stream)).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}
