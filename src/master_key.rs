//! The master key that seals upstream credentials: `LLM_ROUTER_MASTER_KEY` (base64, 32 bytes), or
//! on a single node without it, `master.key` in the data directory, created owner-only.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;
use schemas::secret::MasterKey;

/// Loads the master key from the environment or the key file, creating the file when absent.
pub fn load(data_dir: &Path) -> anyhow::Result<MasterKey> {
    if let Ok(text) = std::env::var("LLM_ROUTER_MASTER_KEY")
        && !text.is_empty()
    {
        return MasterKey::from_base64(&text).context("LLM_ROUTER_MASTER_KEY");
    }
    let path = data_dir.join("master.key");
    if path.exists() {
        let text = std::fs::read_to_string(&path).with_context(|| format!("Failed to read {}", path.display()))?;
        return MasterKey::from_base64(&text).with_context(|| path.display().to_string());
    }
    std::fs::create_dir_all(data_dir).with_context(|| format!("Failed to create {}", data_dir.display()))?;
    let key = MasterKey::generate();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    match opts.open(&path) {
        Ok(mut f) => {
            f.write_all(key.to_base64().as_bytes())?;
            f.sync_all()?;
            tracing::info!(path = %path.display(), "Master key file created.");
            Ok(key)
        }
        // Another process created it between our check and our create: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load(data_dir),
        Err(e) => Err(e).with_context(|| format!("Failed to create {}", path.display())),
    }
}
