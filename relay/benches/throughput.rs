//! Throughput of the relay: webhook notifications per second answered 200 (that is, delivered: the relay answers
//! only after the robot accepted the message) with a fast fake DingTalk robot on loopback and the rate limit lifted.
//!
//! Run: `cargo bench -p nodesleuth-relay --bench throughput`
//! Environment: `ROUNDS` (default 5), `NOTIFICATIONS` per round (default 3000), `CONCURRENCY` (default 64),
//! `ALERTS` per notification (default 2).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn notification(round: usize, i: usize, alerts: usize) -> Vec<u8> {
    let alerts: Vec<serde_json::Value> = (0..alerts)
        .map(|a| {
            serde_json::json!({"status": "firing",
                "labels": {"alertname": "BenchAlert", "instance": format!("node-{i}-{a}"), "severity": "warning",
                           "job": "node"},
                "annotations": {"summary": format!("benchmark alert {round}/{i}/{a}"),
                                "description": "磁盘使用率超过 90%，请及时清理。"},
                "startsAt": "2024-05-01T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus:9090/graph", "fingerprint": format!("{round:04x}{i:08x}{a:04x}")})
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({"version": "4", "status": "firing", "receiver": "bench",
        "groupKey": format!("{{}}:{{round=\"{round}\",i=\"{i}\"}}"), "truncatedAlerts": 0,
        "groupLabels": {"instance": format!("node-{i}")}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093", "alerts": alerts}))
    .unwrap()
}

fn main() {
    let rounds = env("ROUNDS", 5);
    let per_round = env("NOTIFICATIONS", 3000);
    let concurrency = env("CONCURRENCY", 64);
    let alerts = env("ALERTS", 2);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        // The fast robot.
        let received = Arc::new(AtomicU64::new(0));
        let r = received.clone();
        let robot = Router::new().route(
            "/robot/send",
            post(move |_body: axum::body::Bytes| {
                let r = r.clone();
                async move {
                    r.fetch_add(1, Ordering::Relaxed);
                    axum::Json(serde_json::json!({"errcode": 0, "errmsg": "ok"}))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let robot_addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, robot).await.unwrap() });

        let yaml = format!(
            "targets:\n  bench:\n    kind: dingtalk\n    url: http://{robot_addr}/robot/send?access_token=bench\n    \
             secret: SECbench\n    rate_limit: {{messages: 1000000, window: 1s}}\n"
        );
        let cfg = nodesleuth_relay::config::FileConfig::from_yaml(&yaml, std::path::Path::new("bench.yaml")).unwrap();
        let relay = nodesleuth_relay::Relay::from_config(cfg, std::path::Path::new(".")).unwrap();
        let running = relay.spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let url = format!("http://{}/alertmanager/bench", running.addr);
        let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build().unwrap();

        println!(
            "relay throughput: {rounds} rounds x {per_round} notifications ({alerts} alerts each), \
             concurrency {concurrency}, fast DingTalk robot (signed), rate limit lifted"
        );
        let mut rates = Vec::new();
        for round in 0..=rounds {
            let bodies: Vec<Vec<u8>> = (0..per_round).map(|i| notification(round, i, alerts)).collect();
            let bodies = Arc::new(bodies);
            let next = Arc::new(AtomicU64::new(0));
            let before = received.load(Ordering::Relaxed);
            let start = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..concurrency {
                let (client, url, bodies, next) = (client.clone(), url.clone(), bodies.clone(), next.clone());
                tasks.push(tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                        if i >= bodies.len() {
                            break;
                        }
                        let resp = client.post(&url).body(bodies[i].clone()).send().await.unwrap();
                        assert_eq!(resp.status().as_u16(), 200, "{}", resp.text().await.unwrap_or_default());
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            let secs = start.elapsed().as_secs_f64();
            let messages = received.load(Ordering::Relaxed) - before;
            let rate = per_round as f64 / secs;
            if round == 0 {
                println!("  warm-up: {rate:.0} notifications/s");
                continue;
            }
            println!(
                "  round {round}: {rate:.0} notifications/s ({messages} robot messages, {:.1} notifications per message)",
                per_round as f64 / messages.max(1) as f64
            );
            rates.push(rate);
        }
        rates.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let median = rates[rates.len() / 2];
        println!("median: {median:.0} notifications/s delivered");
        let _ = tokio::time::timeout(Duration::from_secs(10), running.stop()).await;
    });
}
