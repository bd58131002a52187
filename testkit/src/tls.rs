//! A TLS listener on loopback whose certificate is self-signed (no public authority vouches for
//! it), for tests of an upstream that fails TLS verification. It counts the connections it
//! accepts and the handshakes that complete: a client that verifies certificates completes none.
//! The certificate (CN `localhost`, SAN `127.0.0.1`) and its key were made once with `openssl req
//! -x509` and are only test data.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context as _;
use tokio::io::AsyncWriteExt as _;
use tokio::task::JoinHandle;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

const CERT: &[u8] = include_bytes!("tls/self_signed.crt");
const KEY: &[u8] = include_bytes!("tls/self_signed.key");

/// The running listener; stopped on drop.
pub struct SelfSignedTls {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    handshakes: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for SelfSignedTls {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SelfSignedTls {
    /// Listens on 127.0.0.1 on a free port. A completed handshake is answered with a plain
    /// HTTP 200 so that a client that skipped verification would visibly succeed.
    pub async fn start() -> anyhow::Result<SelfSignedTls> {
        let certs = vec![CertificateDer::from_pem_slice(CERT).context("Failed to read the test certificate")?];
        let key = PrivateKeyDer::from_pem_slice(KEY).context("Failed to read the test key")?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (accepted, handshakes) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (a, h) = (accepted.clone(), handshakes.clone());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                let (acceptor, h) = (acceptor.clone(), h.clone());
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(tcp).await {
                        h.fetch_add(1, Ordering::SeqCst);
                        let _ = tls
                            .write_all(
                                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
                            )
                            .await;
                    }
                });
            }
        });
        Ok(SelfSignedTls { addr, accepted, handshakes, task })
    }

    /// `https://127.0.0.1:<port>/v1`.
    pub fn base_url(&self) -> String {
        format!("https://{}/v1", self.addr)
    }

    /// TCP connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// TLS handshakes completed so far.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }
}
