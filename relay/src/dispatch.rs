//! Per-target delivery: a queue of alerts, one sender task that respects the robot's rate limit, merges whatever
//! is queued into as few messages as fit (digests), and reports each alert's fate back to the webhook requests
//! waiting for it.
//!
//! Delivery semantics (see the README):
//! - A webhook request is answered 2xx only when every one of its alerts is in a message the robot accepted.
//! - Each alert of a notification has a key (notification identity + alert identity). Keys of delivered alerts
//!   are remembered for `dedup_window`; an Alertmanager retry of the same notification therefore waits for the
//!   alerts still queued and does not send the delivered ones again.
//! - A transient failure fails the alerts of the message that failed and of the rest of its batch (they are
//!   forgotten, so the retry re-queues them); the requests get 503 and Alertmanager retries.
//! - The platform's rate-limit answer stops the target for `rate_limited_backoff`; meanwhile requests get 503.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::alert::{Notification, item_keys};
use crate::metrics::Metrics;
use crate::render::{Entry, GroupInfo, Renderer};
use crate::robot::{Failure, FailureReason, Robot};

type Key = [u8; 32];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemStatus {
    Pending,
    Delivered,
    Failed(Failure),
}

struct Item {
    key: Key,
    entry: Entry,
    status: watch::Sender<ItemStatus>,
}

struct State {
    queue: VecDeque<Arc<Item>>,
    /// Alerts queued or in flight (`Some`) and alerts delivered within the dedup window (`None`; the entry is
    /// dropped so that remembering costs only the key).
    ledger: HashMap<Key, Option<Arc<Item>>>,
    expiry: VecDeque<(Instant, Key)>,
    backoff_until: Option<Instant>,
    pending: usize,
}

/// The answer for one webhook request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered { alerts: usize, duplicates: usize },
    Transient(Failure),
    Permanent(Failure),
}

pub struct Limits {
    pub messages: usize,
    pub window: Duration,
    pub rate_limited_backoff: Duration,
    pub dedup_window: Duration,
}

pub struct Worker {
    name: String,
    renderer: Renderer,
    robot: Robot,
    metrics: Arc<Metrics>,
    limits: Limits,
    state: Mutex<State>,
    wake: Notify,
}

