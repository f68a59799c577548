//! The fanout queue: the bounded budget in front of the fanout threads,
//! and the threads themselves. What a job does is the feed shell's
//! (`super::feed`); this module owns only admission, queueing and the pool.
//!
//! The fanout of a PUBLISH or DELETE goes to its readers: the author's
//! followers, and the author's own live connections. It is cut into jobs of
//! at most [`FANOUT_CHUNK`] readers, spread over the fanout threads. The queue
//! is a budget of `limits.fanout_queue` readers (by default 4,194,304, as
//! many as 1,024 full jobs; reloadable),
//! counted from admission until a fanout thread has finished the job holding
//! them: reserved while the request is being committed, queued, or running.
//! A request costs its readers, at least [`MIN_REQUEST_COST`] (a job's own
//! weight, so tiny posts cannot pile up jobs). The rule:
//!
//! - A PUBLISH or DELETE is **admitted while less than the budget is
//!   outstanding**, checked before anything is written (after the payload
//!   limit). It then reserves its whole cost at once, counted from the
//!   author's follower count plus one. So any post, a celebrity's million
//!   followers included, is admitted whenever the queue is not full, and the
//!   outstanding count exceeds the budget by less than one request (plus
//!   followers gained while a request was being committed: a committed post
//!   goes to all of them).
//! - Otherwise the request is **refused before it is committed** with ERROR
//!   UNAVAILABLE "fanout queue full, retry" (non-fatal; nothing is stored or
//!   deleted) and counted in `heartline_fanout_refused_total`. The client
//!   retries later, as after any UNAVAILABLE.
//! - Admitted jobs go onto an unbounded channel, so queueing never blocks:
//!   the bound is enforced at admission, never by waiting. No thread waits
//!   for queue space, so the blocking pool, which the store writes and the
//!   last-seen flushes share, only ever runs the listing of followers (CPU
//!   work), never a wait behind fanout.
//! - What a request reserved and does not use goes back when it ends: a
//!   refused commit, NOT_FOUND, fewer followers than counted, a panic.
//!
//! The outstanding count is the gauge `heartline_fanout_queue_depth`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use heartline_core::feed::Post;
use tokio_util::sync::CancellationToken;

/// Readers per fanout job: big posts are spread over the pool.
pub(super) const FANOUT_CHUNK: usize = 4_096;
/// What a request costs at least, in readers: a job's allocation and
/// hand-off weigh about as much as this many readers.
pub(super) const MIN_REQUEST_COST: usize = 64;

/// What goes to followers.
pub(crate) enum Push {
    Item(Arc<Post>),
    Deleted(u64),
}

pub(crate) struct Job {
    pub(crate) push: Push,
    pub(crate) followers: Vec<u64>,
    pub(crate) into_inboxes: bool,
    /// Set on a post's last job: when it finishes, the fanout is complete.
    pub(crate) published_at: Option<Instant>,
    /// Given back when the job is dropped: finished, or never run.
    _slot: Slot,
}

/// What is outstanding, and up to where requests are admitted.
#[derive(Debug)]
struct Budget {
    outstanding: AtomicUsize,
}

impl Budget {
    fn release(&self, readers: usize) {
        if readers > 0 {
            self.outstanding.fetch_sub(readers, Ordering::AcqRel);
        }
    }
}

/// One queued job's share of the budget.
struct Slot {
    budget: Arc<Budget>,
    readers: usize,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.budget.release(self.readers);
    }
}

/// The budget admitted for one request and not queued yet. Dropping it gives
/// back what was not queued.
#[must_use = "dropping an admission gives its budget back at once"]
#[derive(Debug)]
pub(super) struct Admission {
    budget: Arc<Budget>,
    readers: usize,
}

impl Admission {
    /// What is still reserved, in readers.
    #[cfg(test)]
    pub(crate) fn reserved(&self) -> usize {
        self.readers
    }

