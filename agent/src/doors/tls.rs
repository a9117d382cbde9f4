//! The agent's side of TLS: the verified client certificate's identity (for policies that require mutual TLS)
//! and gRPC connections over TLS. Loading, reloading and the rustls configs are `infergate_runtime::tls`.
//!
//! ```text
//!  HTTP listener: handshake ─▶ client_cert(peer certificates) ─▶ every request's extensions ─▶ the request record
//!  gRPC: grpc_incoming (accept + handshake per task) ─▶ GrpcTlsStream ─▶ GrpcPeer in each call's extensions
//! ```
use infergate_gate::admission::ClientCert;
pub use infergate_runtime::tls::{ClientAuth, MinVersion, Tls, TlsSettings, self_signed};
use rustls::pki_types::CertificateDer;
use std::sync::Arc;
use std::time::Duration;

/// The identity in the client certificate a handshake verified (mutual TLS): subject CN and SANs.
pub fn client_cert(certificates: Option<&[CertificateDer<'_>]>) -> Option<Arc<ClientCert>> {
    let leaf = certificates?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    let common_names =
        cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok().map(str::to_string)).collect();
    let sans = match cert.subject_alternative_name() {
        Ok(Some(extension)) => extension
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => Some(dns.to_string()),
                x509_parser::extensions::GeneralName::URI(uri) => Some(uri.to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Some(Arc::new(ClientCert { common_names, sans }))
}

/// What a gRPC call knows of its TLS connection: the verified client certificate, if any.
#[derive(Clone, Debug)]
pub struct GrpcPeer {
    pub client_cert: Option<Arc<ClientCert>>,
}

/// A TLS connection for tonic's `serve_with_incoming`: the stream plus the `Connected` tonic asks of it.
pub struct GrpcTlsStream(pub tokio_rustls::server::TlsStream<tokio::net::TcpStream>);

impl tonic::transport::server::Connected for GrpcTlsStream {
    type ConnectInfo = GrpcPeer;
    fn connect_info(&self) -> Self::ConnectInfo {
        GrpcPeer { client_cert: client_cert(self.0.get_ref().1.peer_certificates()) }
    }
}

impl tokio::io::AsyncRead for GrpcTlsStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for GrpcTlsStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, data)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// gRPC connections over TLS: accepts, handshakes each connection in its own task (bounded by `handshake`), and
/// yields the ones that complete.
pub fn grpc_incoming(
    listener: tokio::net::TcpListener,
    tls: Arc<Tls>,
    handshake: Duration,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<GrpcTlsStream>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                return;
            }
            // As for plaintext gRPC (serve.rs): stream replies are small and must not wait for Nagle.
            let _ = stream.set_nodelay(true);
            // No valid certificate pair yet: the connection is closed.
            let Some(acceptor) = tls.grpc_acceptor() else { continue };
            let sender = tx.clone();
            tokio::spawn(async move {
                if let Ok(Ok(tls)) = tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                    let _ = sender.send(Ok(GrpcTlsStream(tls))).await;
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