impl Worker {
    pub fn new(name: String, renderer: Renderer, robot: Robot, metrics: Arc<Metrics>, limits: Limits) -> Self {
        metrics.init_target(&name);
        Worker {
            name,
            renderer,
            robot,
            metrics,
            limits,
            state: Mutex::new(State {
                queue: VecDeque::new(),
                ledger: HashMap::new(),
                expiry: VecDeque::new(),
                backoff_until: None,
                pending: 0,
            }),
            wake: Notify::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (every update is a single step); keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue the notification's alerts (those not already queued or delivered) and wait up to `max_wait` for
    /// their fate.
    pub async fn deliver(&self, n: &Notification, max_wait: Duration) -> Outcome {
        let keys = item_keys(n);
        let group = Arc::new(GroupInfo::new(n));
        let mut waiting: Vec<Arc<Item>> = Vec::with_capacity(keys.len());
        let mut duplicates = 0;
        let mut already_delivered = 0;
        let mut fresh = 0;
        {
            let now = Instant::now();
            let mut st = self.lock();
            sweep(&mut st, now);
            let backing_off = st.backoff_until.filter(|t| *t > now);
            for (key, alert) in keys.iter().zip(&n.alerts) {
                match st.ledger.get(key) {
                    Some(Some(item)) => {
                        duplicates += 1;
                        waiting.push(item.clone());
                        continue;
                    }
                    Some(None) => {
                        duplicates += 1;
                        already_delivered += 1;
                        continue;
                    }
                    None => {}
                }
                if let Some(until) = backing_off {
                    drop(st);
                    return Outcome::Transient(Failure {
                        reason: FailureReason::BackingOff,
                        detail: format!(
                            "the platform rate-limited this robot; sending resumes in {:.0}s",
                            until.saturating_duration_since(now).as_secs_f64().ceil()
                        ),
                    });
                }
                let (tx, _) = watch::channel(ItemStatus::Pending);
                let item = Arc::new(Item {
                    key: *key,
                    entry: Entry { group: group.clone(), view: self.renderer.view(n, alert) },
                    status: tx,
                });
                st.ledger.insert(*key, Some(item.clone()));
                st.queue.push_back(item.clone());
                st.pending += 1;
                fresh += 1;
                waiting.push(item);
            }
            self.metrics.queue_depth.with_label_values(&[&self.name]).set(st.pending as i64);
        }
        if duplicates > 0 {
            self.metrics.retries.with_label_values(&[&self.name]).inc();
        }
        if fresh > 0 {
            self.wake.notify_one();
        }
        let wait_all = async {
            for item in &waiting {
                let mut rx = item.status.subscribe();
                // The sender is alive: `waiting` holds the item.
                let _ = rx.wait_for(|s| *s != ItemStatus::Pending).await;
            }
        };
        let timed_out = tokio::time::timeout(max_wait, wait_all).await.is_err();
        let mut transient = None;
        let mut permanent = None;
        let mut still_queued = 0;
        for item in &waiting {
            match &*item.status.borrow() {
                ItemStatus::Delivered => {}
                ItemStatus::Pending => still_queued += 1,
                ItemStatus::Failed(f) if f.reason.is_transient() => {
                    transient.get_or_insert_with(|| f.clone());
                }
                ItemStatus::Failed(f) => {
                    permanent.get_or_insert_with(|| f.clone());
                }
            }
        }
        if let Some(f) = transient {
            return Outcome::Transient(f);
        }
        if timed_out && still_queued > 0 {
            return Outcome::Transient(Failure {
                reason: FailureReason::RateLimited,
                detail: format!(
                    "{still_queued} alerts are still queued behind the robot's rate limit; they stay queued and \
                     a retry of this notification waits for them"
                ),
            });
        }
        if let Some(f) = permanent {
            return Outcome::Permanent(f);
        }
        Outcome::Delivered { alerts: waiting.len() + already_delivered, duplicates }
    }

    fn settle(&self, items: &[Arc<Item>], status: ItemStatus) {
        let now = Instant::now();
        let mut st = self.lock();
        for item in items {
            if *item.status.borrow() != ItemStatus::Pending {
                continue;
            }
            st.pending = st.pending.saturating_sub(1);
            let ours = matches!(st.ledger.get(&item.key), Some(Some(i)) if Arc::ptr_eq(i, item));
            if ours {
                if status == ItemStatus::Delivered {
                    st.ledger.insert(item.key, None);
                    st.expiry.push_back((now + self.limits.dedup_window, item.key));
                } else {
                    st.ledger.remove(&item.key);
                }
            }
            item.status.send_replace(status.clone());
        }
        self.metrics.queue_depth.with_label_values(&[&self.name]).set(st.pending as i64);
    }

    /// Fail everything still queued (not yet taken into a batch).
    fn fail_queue(&self, failure: &Failure) {
        let drained: Vec<Arc<Item>> = self.lock().queue.drain(..).collect();
        self.settle(&drained, ItemStatus::Failed(failure.clone()));
    }

    fn record_failure(&self, f: &Failure, alerts: usize) {
        self.metrics.send_failures.with_label_values(&[&self.name, f.reason.as_str()]).inc();
        if f.reason.is_transient() {
            tracing::warn!(relay_target = %self.name, reason = f.reason.as_str(), detail = %f.detail, alerts,
                "robot did not accept a message; Alertmanager will retry");
        } else {
            tracing::error!(relay_target = %self.name, reason = f.reason.as_str(), detail = %f.detail, alerts,
                "robot rejected a message permanently");
        }
    }

    /// The sender loop; returns when `shutdown` turns true.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut sent: VecDeque<Instant> = VecDeque::new();
        let mut consecutive_failures: u32 = 0;
        loop {
            // Wait for work.
            loop {
                if *shutdown.borrow() {
                    self.fail_queue(&shutting_down());
                    return;
                }
                if !self.lock().queue.is_empty() {
                    break;
                }
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = shutdown.changed() => {}
                }
            }
            if consecutive_failures > 0 {
                let pause = Duration::from_millis(250u64.saturating_mul(1 << consecutive_failures.min(6)))
                    .min(Duration::from_secs(10));
                if sleep_or_shutdown(pause, &mut shutdown).await {
                    continue;
                }
            }
            if !self.wait_for_slot(&mut sent, &mut shutdown).await {
                continue;
            }
            let batch: Vec<Arc<Item>> = self.lock().queue.drain(..).collect();
            if batch.is_empty() {
                continue;
            }
            let entries: Vec<&Entry> = batch.iter().map(|i| &i.entry).collect();
            let messages = match self.renderer.pack(&entries) {
                Ok(m) => m,
                Err(e) => {
                    let f = Failure { reason: FailureReason::RenderFailed, detail: e.to_string() };
                    self.record_failure(&f, batch.len());
                    self.settle(&batch, ItemStatus::Failed(f));
                    continue;
                }
            };
            let parts = messages.len();
            let mut offset = 0;
            for (i, msg) in messages.into_iter().enumerate() {
                if i > 0 && !self.wait_for_slot(&mut sent, &mut shutdown).await {
                    // Shutting down: the rest of the batch is not sent; Alertmanager retries it.
                    self.settle(&batch[offset..], ItemStatus::Failed(shutting_down()));
                    break;
                }
                let items = &batch[offset..offset + msg.count];
                let started = Instant::now();
                let result = self.robot.send(msg.body).await;
                let done = Instant::now();
                sent.push_back(done);
                self.metrics
                    .send_duration_seconds
                    .with_label_values(&[&self.name])
                    .observe(done.duration_since(started).as_secs_f64());
                match result {
                    Ok(()) => {
                        consecutive_failures = 0;
                        self.metrics.messages_sent.with_label_values(&[&self.name]).inc();
                        self.metrics.alerts_delivered.with_label_values(&[&self.name]).inc_by(items.len() as u64);
                        if parts > 1 {
                            self.metrics.split_messages.with_label_values(&[&self.name]).inc();
                        }
                        let first = &items[0].entry.group;
                        if items.iter().any(|i| !Arc::ptr_eq(&i.entry.group, first)) {
                            self.metrics.digest_messages.with_label_values(&[&self.name]).inc();
                        }
                        if msg.truncated {
                            tracing::warn!(relay_target = %self.name,
                                "an alert too large for one message was shortened");
                        }
                        tracing::debug!(relay_target = %self.name, alerts = items.len(), part = i + 1, parts,
                            bytes = msg.measured, "message accepted");
                        self.settle(items, ItemStatus::Delivered);
                        offset += msg.count;
                    }
                    Err(f) => {
                        self.record_failure(&f, items.len());
                        if f.reason == FailureReason::RateLimited {
                            let until = Instant::now() + self.limits.rate_limited_backoff;
                            self.lock().backoff_until = Some(until);
                            tracing::warn!(relay_target = %self.name,
                                backoff_seconds = self.limits.rate_limited_backoff.as_secs_f64(),
                                "platform rate limit hit; pausing this robot as the platform requires");
                            self.settle(&batch[offset..], ItemStatus::Failed(f.clone()));
                            self.fail_queue(&f);
                            sleep_or_shutdown(self.limits.rate_limited_backoff, &mut shutdown).await;
                            self.lock().backoff_until = None;
                            break;
                        }
                        if f.reason.is_transient() {
                            consecutive_failures = consecutive_failures.saturating_add(1);
                            self.settle(&batch[offset..], ItemStatus::Failed(f));
                            break;
                        }
                        if f.reason.affects_robot() {
                            self.settle(&batch[offset..], ItemStatus::Failed(f));
                            break;
                        }
                        // This message's content was refused; the other parts may still go through.
                        self.settle(items, ItemStatus::Failed(f));
                        offset += msg.count;
                    }
                }
            }
        }
    }

