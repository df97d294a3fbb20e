//! The registry of background tasks (a leaf: it knows no service). Each
//! task is registered with the [`Stage`] at which it stops; admin jobs go
//! through [`Workers::spawn_job`]. `lifecycle.rs` starts every task and
//! stops them in order; see there for what runs.

use std::future::Future;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

/// When a worker stops at shutdown, in this order (after the server has
/// stopped accepting requests and finished those in flight, and after the
/// jobs were cut off).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Stage {
    /// Work that must finish what it holds: the event writer.
    Drain,
    /// Subscribers' own tasks, which finish what the drained writer
    /// published to them (search indexing).
    Subscribers,
    /// Periodic upkeep, which makes a final pass over what the drained
    /// stage left (last-seen records, the search commit).
    Flush,
}

const STAGES: [Stage; 3] = [Stage::Drain, Stage::Subscribers, Stage::Flush];

/// Told to a worker when it should stop (make its final pass and return).
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    /// Resolves once shutdown reaches the worker's stage (at once if it has).
    pub async fn requested(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

struct Worker {
    name: &'static str,
    stage: Stage,
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

/// The registry of background tasks, owned by `Services`.
#[derive(Default)]
pub struct Workers {
    running: Mutex<Vec<Worker>>,
    jobs: Mutex<Vec<AbortHandle>>,
}

impl Workers {
    /// Starts `work` as a named worker; it is told to stop (through its
    /// [`Stop`]) when shutdown reaches `stage`, and shutdown waits for it.
    pub fn spawn<F, Fut>(&self, name: &'static str, stage: Stage, work: F)
    where
        F: FnOnce(Stop) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (stop, stop_rx) = watch::channel(false);
        let handle = tokio::spawn(work(Stop(stop_rx)));
        self.running.lock().push(Worker {
            name,
            stage,
            stop,
            handle,
        });
    }

    /// Starts an admin job (or any work that may be cut off at shutdown
    /// because it runs again at the next start). The handle lets a request
    /// wait for it; the job goes on if that request goes away.
    pub fn spawn_job<Fut>(&self, job: Fut) -> JoinHandle<()>
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        let handle = tokio::spawn(job);
        let mut jobs = self.jobs.lock();
        jobs.retain(|j| !j.is_finished());
        jobs.push(handle.abort_handle());
        handle
    }

    /// The workers' names with their stages, in start order (for tests and logs).
    pub fn names(&self) -> Vec<(&'static str, Stage)> {
        self.running
            .lock()
            .iter()
            .map(|w| (w.name, w.stage))
            .collect()
    }

    /// Cuts off the jobs, then stops each stage in order, waiting for its
    /// workers to return.
    pub async fn stop_all(&self) {
        for job in std::mem::take(&mut *self.jobs.lock()) {
            job.abort();
        }
        for stage in STAGES {
            let workers: Vec<Worker> = {
                let mut running = self.running.lock();
                let (now, later) = std::mem::take(&mut *running)
                    .into_iter()
                    .partition(|w| w.stage == stage);
                *running = later;
                now
            };
            for w in &workers {
                let _ = w.stop.send(true);
            }
            for w in workers {
                if let Err(e) = w.handle.await {
                    tracing::warn!(worker = w.name, error = %e, "a background task failed");
                }
            }
        }
    }
}

/// A service that keeps entries in memory reports how many, by cache name.
pub trait CacheSizes {
    fn cache_sizes(&self) -> Vec<(&'static str, usize)>;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// Each stage is told to stop only after the stage before it has
    /// returned, and jobs are cut off first.
    #[tokio::test]
    async fn stages_stop_in_order_and_jobs_are_cut_off() {
        let workers = Workers::default();
        let log = Arc::new(Mutex::new(Vec::new()));
        for (name, stage) in [
            ("flush", Stage::Flush),
            ("subscribers", Stage::Subscribers),
            ("drain", Stage::Drain),
        ] {
            let log = log.clone();
            workers.spawn(name, stage, move |mut stop| async move {
                stop.requested().await;
                log.lock().push(format!("{name} told"));
                tokio::task::yield_now().await;
                log.lock().push(format!("{name} done"));
            });
        }
        let job = workers.spawn_job(std::future::pending());
        workers.stop_all().await;
        assert!(job.await.expect_err("cut off").is_cancelled());
        assert_eq!(
            *log.lock(),
            [
                "drain told",
                "drain done",
                "subscribers told",
                "subscribers done",
                "flush told",
                "flush done"
            ]
        );
        assert!(workers.names().is_empty());
    }
}
