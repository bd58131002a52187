//! Where counting runs: off the async runtime, on the blocking pool, at most one count per core
//! at a time (so counts cannot starve each other's cores or the runtime's), and stopped when the
//! client who asked has gone. Only scheduling here; the counting itself is in `bounded`.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};

use tokio::sync::Semaphore;

/// One permit per core: counting is pure CPU, so more at once only makes each slower.
static PERMITS: LazyLock<Arc<Semaphore>> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(2, NonZeroUsize::get);
    Arc::new(Semaphore::new(cores))
});

/// Sets its flag when dropped. The request's future owns it, so when the client goes and the
/// server drops that future, the count in progress stops at its next chunk.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Whether the work may be stopped when the awaiting future is dropped.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum OnDrop {
    /// A client's question (`count_tokens`): nobody is left to answer, so stop.
    Cancel,
    /// A billing estimate: the client is billed even if it left, so always finish.
    Finish,
}

/// Runs `work` on the blocking pool once a permit is free, handing it the cancellation flag.
/// `None` when the work panicked (the counting code catches the tokenizer's own panics, so this
/// is a bug of ours).
pub async fn run<T, F>(on_drop: OnDrop, work: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce(&AtomicBool) -> T + Send + 'static,
{
    let flag = Arc::new(AtomicBool::new(false));
    let _guard = (on_drop == OnDrop::Cancel).then(|| CancelOnDrop(flag.clone()));
    // The semaphore is never closed; if it were, counting without a permit is still correct.
    let permit = PERMITS.clone().acquire_owned().await.ok();
    let task = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        work(&flag)
    });
    task.await.ok()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;
    use std::time::Duration;

    use super::*;

    /// Work that spins until its flag is set (or 5 s pass) and records whether the flag stopped it.
    fn spin(stopped: Arc<AtomicU32>) -> impl FnOnce(&AtomicBool) + Send + 'static {
        move |flag: &AtomicBool| {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while std::time::Instant::now() < deadline {
                if flag.load(Ordering::Relaxed) {
                    stopped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    #[tokio::test]
    async fn dropping_a_cancellable_count_stops_its_work() {
        let stopped = Arc::new(AtomicU32::new(0));
        let gave_up = tokio::time::timeout(Duration::from_millis(50), run(OnDrop::Cancel, spin(stopped.clone()))).await;
        assert!(gave_up.is_err());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while stopped.load(Ordering::Relaxed) == 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(stopped.load(Ordering::Relaxed), 1, "the work did not see the client leave");
    }

    #[tokio::test]
    async fn dropping_a_billing_estimate_lets_it_finish() {
        let saw_flag = Arc::new(AtomicBool::new(false));
        let finished = Arc::new(AtomicBool::new(false));
        let (saw, done) = (saw_flag.clone(), finished.clone());
        let work = move |flag: &AtomicBool| {
            std::thread::sleep(Duration::from_millis(200));
            saw.store(flag.load(Ordering::Relaxed), Ordering::Relaxed);
            done.store(true, Ordering::Relaxed);
        };
        let gave_up = tokio::time::timeout(Duration::from_millis(20), run(OnDrop::Finish, work)).await;
        assert!(gave_up.is_err());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while !finished.load(Ordering::Relaxed) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(finished.load(Ordering::Relaxed));
        assert!(!saw_flag.load(Ordering::Relaxed), "a billing estimate was told to stop");
    }

    #[tokio::test]
    async fn at_most_one_count_per_core_runs_at_once() {
        let running = Arc::new(AtomicU32::new(0));
        let peak = Arc::new(AtomicU32::new(0));
        let counts = (0..8).map(|_| {
            let (running, peak) = (running.clone(), peak.clone());
            run(OnDrop::Finish, move |_| {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(30));
                running.fetch_sub(1, Ordering::SeqCst);
            })
        });
        futures::future::join_all(counts).await;
        let cores = std::thread::available_parallelism().map_or(2, NonZeroUsize::get);
        // Other tests in this process may hold permits too, so the peak can be lower, never higher.
        let peak = peak.load(Ordering::SeqCst) as usize;
        assert!((1..=cores).contains(&peak), "{peak} counts at once on {cores} cores");
    }
}