    /// Wait until sending one more message keeps within `messages` per `window`. Returns false on shutdown.
    ///
    /// Sends are timed by when the robot's answer arrived, which is never earlier than when the robot counted
    /// the request, so the robot can never see more than `messages` within any window.
    async fn wait_for_slot(&self, sent: &mut VecDeque<Instant>, shutdown: &mut watch::Receiver<bool>) -> bool {
        let mut waited = false;
        let started = Instant::now();
        loop {
            let now = Instant::now();
            while sent.front().is_some_and(|t| *t + self.limits.window <= now) {
                sent.pop_front();
            }
            if sent.len() < self.limits.messages {
                break;
            }
            waited = true;
            let until = *sent.front().expect("non-empty: len >= messages >= 1") + self.limits.window;
            if sleep_or_shutdown(until.saturating_duration_since(now), shutdown).await {
                return false;
            }
        }
        if waited {
            self.metrics.rate_limit_waits.with_label_values(&[&self.name]).inc();
            self.metrics
                .rate_limit_wait_seconds
                .with_label_values(&[&self.name])
                .inc_by(started.elapsed().as_secs_f64());
        }
        true
    }
}

fn shutting_down() -> Failure {
    Failure { reason: FailureReason::Network, detail: "the relay is shutting down".to_string() }
}

/// Returns true when shutdown was requested during the sleep.
async fn sleep_or_shutdown(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    if *shutdown.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *shutdown.borrow(),
        _ = shutdown.changed() => true,
    }
}

fn sweep(st: &mut State, now: Instant) {
    while st.expiry.front().is_some_and(|(t, _)| *t <= now) {
        let (_, key) = st.expiry.pop_front().expect("front exists");
        if matches!(st.ledger.get(&key), Some(None)) {
            st.ledger.remove(&key);
        }
    }
}
