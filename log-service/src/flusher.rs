//! Group commit for one segment log file: appenders write their bytes, then wait here until an
//! fsync covers them. One fsync covers every append written before it started, so concurrent
//! appends (the writer's batch, gossip from peers) share the cost.

use std::fs::File;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;

use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushProgress {
    /// Every byte below this offset is on stable storage.
    pub synced: u64,
    /// An fsync failed: nothing written after the last good fsync may be acknowledged, ever.
    pub failed: bool,
}

struct State {
    written: u64,
    stop: bool,
}

pub struct Flusher {
    shared: Arc<(Mutex<State>, Condvar)>,
    progress: watch::Receiver<FlushProgress>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Flusher {
    /// Starts the flusher thread for `file`, whose first `synced` bytes are already durable.
    pub fn start(name: String, file: File, synced: u64) -> std::io::Result<Flusher> {
        let shared = Arc::new((
            Mutex::new(State {
                written: synced,
                stop: false,
            }),
            Condvar::new(),
        ));
        let (tx, progress) = watch::channel(FlushProgress {
            synced,
            failed: false,
        });
        let thread_shared = shared.clone();
        let thread = thread::Builder::new()
            .name(name)
            .spawn(move || run(thread_shared, file, synced, tx))?;
        Ok(Flusher {
            shared,
            progress,
            thread: Some(thread),
        })
    }

    /// Tells the flusher that bytes up to `written` are in the file and need an fsync.
    pub fn written(&self, written: u64) {
        let (lock, cv) = &*self.shared;
        let mut state = lock.lock().expect("flusher lock poisoned");
        state.written = state.written.max(written);
        cv.notify_one();
    }

    /// Waits until bytes up to `offset` are durable. Returns false if an fsync failed.
    pub async fn wait_synced(&self, offset: u64) -> bool {
        let mut rx = self.progress.clone();
        match rx.wait_for(|p| p.failed || p.synced >= offset).await {
            Ok(p) => !p.failed,
            Err(_) => false,
        }
    }

    pub fn progress(&self) -> FlushProgress {
        *self.progress.borrow()
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        {
            let (lock, cv) = &*self.shared;
            let mut state = lock.lock().expect("flusher lock poisoned");
            state.stop = true;
            cv.notify_one();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    shared: Arc<(Mutex<State>, Condvar)>,
    file: File,
    mut synced: u64,
    tx: watch::Sender<FlushProgress>,
) {
    let (lock, cv) = &*shared;
    loop {
        let target = {
            let mut state = lock.lock().expect("flusher lock poisoned");
            while state.written <= synced && !state.stop {
                state = cv.wait(state).expect("flusher lock poisoned");
            }
            if state.written <= synced {
                return; // stopping, nothing left to sync
            }
            state.written
        };
        if let Err(e) = file.sync_data() {
            // After a failed fsync the kernel may have dropped the dirty pages; retrying could
            // report success for data that is gone (the Postgres "fsyncgate" lesson). Stop
            // acknowledging for good; a restart re-reads and verifies the file.
            tracing::error!(error = %e, "fsync failed; the segment stops acknowledging writes");
            tx.send_replace(FlushProgress {
                synced,
                failed: true,
            });
            return;
        }
        synced = target;
        tx.send_replace(FlushProgress {
            synced,
            failed: false,
        });
    }
}
