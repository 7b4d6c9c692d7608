//! Reads that may never return, done off the collector's thread under a per-job deadline.
//!
//! Reading `/proc/<pid>/smaps_rollup`, `smaps`, `environ` or `cmdline` takes the target's mmap lock. A process
//! stuck in the kernel while holding it (a page fault on a dead NFS or FUSE mount, with a writer queued behind:
//! the classic "ps hangs") blocks every such read for as long as it is stuck, possibly forever. The collector
//! hands the jobs of one scrape to a worker thread and watches it: a job still running after the deadline is
//! abandoned with its thread (which cannot be interrupted; it is not waited for), and a fresh worker carries on
//! with the next job. At most `max_stuck` threads are ever left stuck: with that many stuck, no worker is started
//! and the jobs are returned unread. When an abandoned job finally returns, its thread reports it through
//! [`BoundedReader::take_returned`] and exits.
//!
//! The watch costs one thread start and two uncontended lock operations per job: the collector sleeps until the
//! current job's deadline or the end of the batch, whichever comes first, not once per job.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What one batch of jobs gave.
pub struct Outcome<R> {
    /// Per job, in order: `None` when it was not read (it overran, or came after the reader limit was reached).
    pub results: Vec<Option<R>>,
    /// Jobs that overran their deadline in this batch (indices into the batch), each leaving a stuck thread.
    pub overran: Vec<usize>,
    /// The batch stopped early because `max_stuck` threads are stuck: the jobs from this index on were not read.
    pub cut_at: Option<usize>,
}

pub struct BoundedReader<J> {
    timeout: Duration,
    max_stuck: usize,
    /// Threads abandoned in a job that has not returned yet.
    stuck: Arc<AtomicUsize>,
    /// Abandoned jobs that have returned since the last [`take_returned`](Self::take_returned).
    returned: Arc<Mutex<Vec<J>>>,
}

/// The state one worker shares with the collector watching it.
struct Slot<R> {
    state: Mutex<SlotState<R>>,
    finished: Condvar,
}

struct SlotState<R> {
    /// The job being read (or last read) and when its read started.
    current: usize,
    started: Instant,
    in_job: bool,
    results: Vec<(usize, R)>,
    finished: bool,
    abandoned: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<J: Clone + Send + Sync + 'static> BoundedReader<J> {
    pub fn new(timeout: Duration, max_stuck: usize) -> Self {
        BoundedReader {
            timeout,
            max_stuck,
            stuck: Arc::new(AtomicUsize::new(0)),
            returned: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Threads currently stuck in a job.
    pub fn stuck(&self) -> usize {
        self.stuck.load(Ordering::SeqCst)
    }

    /// Abandoned jobs that have returned since the last call.
    pub fn take_returned(&self) -> Vec<J> {
        std::mem::take(&mut *lock(&self.returned))
    }

    /// Runs `work` on every job, in order, on worker threads, giving each job at most the deadline. `S` is the
    /// worker's scratch space (buffers), made once per worker thread.
    pub fn run<S, R, F>(&self, jobs: Vec<J>, work: Arc<F>) -> Outcome<R>
    where
        S: Default,
        R: Send + 'static,
        F: Fn(&J, &mut S) -> R + Send + Sync + 'static,
    {
        let n = jobs.len();
        let jobs = Arc::new(jobs);
        let mut out = Outcome { results: (0..n).map(|_| None).collect(), overran: Vec::new(), cut_at: None };
        let mut next = 0;
        while next < n {
            if self.stuck() >= self.max_stuck {
                out.cut_at = Some(next);
                break;
            }
            let slot = Arc::new(Slot {
                state: Mutex::new(SlotState {
                    current: next,
                    started: Instant::now(),
                    in_job: false,
                    results: Vec::new(),
                    finished: false,
                    abandoned: false,
                }),
                finished: Condvar::new(),
            });
            let spawned = {
                let (jobs, slot, work) = (jobs.clone(), slot.clone(), work.clone());
                let (stuck, returned) = (self.stuck.clone(), self.returned.clone());
                std::thread::Builder::new()
                    .name("memory-reader".into())
                    .spawn(move || worker::<J, S, R, F>(&jobs, next, &slot, &*work, &stuck, &returned))
            };
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "memory: cannot start a reader thread");
                out.cut_at = Some(next);
                break;
            }
            let mut st = lock(&slot.state);
            let stopped_at = loop {
                if st.finished {
                    break None;
                }
                let overdue = st.started + self.timeout;
                let now = Instant::now();
                if st.in_job && now >= overdue {
                    st.abandoned = true;
                    self.stuck.fetch_add(1, Ordering::SeqCst);
                    break Some(st.current);
                }
                let wait = if st.in_job { overdue - now } else { self.timeout };
                st = slot.finished.wait_timeout(st, wait).unwrap_or_else(|p| p.into_inner()).0;
            };
            for (i, r) in st.results.drain(..) {
                out.results[i] = Some(r);
            }
            match stopped_at {
                None => next = n,
                Some(i) => {
                    out.overran.push(i);
                    next = i + 1;
                }
            }
        }
        out
    }
}

