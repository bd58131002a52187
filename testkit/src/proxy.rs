//! Egress proxies on loopback for tests: an HTTP proxy (CONNECT tunnels, and plain-http requests
//! forwarded) and a SOCKS5 proxy, in-process on tokio. Each counts its connections, keeps what
//! clients sent through it (bounded), can demand a login, and can be stopped (listener and every
//! open connection closed at once) and started again on the same port mid-test.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use base64::Engine as _;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::AbortHandle;

/// Which protocol the proxy speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// HTTP: `CONNECT host:port` tunnels, and absolute-form plain-http requests forwarded.
    Http,
    /// SOCKS5 (`CONNECT` only), with or without username/password.
    Socks5,
}

/// The most bytes of client traffic kept per proxy.
const MAX_TRANSCRIPT: usize = 4 * 1024 * 1024;
/// The longest HTTP request head read.
const MAX_HEAD: usize = 16 * 1024;

#[derive(Default)]
struct Shared {
    connections: AtomicUsize,
    transcript: Mutex<Vec<u8>>,
    tasks: Mutex<Vec<AbortHandle>>,
}

impl Shared {
    fn keep(&self, bytes: &[u8]) {
        if let Ok(mut t) = self.transcript.lock() {
            let room = MAX_TRANSCRIPT.saturating_sub(t.len());
            t.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
    }

    fn track(&self, h: AbortHandle) {
        if let Ok(mut t) = self.tasks.lock() {
            t.retain(|h| !h.is_finished());
            t.push(h);
        }
    }
}

/// A running (or stopped) test proxy.
pub struct TestProxy {
    kind: Kind,
    addr: SocketAddr,
    login: Option<(String, String)>,
    shared: Arc<Shared>,
}

impl TestProxy {
    /// Starts a proxy of `kind` on a free loopback port; with `login`, clients must give it.
    pub async fn start(kind: Kind, login: Option<(&str, &str)>) -> anyhow::Result<TestProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await.context("Failed to bind the test proxy")?;
        let addr = listener.local_addr()?;
        let login = login.map(|(u, p)| (u.to_owned(), p.to_owned()));
        let proxy = TestProxy { kind, addr, login, shared: Arc::new(Shared::default()) };
        proxy.serve(listener);
        Ok(proxy)
    }

    fn serve(&self, listener: TcpListener) {
        let (kind, login, shared) = (self.kind, self.login.clone(), self.shared.clone());
        let accept = tokio::spawn({
            let shared = shared.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    shared.connections.fetch_add(1, Ordering::SeqCst);
                    let (login, s) = (login.clone(), shared.clone());
                    let task = tokio::spawn(async move {
                        let _ = match kind {
                            Kind::Http => http(client, login, s).await,
                            Kind::Socks5 => socks5(client, login, s).await,
                        };
                    });
                    shared.track(task.abort_handle());
                }
            }
        });
        shared.track(accept.abort_handle());
    }

    /// `scheme://127.0.0.1:port`, without the login.
    pub fn url(&self) -> String {
        let scheme = match self.kind {
            Kind::Http => "http",
            Kind::Socks5 => "socks5",
        };
        format!("{scheme}://{}", self.addr)
    }

    /// The URL with the login in it, when the proxy has one.
    pub fn url_with_login(&self) -> String {
        match (&self.login, self.url().split_once("://")) {
            (Some((u, p)), Some((scheme, rest))) => format!("{scheme}://{u}:{p}@{rest}"),
            _ => self.url(),
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far (refused logins included).
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Whether clients sent `needle` through the proxy (plain-http traffic is readable here).
    pub fn saw(&self, needle: &str) -> bool {
        let t = self.shared.transcript.lock().map(|t| t.clone()).unwrap_or_default();
        t.windows(needle.len().max(1)).any(|w| w == needle.as_bytes())
    }

    /// How many times clients sent `needle` through the proxy.
    pub fn count(&self, needle: &str) -> usize {
        let t = self.shared.transcript.lock().map(|t| t.clone()).unwrap_or_default();
        if needle.is_empty() {
            return 0;
        }
        t.windows(needle.len()).filter(|w| *w == needle.as_bytes()).count()
    }

    /// Stops listening and closes every open connection; clients get refused from now on.
    pub fn stop(&self) {
        if let Ok(mut t) = self.shared.tasks.lock() {
            for h in t.drain(..) {
                h.abort();
            }
        }
    }

    /// Listens again on the same port (after [`TestProxy::stop`]).
    pub async fn restart(&self) -> anyhow::Result<()> {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        // The aborted listener's socket closes when its task is dropped, which may take a turn.
        let mut tries = 0;
        let listener = loop {
            match socket.bind(self.addr) {
                Ok(()) => break socket.listen(128)?,
                Err(_) if tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e).context("Failed to listen again on the test proxy's port"),
            }
        };
        self.serve(listener);
        Ok(())
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Copies both ways until either side closes, keeping what the client sent.
async fn pipe(client: TcpStream, upstream: TcpStream, shared: Arc<Shared>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let up = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match cr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    shared.keep(&buf[..n]);
                    if uw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = uw.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut ur, &mut cw).await;
        let _ = cw.shutdown().await;
    };
    tokio::join!(up, down);
}