    /// Makes the reservation exactly `readers`: gives back a surplus, or
    /// takes more whatever is outstanding (the request is committed by then).
    fn resize(&mut self, readers: usize) {
        if readers < self.readers {
            self.budget.release(self.readers - readers);
        } else {
            self.budget.outstanding.fetch_add(readers - self.readers, Ordering::AcqRel);
        }
        self.readers = readers;
    }

    fn slot(&mut self, readers: usize) -> Slot {
        debug_assert!(readers <= self.readers);
        self.readers -= readers;
        Slot { budget: self.budget.clone(), readers }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.budget.release(self.readers);
    }
}

/// What a fanout to `readers` readers costs.
fn cost(readers: usize) -> usize {
    readers.max(MIN_REQUEST_COST)
}

/// The bounded queue in front of the fanout threads (see the module doc).
pub(super) struct FanoutQueue {
    budget: Arc<Budget>,
    /// Unbounded: the budget bounds it, so a send never waits.
    jobs: Sender<Job>,
    waiting: Mutex<Option<Receiver<Job>>>,
}

impl FanoutQueue {
    #[allow(clippy::new_without_default)]
    pub(super) fn new() -> Self {
        let (jobs, waiting) = std::sync::mpsc::channel();
        let budget = Arc::new(Budget { outstanding: AtomicUsize::new(0) });
        Self { budget, jobs, waiting: Mutex::new(Some(waiting)) }
    }

    /// Readers outstanding: reserved by requests being committed, queued, or
    /// being fanned out.
    pub(super) fn depth(&self) -> usize {
        self.budget.outstanding.load(Ordering::Acquire)
    }