fn worker<J, S, R, F>(jobs: &[J], from: usize, slot: &Slot<R>, work: &F, stuck: &AtomicUsize, returned: &Mutex<Vec<J>>)
where
    J: Clone,
    S: Default,
    F: Fn(&J, &mut S) -> R,
{
    let mut scratch = S::default();
    for (i, job) in jobs.iter().enumerate().skip(from) {
        {
            let mut st = lock(&slot.state);
            st.current = i;
            st.started = Instant::now();
            st.in_job = true;
        }
        let r = work(job, &mut scratch);
        let mut st = lock(&slot.state);
        if st.abandoned {
            // The collector gave up on this job and moved on: report that it returned, and leave.
            stuck.fetch_sub(1, Ordering::SeqCst);
            lock(returned).push(job.clone());
            return;
        }
        st.in_job = false;
        st.results.push((i, r));
    }
    let mut st = lock(&slot.state);
    st.finished = true;
    slot.finished.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Jobs are numbers; job `k` blocks until a value arrives on gate `k` (when one is given), then doubles.
    fn gated(gates: Vec<(u32, mpsc::Receiver<()>)>) -> Arc<impl Fn(&u32, &mut ()) -> u32 + Send + Sync> {
        let gates = Mutex::new(gates.into_iter().collect::<std::collections::HashMap<_, _>>());
        Arc::new(move |j: &u32, _: &mut ()| {
            let gate = lock(&gates).remove(j);
            if let Some(g) = gate {
                let _ = g.recv();
            }
            j * 2
        })
    }

    #[test]
    fn all_jobs_read_in_order_without_a_stuck_one() {
        let r = BoundedReader::<u32>::new(Duration::from_secs(5), 2);
        let out = r.run((0..1000).collect(), gated(vec![]));
        assert_eq!(out.results, (0..1000).map(|j| Some(j * 2)).collect::<Vec<_>>());
        assert!(out.overran.is_empty() && out.cut_at.is_none());
        assert_eq!(r.stuck(), 0);
    }

    #[test]
    fn a_stuck_job_is_abandoned_and_the_rest_still_read() {
        let r = BoundedReader::<u32>::new(Duration::from_millis(100), 2);
        let (release, gate) = mpsc::channel();
        let out = r.run((0..10).collect(), gated(vec![(3, gate)]));
        assert_eq!(out.overran, [3]);
        assert_eq!(out.results[3], None);
        assert_eq!(out.results.iter().flatten().count(), 9);
        assert_eq!(out.results[9], Some(18));
        assert_eq!(r.stuck(), 1);
        assert!(r.take_returned().is_empty());
        // The stuck job returns: its thread reports it and the count goes down.
        release.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while r.stuck() > 0 {
            assert!(Instant::now() < deadline, "the released job never reported back");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(r.take_returned(), [3]);
        assert!(r.take_returned().is_empty(), "reported once");
    }

    #[test]
    fn never_more_than_max_stuck_threads() {
        let r = BoundedReader::<u32>::new(Duration::from_millis(50), 2);
        let mut releases = Vec::new();
        let mut gates = Vec::new();
        for k in [1, 2, 4] {
            let (tx, rx) = mpsc::channel();
            releases.push(tx);
            gates.push((k, rx));
        }
        let out = r.run((0..6).collect(), gated(gates));
        assert_eq!(out.overran, [1, 2]);
        assert_eq!(out.cut_at, Some(3), "no third reader is risked");
        assert_eq!(out.results, [Some(0), None, None, None, None, None]);
        assert_eq!(r.stuck(), 2);
        // A later batch reads nothing while both stay stuck.
        let out = r.run(vec![7, 8], gated(vec![]));
        assert_eq!(out.cut_at, Some(0));
        assert_eq!(out.results, [None, None]);
        drop(releases);
        let deadline = Instant::now() + Duration::from_secs(10);
        while r.stuck() > 0 {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut back = r.take_returned();
        back.sort();
        assert_eq!(back, [1, 2]);
        assert_eq!(r.run(vec![7, 8], gated(vec![])).results, [Some(14), Some(16)]);
    }
}
