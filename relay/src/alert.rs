//! Alertmanager's webhook payload (version 4). Unknown fields are ignored, because Alertmanager adds fields over
//! versions; the fields the relay relies on are required and type-checked.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Firing,
    Resolved,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub group_key: String,
    #[serde(default)]
    pub truncated_alerts: u64,
    pub status: Status,
    #[serde(default)]
    pub receiver: String,
    #[serde(default)]
    pub group_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub common_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub common_annotations: BTreeMap<String, String>,
    #[serde(default, rename = "externalURL")]
    pub external_url: String,
    pub alerts: Vec<Alert>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub status: Status,
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub starts_at: DateTime<Utc>,
    #[serde(default)]
    pub ends_at: Option<DateTime<Utc>>,
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
    #[serde(default)]
    pub fingerprint: String,
}

impl Alert {
    /// Alertmanager's fingerprint, or a hash of the labels when the sender did not provide one.
    pub fn identity(&self) -> String {
        if !self.fingerprint.is_empty() {
            return self.fingerprint.clone();
        }
        let mut h = Sha256::new();
        for (k, v) in &self.labels {
            h.update(k.as_bytes());
            h.update([0]);
            h.update(v.as_bytes());
            h.update([0]);
        }
        hex16(&h.finalize())
    }

    /// `endsAt` when it is a real time (Alertmanager sends year 1 for "not ended").
    pub fn ended_at(&self) -> Option<DateTime<Utc>> {
        self.ends_at.filter(|t| t.timestamp() > 0)
    }
}

fn hex16(bytes: &[u8]) -> String {
    bytes[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Stable identity of one alert inside one notification. Alertmanager re-sends the identical notification when it
/// retries, so equal keys mean "this alert of this notification"; a later notification of the same group with
/// other alerts (or a changed state) gets new keys.
pub fn item_keys(n: &Notification) -> Vec<[u8; 32]> {
    let mut ids: Vec<(String, &Alert)> = n.alerts.iter().map(|a| (a.identity(), a)).collect();
    ids.sort_by(|a, b| a.0.cmp(&b.0));
    let mut notif = Sha256::new();
    notif.update(n.receiver.as_bytes());
    notif.update([0]);
    notif.update(n.group_key.as_bytes());
    notif.update([0]);
    notif.update(n.status.as_str().as_bytes());
    for (id, a) in &ids {
        notif.update([0]);
        update_alert(&mut notif, id, a);
    }
    let notif = notif.finalize();
    n.alerts
        .iter()
        .map(|a| {
            let mut h = Sha256::new();
            h.update(notif);
            update_alert(&mut h, &a.identity(), a);
            h.finalize().into()
        })
        .collect()
}

fn update_alert(h: &mut Sha256, id: &str, a: &Alert) {
    h.update(id.as_bytes());
    h.update([0]);
    h.update(a.status.as_str().as_bytes());
    h.update(a.starts_at.timestamp_micros().to_le_bytes());
    h.update(a.ended_at().map(|t| t.timestamp_micros()).unwrap_or(0).to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{
      "receiver": "ops", "status": "firing", "version": "4", "groupKey": "{}:{alertname=\"X\"}",
      "truncatedAlerts": 0, "futureField": {"nested": [1,2]},
      "groupLabels": {"alertname": "X"}, "commonLabels": {}, "commonAnnotations": {},
      "externalURL": "http://am:9093",
      "alerts": [{"status": "firing", "labels": {"alertname": "X", "instance": "a"},
                  "annotations": {"summary": "s"}, "startsAt": "2024-05-01T10:00:00.123Z",
                  "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prom/graph", "fingerprint": "abc",
                  "anotherNewField": true}]
    }"#;

    #[test]
    fn tolerates_unknown_fields() {
        let n: Notification = serde_json::from_str(SAMPLE).unwrap();
        assert_eq!(n.alerts.len(), 1);
        assert_eq!(n.alerts[0].ended_at(), None);
        assert_eq!(n.external_url, "http://am:9093");
    }

    #[test]
    fn rejects_wrong_types() {
        let bad = SAMPLE.replace("\"alerts\": [", "\"alerts\": 5, \"x\": [");
        assert!(serde_json::from_str::<Notification>(&bad).is_err());
        let bad = SAMPLE.replace("\"status\": \"firing\", \"version\"", "\"status\": \"burning\", \"version\"");
        assert!(serde_json::from_str::<Notification>(&bad).is_err());
    }

    #[test]
    fn keys_are_stable_and_distinct() {
        let n: Notification = serde_json::from_str(SAMPLE).unwrap();
        let k1 = item_keys(&n);
        let k2 = item_keys(&n.clone());
        assert_eq!(k1, k2);
        let mut resolved = n.clone();
        resolved.status = Status::Resolved;
        resolved.alerts[0].status = Status::Resolved;
        assert_ne!(item_keys(&resolved), k1);
        let mut grown = n.clone();
        let mut b = n.alerts[0].clone();
        b.fingerprint = "def".into();
        grown.alerts.push(b);
        assert_ne!(item_keys(&grown)[0], k1[0]);
    }
}