async fn read_head<R: AsyncRead + Unpin>(r: &mut R) -> anyhow::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        anyhow::ensure!(head.len() < MAX_HEAD, "head too long");
        anyhow::ensure!(r.read(&mut byte).await? == 1, "closed mid-head");
        head.push(byte[0]);
    }
    Ok(head)
}

async fn http(mut client: TcpStream, login: Option<(String, String)>, shared: Arc<Shared>) -> anyhow::Result<()> {
    let head = read_head(&mut client).await?;
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_owned();
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    if let Some((user, pass)) = &login {
        let want = format!("basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")));
        let given = text.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("proxy-authorization").then(|| value.trim().to_ascii_lowercase())
        });
        if given.as_deref() != Some(want.to_ascii_lowercase().as_str()) {
            client.write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\n\r\n").await?;
            return Ok(());
        }
    }
    if method.eq_ignore_ascii_case("CONNECT") {
        let Ok(upstream) = TcpStream::connect(target).await else {
            client.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n").await?;
            return Ok(());
        };
        client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await?;
        pipe(client, upstream, shared).await;
        return Ok(());
    }
    // A plain-http request in absolute form: forwarded as it is (without the proxy's login);
    // the fake upstreams accept the absolute form.
    let authority = target.strip_prefix("http://").and_then(|r| r.split('/').next()).unwrap_or_default();
    let Ok(mut upstream) = TcpStream::connect(authority).await else {
        client.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n").await?;
        return Ok(());
    };
    let forwarded: String =
        text.split_inclusive("\r\n").filter(|l| !l.to_ascii_lowercase().starts_with("proxy-authorization:")).collect();
    shared.keep(forwarded.as_bytes());
    upstream.write_all(forwarded.as_bytes()).await?;
    pipe(client, upstream, shared).await;
    Ok(())
}

async fn socks5(mut client: TcpStream, login: Option<(String, String)>, shared: Arc<Shared>) -> anyhow::Result<()> {
    let mut greeting = [0u8; 2];
    client.read_exact(&mut greeting).await?;
    anyhow::ensure!(greeting[0] == 5, "not SOCKS5");
    let mut methods = vec![0u8; usize::from(greeting[1])];
    client.read_exact(&mut methods).await?;
    match &login {
        None => client.write_all(&[5, 0]).await?,
        Some((user, pass)) => {
            if !methods.contains(&2) {
                client.write_all(&[5, 0xff]).await?;
                return Ok(());
            }
            client.write_all(&[5, 2]).await?;
            let mut v = [0u8; 2];
            client.read_exact(&mut v).await?;
            let mut u = vec![0u8; usize::from(v[1])];
            client.read_exact(&mut u).await?;
            let mut plen = [0u8; 1];
            client.read_exact(&mut plen).await?;
            let mut p = vec![0u8; usize::from(plen[0])];
            client.read_exact(&mut p).await?;
            if u != user.as_bytes() || p != pass.as_bytes() {
                client.write_all(&[1, 1]).await?;
                return Ok(());
            }
            client.write_all(&[1, 0]).await?;
        }
    }
    let mut req = [0u8; 4];
    client.read_exact(&mut req).await?;
    anyhow::ensure!(req[1] == 1, "only CONNECT");
    let host = match req[3] {
        1 => {
            let mut a = [0u8; 4];
            client.read_exact(&mut a).await?;
            std::net::Ipv4Addr::from(a).to_string()
        }
        4 => {
            let mut a = [0u8; 16];
            client.read_exact(&mut a).await?;
            format!("[{}]", std::net::Ipv6Addr::from(a))
        }
        3 => {
            let mut len = [0u8; 1];
            client.read_exact(&mut len).await?;
            let mut name = vec![0u8; usize::from(len[0])];
            client.read_exact(&mut name).await?;
            String::from_utf8_lossy(&name).into_owned()
        }
        _ => anyhow::bail!("bad address type"),
    };
    let mut port = [0u8; 2];
    client.read_exact(&mut port).await?;
    let target = format!("{host}:{}", u16::from_be_bytes(port));
    match TcpStream::connect(&target).await {
        Ok(upstream) => {
            client.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
            pipe(client, upstream, shared).await;
        }
        // 5: connection refused.
        Err(_) => client.write_all(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]).await?,
    }
    Ok(())
}
