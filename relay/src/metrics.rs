//! The relay's own metrics, in their own registry (served on the relay's `/metrics`). Every series is labelled by
//! the target's configured name, never by its URL or token.

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

pub struct Metrics {
    registry: Registry,
    pub notifications_received: IntCounterVec,
    pub notifications: IntCounterVec,
    pub retries: IntCounterVec,
    pub inbound_rejected: IntCounterVec,
    pub alerts_delivered: IntCounterVec,
    pub messages_sent: IntCounterVec,
    pub split_messages: IntCounterVec,
    pub digest_messages: IntCounterVec,
    pub send_failures: IntCounterVec,
    pub rate_limit_waits: IntCounterVec,
    pub rate_limit_wait_seconds: prometheus::CounterVec,
    pub queue_depth: IntGaugeVec,
    pub send_duration_seconds: HistogramVec,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    r.register(Box::new(c.clone())).expect("metric registered once");
    c
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let rate_limit_wait_seconds = prometheus::CounterVec::new(
            Opts::new(
                "nodesleuth_relay_rate_limit_wait_seconds_total",
                "Time messages waited for the target's rate-limit window.",
            ),
            &["target"],
        )
        .expect("valid metric definition");
        r.register(Box::new(rate_limit_wait_seconds.clone())).expect("metric registered once");
        let queue_depth = IntGaugeVec::new(
            Opts::new("nodesleuth_relay_queue_depth", "Alerts queued for the target, not yet delivered."),
            &["target"],
        )
        .expect("valid metric definition");
        r.register(Box::new(queue_depth.clone())).expect("metric registered once");
        let send_duration_seconds = HistogramVec::new(
            HistogramOpts::new(
                "nodesleuth_relay_send_duration_seconds",
                "Duration of one request to the robot, whatever its outcome.",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["target"],
        )
        .expect("valid metric definition");
        r.register(Box::new(send_duration_seconds.clone())).expect("metric registered once");
        Metrics {
            notifications_received: counter(
                &r,
                "nodesleuth_relay_notifications_received_total",
                "Webhook notifications received from Alertmanager (valid, authorised requests).",
                &["target"],
            ),
            notifications: counter(
                &r,
                "nodesleuth_relay_notifications_total",
                "Webhook notifications answered, by outcome: delivered (2xx), transient_failure (503), \
                 permanent_failure (4xx).",
                &["target", "outcome"],
            ),
            retries: counter(
                &r,
                "nodesleuth_relay_notification_retries_total",
                "Notifications that repeated alerts already queued or delivered (Alertmanager retries); those \
                 alerts were not sent again.",
                &["target"],
            ),
            inbound_rejected: counter(
                &r,
                "nodesleuth_relay_inbound_rejected_total",
                "Webhook requests refused before processing, by reason: unauthorized, too_large, malformed, \
                 unknown_target.",
                &["reason"],
            ),
            alerts_delivered: counter(
                &r,
                "nodesleuth_relay_alerts_delivered_total",
                "Alerts contained in messages the robot accepted.",
                &["target"],
            ),
            messages_sent: counter(
                &r,
                "nodesleuth_relay_messages_sent_total",
                "Messages the robot accepted (HTTP 200 and errcode 0).",
                &["target"],
            ),
            split_messages: counter(
                &r,
                "nodesleuth_relay_split_parts_total",
                "Accepted messages that were one part of a batch split for the size limit.",
                &["target"],
            ),
            digest_messages: counter(
                &r,
                "nodesleuth_relay_digest_messages_total",
                "Accepted messages that merged alerts of more than one notification.",
                &["target"],
            ),
            send_failures: counter(
                &r,
                "nodesleuth_relay_send_failures_total",
                "Messages the robot did not accept, by reason.",
                &["target", "reason"],
            ),
            rate_limit_waits: counter(
                &r,
                "nodesleuth_relay_rate_limit_waits_total",
                "Times a message waited because the target's rate-limit window was full.",
                &["target"],
            ),
            rate_limit_wait_seconds,
            queue_depth,
            send_duration_seconds,
            registry: r,
        }
    }

    /// Create the per-target series so they are exported (as 0) before anything happens.
    pub fn init_target(&self, target: &str) {
        self.notifications_received.with_label_values(&[target]);
        for o in ["delivered", "transient_failure", "permanent_failure"] {
            self.notifications.with_label_values(&[target, o]);
        }
        self.retries.with_label_values(&[target]);
        self.alerts_delivered.with_label_values(&[target]);
        self.messages_sent.with_label_values(&[target]);
        self.split_messages.with_label_values(&[target]);
        self.digest_messages.with_label_values(&[target]);
        self.rate_limit_waits.with_label_values(&[target]);
        self.rate_limit_wait_seconds.with_label_values(&[target]);
        self.queue_depth.with_label_values(&[target]);
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding into a Vec cannot fail");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }
}
