//! The registry of background tasks (a leaf: it knows no service). Each
//! task is registered with the [`Stage`] at which it stops; admin jobs go
//! through [`Workers::spawn_job`]. `lifecycle.rs` starts every task and
//! stops them in order; see there for what runs.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

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
    gate: Arc<JobGate>,
}

/// What lets a shutdown stop jobs between their steps: set `stopping`,
/// then wait until `running` (jobs neither finished nor stopped at a
/// [`step_boundary`]) is zero.
struct JobGate {
    stopping: watch::Sender<bool>,
    running: watch::Sender<usize>,
}

impl Default for JobGate {
    fn default() -> Self {
        Self {
            stopping: watch::channel(false).0,
            running: watch::channel(0).0,
        }
    }
}

/// One job's place in the gate's count, given up once (when the job ends,
/// is cut off, or stops at a step boundary).
struct JobSlot {
    gate: Arc<JobGate>,
    released: AtomicBool,
}

impl JobSlot {
    fn release(&self) {
        if !self.released.swap(true, Ordering::AcqRel) {
            self.gate.running.send_modify(|n| *n -= 1);
        }
    }
}

/// Releases the slot however the job's task ends.
struct SlotGuard(Arc<JobSlot>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.0.release();
    }
}

tokio::task_local! {
    static JOB: Arc<JobSlot>;
}

/// A point between two steps of a job (nothing half-written, no
/// transaction open). Once shutdown has begun it never returns: the job
/// stops here and is cut off, and runs again at the next start. Outside a
/// job, or before shutdown, it returns at once.
pub async fn step_boundary() {
    let Ok(slot) = JOB.try_with(Arc::clone) else {
        return;
    };
    if *slot.gate.stopping.borrow() {
        slot.release();
        std::future::pending::<()>().await;
    }
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
        self.gate.running.send_modify(|n| *n += 1);
        let slot = Arc::new(JobSlot {
            gate: self.gate.clone(),
            released: AtomicBool::new(false),
        });
        let guard = SlotGuard(slot.clone());
        let handle = tokio::spawn(JOB.scope(slot, async move {
            let _guard = guard;
            job.await;
        }));
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

    /// Stops the jobs at their next [`step_boundary`] (waiting at most
    /// `job_grace`, then cutting off those still in a step), then stops
    /// each stage in order, waiting for its workers to return.
    pub async fn stop_all(&self, job_grace: Duration) {
        self.gate.stopping.send_replace(true);
        let mut running = self.gate.running.subscribe();
        if tokio::time::timeout(job_grace, running.wait_for(|n| *n == 0))
            .await
            .is_err()
        {
            tracing::warn!(
                jobs = *running.borrow(),
                "jobs still in a step at the shutdown timeout were cut off (they run again at the next start)"
            );
        }
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

    /// The hits and misses of the caches that count them.
    fn cache_lookups(&self) -> Vec<(&'static str, &crate::metrics::CacheLookups)> {
        Vec::new()
    }
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
        workers.stop_all(Duration::ZERO).await;
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

    /// A job finishes the step it is in and stops at the next boundary;
    /// the shutdown waits for that, not for the grace to pass.
    #[tokio::test]
    async fn jobs_stop_between_steps() {
        let workers = Workers::default();
        let steps = Arc::new(Mutex::new(Vec::new()));
        let (in_step, mut step_started) = tokio::sync::mpsc::channel(1);
        let (finish_tx, finish_rx) = tokio::sync::oneshot::channel::<()>();
        let log = steps.clone();
        let job = workers.spawn_job(async move {
            let mut finish = Some(finish_rx);
            for n in 0.. {
                step_boundary().await;
                log.lock().push(format!("step {n} begun"));
                if let Some(rx) = finish.take() {
                    in_step.send(()).await.unwrap();
                    rx.await.unwrap();
                }
                log.lock().push(format!("step {n} done"));
            }
        });
        step_started.recv().await.unwrap();
        let stopping = workers.stop_all(Duration::from_secs(3600));
        let finishing = async {
            tokio::task::yield_now().await;
            finish_tx.send(()).unwrap();
        };
        tokio::join!(stopping, finishing);
        assert!(job.await.expect_err("cut off").is_cancelled());
        assert_eq!(*steps.lock(), ["step 0 begun", "step 0 done"]);
    }
}
