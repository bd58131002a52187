//! Read-your-writes for admin commands. A running `serve` or `gateway` listens on
//! `DATA_DIR/control.sock`; an admin command that appended control events up to sequence N
//! writes `N` and the server answers once its in-memory control state has applied N, so the
//! change is in force for the next request after the command returns. Without a running server
//! (no socket, or nobody listening) the command returns at once. Unix only; elsewhere a change
//! is in force within the follower's poll interval.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nats::EventLog;
use schemas::Stream;
use tokio::sync::watch;

/// How long the server waits for its state to reach the asked sequence, and about how long a
/// command waits for the answer: past it the command returns with a warning.
const WAIT: Duration = Duration::from_secs(5);
/// The longest request line (a `u64` in decimal and a newline).
const MAX_LINE: usize = 24;

fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("control.sock")
}

/// Starts answering on `DATA_DIR/control.sock` once every view in `applied` (the gateway's
/// control state, the admin API's users) has reached the asked sequence; the answer is the
/// lowest sequence among them. A socket
/// left by a process that is gone is replaced; one another live process answers on is left
/// alone (that process then answers).
#[cfg(unix)]
pub async fn listen(data_dir: &Path, applied: Vec<watch::Receiver<u64>>) {
    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::{UnixListener, UnixStream};

    let path = socket_path(data_dir);
    if UnixStream::connect(&path).await.is_ok() {
        tracing::warn!(path = %path.display(), "Another process answers admin commands on this data directory.");
        return;
    }
    let _ = std::fs::remove_file(&path);
    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "Admin commands will not wait for this server.");
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let mut applied = applied.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut line = String::new();
                let mut reader = tokio::io::BufReader::new(read.take(MAX_LINE as u64));
                let asked = match tokio::time::timeout(WAIT, reader.read_line(&mut line)).await {
                    Ok(Ok(_)) => line.trim().parse::<u64>().ok(),
                    _ => None,
                };
                let Some(asked) = asked else { return };
                let deadline = tokio::time::Instant::now() + WAIT;
                for view in &mut applied {
                    let _ = tokio::time::timeout_at(deadline, view.wait_for(|s| *s >= asked)).await;
                }
                let now = applied.iter().map(|v| *v.borrow()).min().unwrap_or(0);
                let _ = write.write_all(format!("{now}\n").as_bytes()).await;
            });
        }
    });
}

/// Not available off Unix: admin commands do not wait.
#[cfg(not(unix))]
pub async fn listen(_data_dir: &Path, _applied: Vec<watch::Receiver<u64>>) {}

/// Waits until a server running on `data_dir` has applied everything in the control stream
/// (which includes what this command just appended). Returns at once when none runs.
#[cfg(unix)]
pub async fn wait(data_dir: &Path, log: &EventLog) {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};

    let Ok(mut stream) = tokio::net::UnixStream::connect(socket_path(data_dir)).await else { return };
    let Ok(target) = log.last_seq(Stream::Control).await else { return };
    let asked = async {
        stream.write_all(format!("{target}\n").as_bytes()).await?;
        let mut line = String::new();
        tokio::io::BufReader::new(stream).read_line(&mut line).await?;
        Ok::<_, std::io::Error>(line.trim().parse::<u64>().unwrap_or(0))
    };
    match tokio::time::timeout(WAIT + Duration::from_secs(1), asked).await {
        Ok(Ok(applied)) if applied >= target => {}
        _ => tracing::warn!(
            seq = target,
            "The running server has not applied this change yet; it follows the log and will shortly."
        ),
    }
}

/// Not available off Unix: returns at once.
#[cfg(not(unix))]
pub async fn wait(_data_dir: &Path, _log: &EventLog) {}
