//! Group commit over one SQLite connection on a dedicated thread: appends that arrive while a
//! commit is in flight are written together in the next transaction, so many concurrent requests
//! share one fsync. Used by the embedded log and by the JetStream spool.

use std::sync::mpsc;

use rusqlite::{Connection, Transaction};
use tokio::sync::oneshot;

use crate::LogError;

/// Most rows written in one transaction; bounds the latency of the commit a caller waits for.
const MAX_BATCH: usize = 4096;

/// One append: rows and, when the caller waits, where to say that they are durable.
pub(crate) struct Job<R> {
    pub rows: Vec<R>,
    pub done: Option<oneshot::Sender<Result<(), LogError>>>,
}

/// Handle to the writer thread.
pub(crate) struct GroupCommit<R> {
    tx: mpsc::Sender<Job<R>>,
}

impl<R> Clone for GroupCommit<R> {
    fn clone(&self) -> Self {
        Self { tx: self.tx.clone() }
    }
}

impl<R: Send + 'static> GroupCommit<R> {
    /// Starts the writer thread. `write` stores a batch inside the given transaction; `committed`
    /// runs after each successful commit (to wake readers or publishers).
    pub fn start<W, C>(name: &str, mut conn: Connection, mut write: W, mut committed: C) -> Result<Self, LogError>
    where
        W: FnMut(&Transaction<'_>, &[R]) -> rusqlite::Result<()> + Send + 'static,
        C: FnMut(&[R]) + Send + 'static,
    {
        let (tx, rx) = mpsc::channel::<Job<R>>();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut jobs = vec![first];
                    let mut n = jobs[0].rows.len();
                    while n < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(j) => {
                                n += j.rows.len();
                                jobs.push(j);
                            }
                            Err(_) => break,
                        }
                    }
                    let rows: Vec<R> = jobs.iter_mut().flat_map(|j| j.rows.drain(..)).collect();
                    let result = (|| {
                        let t = conn.transaction()?;
                        write(&t, &rows)?;
                        t.commit()
                    })();
                    let failed = result.as_ref().err().map(|e| e.to_string());
                    if failed.is_none() {
                        committed(&rows);
                    } else {
                        tracing::error!(error = ?failed, rows = rows.len(), "Event commit failed.");
                    }
                    for j in jobs {
                        if let Some(done) = j.done {
                            let r = match &failed {
                                None => Ok(()),
                                Some(e) => Err(LogError::Sqlite(e.clone())),
                            };
                            let _ = done.send(r);
                        }
                    }
                }
            })
            .map_err(|e| LogError::Sqlite(format!("cannot start writer thread: {e}")))?;
        Ok(Self { tx })
    }

    /// Writes `rows` and waits until they are committed.
    pub async fn write(&self, rows: Vec<R>) -> Result<(), LogError> {
        let (done, wait) = oneshot::channel();
        self.tx.send(Job { rows, done: Some(done) }).map_err(|_| LogError::Closed)?;
        wait.await.map_err(|_| LogError::Closed)?
    }

    /// Queues `rows` without waiting.
    pub fn write_nowait(&self, rows: Vec<R>) {
        if self.tx.send(Job { rows, done: None }).is_err() {
            tracing::warn!("Event writer stopped; an unawaited event was not written.");
        }
    }
}

/// Opens a SQLite file for the log: WAL, `synchronous=FULL`, a busy timeout for other processes.
pub(crate) fn open_durable(path: &std::path::Path) -> Result<Connection, LogError> {
    if let Some(parent) = path.parent() {
        create_private_dir(parent).map_err(|e| LogError::Sqlite(format!("{}: {e}", parent.display())))?;
    }
    let conn = Connection::open(path).map_err(|e| LogError::Sqlite(format!("{}: {e}", path.display())))?;
    // Before WAL mode creates the -wal and -shm files, which SQLite gives the database's mode.
    make_private(path).map_err(|e| LogError::Sqlite(format!("{}: {e}", path.display())))?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(sqlite)?;
    conn.pragma_update(None, "synchronous", "FULL").map_err(sqlite)?;
    conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(sqlite)?;
    Ok(conn)
}

/// Creates `dir` (and its parents) if missing; a directory this creates is readable by its owner
/// only (0700), since the log holds key hashes, tenants and usage. An existing directory keeps its
/// mode: it is the operator's.
pub fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Makes the SQLite database at `path`, and its -wal and -shm files when they exist, readable
/// and writable by the owner only (0600).
pub fn make_private(path: &std::path::Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mut files = vec![path.to_owned()];
        for suffix in ["-wal", "-shm"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            files.push(name.into());
        }
        for file in files {
            match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    Ok(())
}

pub(crate) fn sqlite(e: rusqlite::Error) -> LogError {
    LogError::Sqlite(e.to_string())
}