    /// Admits the fanout of a request that will reach about `readers`
    /// readers, or `None` while `capacity` readers or more are outstanding.
    /// Never blocks.
    pub(super) fn admit(&self, readers: usize, capacity: usize) -> Option<Admission> {
        let readers = cost(readers);
        let admitted = self
            .budget
            .outstanding
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < capacity).then_some(n + readers));
        admitted.ok().map(|_| Admission { budget: self.budget.clone(), readers })
    }

    /// Queues a push to `readers` under `admission`; returns the jobs
    /// queued. Never blocks.
    pub(crate) fn push(
        &self,
        mut admission: Admission,
        push: impl Fn() -> Push,
        readers: &[u64],
        into_inboxes: bool,
        published_at: Instant,
    ) -> usize {
        admission.resize(cost(readers.len()));
        let last = readers.len().div_ceil(FANOUT_CHUNK).saturating_sub(1);
        let mut queued = 0;
        for (i, followers) in readers.chunks(FANOUT_CHUNK).enumerate() {
            // The last job also carries what the minimum cost adds.
            let _slot = admission.slot(if i == last { admission.readers } else { followers.len() });
            let job = Job {
                push: push(),
                followers: followers.to_vec(),
                into_inboxes,
                published_at: (i == last).then_some(published_at),
                _slot,
            };
            // Fails only once the fanout threads have stopped; the job's slot goes back.
            if self.jobs.send(job).is_err() {
                break;
            }
            queued += 1;
        }
        queued
    }
    /// Starts `workers` threads that hand each job to `run`; they stop
    /// with `stop`. Only the first call starts any.
    pub(crate) fn start(&self, workers: usize, stop: CancellationToken, run: Arc<dyn Fn(Job) + Send + Sync>) {
        let Some(receiver) = self.waiting.lock().unwrap_or_else(|p| p.into_inner()).take() else { return };
        let receiver = Arc::new(Mutex::new(receiver));
        for n in 0..workers.max(1) {
            let (receiver, stop, run) = (receiver.clone(), stop.clone(), run.clone());
            let spawned = std::thread::Builder::new().name(format!("heartline-fanout-{n}")).spawn(move || loop {
                let next = receiver.lock().unwrap_or_else(|p| p.into_inner()).recv_timeout(Duration::from_millis(100));
                match next {
                    // Dropping the job at the end gives its slot back.
                    Ok(job) => run(job),
                    Err(RecvTimeoutError::Timeout) if !stop.is_cancelled() => {}
                    Err(_) => return,
                }
            });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a fanout thread");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default budget (`limits.fanout_queue`).
    const FANOUT_QUEUE: usize = 1_024 * FANOUT_CHUNK;

    /// A queue with a fixed budget.
    struct Capacity(FanoutQueue, usize);

    impl Capacity {
        fn admit(&self, readers: usize) -> Option<Admission> {
            self.0.admit(readers, self.1)
        }
    }

    impl std::ops::Deref for Capacity {
        type Target = FanoutQueue;

        fn deref(&self) -> &FanoutQueue {
            &self.0
        }
    }

    fn post() -> Push {
        Push::Deleted(7)
    }

    fn readers(n: usize) -> Vec<u64> {
        (1..=n as u64).collect()
    }

    /// Runs `f` on another thread and fails if it has not returned within a
    /// second: what "never blocks" means here.
    fn within_a_second<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (done, result) = std::sync::mpsc::channel();
        std::thread::spawn(move || done.send(f()));
        result.recv_timeout(Duration::from_secs(1)).expect("blocked")
    }

    fn receiver(queue: &FanoutQueue) -> Receiver<Job> {
        queue.waiting.lock().unwrap().take().unwrap()
    }

    #[test]
    fn a_full_queue_refuses_and_a_drained_one_admits_again() {
        let queue = Capacity(FanoutQueue::new(), 3 * MIN_REQUEST_COST);
        let jobs = receiver(&queue);
        let mut held: Vec<Admission> = (0..3).map(|_| queue.admit(1).expect("room")).collect();
        assert_eq!(queue.depth(), 3 * MIN_REQUEST_COST, "a small request costs the minimum");
        assert!(queue.admit(1).is_none(), "full: refused");
        assert_eq!(queue.depth(), 3 * MIN_REQUEST_COST, "a refusal reserves nothing");

        // Queued is still outstanding, until a fanout thread finishes the job.
        assert_eq!(queue.push(held.pop().unwrap(), post, &readers(10), false, Instant::now()), 1);
        assert_eq!(queue.depth(), 3 * MIN_REQUEST_COST);
        assert!(queue.admit(1).is_none());
        let job = jobs.try_recv().expect("queued");
        assert!(queue.admit(1).is_none(), "running is still outstanding");
        drop(job);
        assert_eq!(queue.depth(), 2 * MIN_REQUEST_COST, "finished: drained");
        let again = queue.admit(1).expect("admitted again");
        assert!(queue.admit(1).is_none());

        // A request that ends without queueing (refused commit, NOT_FOUND) gives its share back.
        drop(again);
        drop(held);
        assert_eq!(queue.depth(), 0);
        assert!(queue.admit(1).is_some());
    }

    #[test]
    fn a_celebrity_post_is_admitted_whenever_the_queue_is_not_full() {
        let queue = Capacity(FanoutQueue::new(), FANOUT_QUEUE);
        let celebrity = 1_000_000 + 1;
        let alone = queue.admit(celebrity).expect("an empty queue takes a million readers");
        assert_eq!((alone.reserved(), queue.depth()), (celebrity, celebrity));
        drop(alone);

        let nearly = queue.admit(FANOUT_QUEUE - 1).unwrap();
        let last_in = queue.admit(celebrity).expect("one reader short of full still admits a celebrity");
        assert_eq!(queue.depth(), FANOUT_QUEUE - 1 + celebrity, "over the budget by less than one request");
        assert!(queue.admit(1).is_none() && queue.admit(celebrity).is_none());
        drop((nearly, last_in));

        // Even a request bigger than the whole budget goes, when the queue is not full.
        assert!(queue.admit(10 * FANOUT_QUEUE).is_some());
    }

    #[test]
    fn queueing_never_blocks_and_follows_the_real_reader_count() {
        let queue = Arc::new(Capacity(FanoutQueue::new(), FANOUT_CHUNK));
        // Nobody reads the queue: a bounded channel would block here.
        let jobs = receiver(&queue);
        let pushing = queue.clone();
        let queued = within_a_second(move || {
            let mut queued = Vec::new();
            while let Some(admission) = pushing.admit(FANOUT_CHUNK) {
                // Followers gained during the commit: a committed post goes to all of them.
                queued.push(pushing.push(admission, post, &readers(40 * FANOUT_CHUNK), true, Instant::now()));
            }
            queued
        });
        assert_eq!(queued, [40], "the first request fills the queue, the next is refused");
        assert_eq!(queue.depth(), 40 * FANOUT_CHUNK);
        let sizes: Vec<usize> = jobs.try_iter().map(|job| job.followers.len()).collect();
        assert_eq!(sizes, [FANOUT_CHUNK; 40]);
        assert_eq!(queue.depth(), 0, "every finished job gave its share back");

        // Fewer readers than counted: the surplus goes back at once.
        let admission = queue.admit(FANOUT_CHUNK).unwrap();
        assert_eq!(queue.push(admission, post, &readers(3), false, Instant::now()), 1);
        assert_eq!(queue.depth(), MIN_REQUEST_COST);
        drop(jobs.try_recv().unwrap());
        assert_eq!(queue.depth(), 0);
    }

    #[test]
    fn only_the_last_job_of_a_post_marks_it_complete() {
        let queue = Capacity(FanoutQueue::new(), FANOUT_QUEUE);
        let jobs = receiver(&queue);
        let admission = queue.admit(2 * FANOUT_CHUNK + 1).unwrap();
        assert_eq!(queue.push(admission, post, &readers(2 * FANOUT_CHUNK + 1), true, Instant::now()), 3);
        let jobs: Vec<Job> = jobs.try_iter().collect();
        let sizes: Vec<(usize, bool)> = jobs.iter().map(|j| (j.followers.len(), j.published_at.is_some())).collect();
        assert_eq!(sizes, [(FANOUT_CHUNK, false), (FANOUT_CHUNK, false), (1, true)]);
        let everyone: Vec<u64> = jobs.iter().flat_map(|j| j.followers.iter().copied()).collect();
        assert_eq!(everyone, readers(2 * FANOUT_CHUNK + 1));
        // Each job gives back its readers; the minimum cost is per request, not per job.
        let shares: Vec<usize> = jobs.iter().map(|j| j._slot.readers).collect();
        assert_eq!(shares, [FANOUT_CHUNK, FANOUT_CHUNK, 1]);
    }

    #[test]
    fn a_stopped_pool_gives_the_budget_back() {
        let queue = Capacity(FanoutQueue::new(), FANOUT_QUEUE);
        drop(receiver(&queue));
        let admission = queue.admit(3 * FANOUT_CHUNK).unwrap();
        assert_eq!(queue.push(admission, post, &readers(3 * FANOUT_CHUNK), false, Instant::now()), 0);
        assert_eq!(queue.depth(), 0);
    }

    #[test]
    fn racing_publishers_overshoot_by_less_than_one_request() {
        let queue = Arc::new(Capacity(FanoutQueue::new(), FANOUT_QUEUE));
        let biggest = 2_000_000;
        let threads: Vec<_> = (0..8u64)
            .map(|seed| {
                let queue = queue.clone();
                std::thread::spawn(move || {
                    let mut held = Vec::new();
                    let mut readers = seed as usize * 7_919 + 1;
                    while let Some(admission) = queue.admit(readers) {
                        held.push(admission);
                        readers = (readers * 31 + 17) % biggest;
                    }
                    held
                })
            })
            .collect();
        let held: Vec<Admission> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
        let reserved: usize = held.iter().map(Admission::reserved).sum();
        assert_eq!(queue.depth(), reserved);
        assert!((FANOUT_QUEUE..FANOUT_QUEUE + biggest).contains(&reserved), "{reserved}");
        drop(held);
        assert_eq!(queue.depth(), 0);
    }
}
