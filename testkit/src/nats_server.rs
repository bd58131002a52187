//! A real `nats-server` with JetStream, run as a child process for one test. It keeps its port
//! and store directory across `stop()`/`start()`, so tests can restart NATS under a client.
//! Nothing here talks the NATS protocol; clients belong to the crate under test.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Where the Debian package installs the server; `NATS_SERVER_BIN` overrides it.
const DEFAULT_BIN: &str = "/usr/sbin/nats-server";
/// How long a start may take before the test fails; JetStream recovery of a small store is fast.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A `nats-server -js` child bound to 127.0.0.1 on a fixed port, killed on drop.
pub struct NatsServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// A configuration file passed with `-c`, when set.
    config: Option<PathBuf>,
}

impl NatsServer {
    /// Starts a server on a free port with a fresh store directory and waits until it accepts
    /// connections.
    pub fn start_new() -> anyhow::Result<Self> {
        let port = free_port()?;
        let dir = tempfile::Builder::new().prefix("llmr-nats-").tempdir().context("Failed to create the store dir")?;
        let mut server = NatsServer { port, dir, child: None, config: None };
        server.start()?;
        Ok(server)
    }

    /// Reserves a port and a store directory without starting the server, for tests of a client
    /// that starts while NATS is down. Call [`NatsServer::start`] later.
    pub fn stopped() -> anyhow::Result<Self> {
        let port = free_port()?;
        let dir = tempfile::Builder::new().prefix("llmr-nats-").tempdir().context("Failed to create the store dir")?;
        Ok(NatsServer { port, dir, child: None, config: None })
    }

    /// Writes `text` as the server's configuration file (e.g. `max_payload: 65536`), used from
    /// the next [`NatsServer::start`]; the command-line port and store directory still apply.
    pub fn set_config(&mut self, text: &str) -> anyhow::Result<()> {
        let path = self.dir.path().join("nats-server.conf");
        std::fs::write(&path, text).context("Failed to write the nats-server config")?;
        self.config = Some(path);
        Ok(())
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream store directory (kept across restarts).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// Whether the child is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Starts the server again on the same port and store directory (no-op when running) and
    /// waits until it accepts connections.
    pub fn start(&mut self) -> anyhow::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let bin = std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| DEFAULT_BIN.to_owned());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .context("Failed to open the nats-server log")?;
        let log_err = log.try_clone().context("Failed to clone the log handle")?;
        let store = self.store_dir();
        let mut command = Command::new(&bin);
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        let child = command
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-sd")
            .arg(&store)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .with_context(|| format!("Failed to start {bin}"))?;
        self.child = Some(child);
        self.wait_ready()
    }

    /// Kills the server at once (SIGKILL: no flush, no goodbye to clients) and reaps it.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            // An already exited child makes kill fail; wait still reaps it.
            let _ = child.kill();
            child.wait().context("Failed to reap nats-server")?;
        }
        Ok(())
    }

    /// Stops the server with SIGTERM (it closes client connections and flushes its store) and
    /// waits for it to exit.
    pub fn stop_graceful(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            let status =
                Command::new("kill").args(["-TERM", &child.id().to_string()]).status().context("Failed to run kill")?;
            if !status.success() {
                let _ = child.kill();
            }
            child.wait().context("Failed to reap nats-server")?;
        }
        Ok(())
    }

    /// The server's combined stdout/stderr, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                bail!("nats-server exited with {status} during start:\n{}", self.log());
            }
            // The server opens its client port only after JetStream has recovered its store.
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = self.stop();
                bail!("nats-server did not accept connections within {START_TIMEOUT:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The store and log directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// A port that was free a moment ago: bind to port 0, read the port, release it.
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("Failed to bind a free port")?;
    Ok(listener.local_addr().context("Failed to read the bound port")?.port())
}
