//! End-to-end tests: Debian's real Alertmanager 0.25 → the relay (in-process) → fake DingTalk/WeCom robots that
//! enforce the platforms' documented protocol (signatures, size limits, 20 messages per window, error codes).

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

fn relay_yaml(targets: &str) -> String {
    format!("server:\n  max_wait: 8s\n  dedup_window: 10m\ntargets:\n{targets}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_dingtalk_via_amtool_firing_then_resolved() {
    let robots = Robots::start(20, Duration::from_secs(60)).await;
    let url = robots.add_dingtalk("tok-signed-1", Some("SECsigned0123456789"), None);
    let relay = TestRelay::start(
        &relay_yaml(
            "  signed:\n    kind: dingtalk\n    url: {file: url.txt}\n    secret: {file: secret.txt}\n    \
             auth: {bearer_token: am-secret-token}\n",
        ),
        &[("url.txt", &format!("{url}\n")), ("secret.txt", "SECsigned0123456789\n")],
    )
    .await;
    let am = Alertmanager::start(&am_config(
        "['alertname']",
        &[("ding", webhook(&relay.url("signed"), Some("am-secret-token")))],
    ))
    .await;
    am.amtool(&[
        "alert",
        "add",
        "alertname=DiskFull",
        "severity=critical",
        "instance=node-1:9100",
        "--annotation=summary=磁盘 /var 使用率 97%",
        "--annotation=description=请清理日志",
        "--annotation=runbook_url=https://runbooks.test/disk-full",
        "--generator-url=http://prometheus.test:9090/graph",
    ])
    .await;
    let diag = || format!("refused: {:?}\nlogs:\n{}\nam:\n{}", robots.refused(), logs(), am.logs());
    wait_until(WAIT, "the firing message", || robots.accepted("ding:tok-signed-1").len() == 1, diag).await;
    let msg = &robots.accepted("ding:tok-signed-1")[0];
    let title = msg.body["markdown"]["title"].as_str().unwrap();
    let text = msg.text();
    assert!(title.contains("DiskFull") && title.contains("告警"), "{title}");
    assert!(text.contains("磁盘 /var 使用率 97%"), "{text}");
    assert!(text.contains("node-1:9100"), "{text}");
    assert!(text.contains("(https://runbooks.test/disk-full)"), "{text}");
    assert!(text.contains("(http://prometheus.test:9090/graph)"), "{text}");
    assert!(text.contains(&format!("({}/#/silences/new?filter=", am.url)), "{text}");
    assert!(text.contains(" CST"), "start time not in Asia/Shanghai: {text}");
    assert_eq!(msg.body["at"]["isAtAll"], json!(false));

    // Resolve it: Alertmanager sends the resolved notification.
    let now = chrono::Utc::now().to_rfc3339();
    am.post_alerts(&[json!({
        "labels": {"alertname": "DiskFull", "severity": "critical", "instance": "node-1:9100"},
        "annotations": {"summary": "磁盘 /var 使用率 97%", "description": "请清理日志",
                        "runbook_url": "https://runbooks.test/disk-full"},
        "generatorURL": "http://prometheus.test:9090/graph",
        "endsAt": now,
    })])
    .await;
    wait_until(WAIT, "the resolved message", || robots.accepted("ding:tok-signed-1").len() == 2, diag).await;
    let resolved = &robots.accepted("ding:tok-signed-1")[1];
    assert!(resolved.text().contains("告警恢复"), "{}", resolved.text());
    assert!(!resolved.text().contains("告警触发"), "{}", resolved.text());
    assert!(robots.refused().is_empty(), "{:?}", robots.refused());
    assert_eq!(relay.metric("nodesleuth_relay_messages_sent_total", &[("target", "signed")]), 2.0);
    assert_eq!(
        relay.metric("nodesleuth_relay_notifications_total", &[("target", "signed"), ("outcome", "delivered")]),
        2.0
    );
    let metrics = relay.running.metrics_text();
    assert!(!metrics.contains("tok-signed-1") && !metrics.contains("SECsigned"), "secret in metrics");
    assert!(!logs().contains("tok-signed-1") && !logs().contains("SECsigned0123456789"), "secret in logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_dingtalk_keyword_and_mentions() {
    let robots = Robots::start(20, Duration::from_secs(60)).await;
    let url = robots.add_dingtalk("tok-plain", None, Some("告警"));
    let relay = TestRelay::start(
        &relay_yaml(&format!(
            "  plain:\n    kind: dingtalk\n    url: {url}\n    mentions:\n      mobiles: ['13800000001']\n      \
             mobiles_label: oncall_mobile\n      user_ids_label: oncall\n      all_when: {{severity: [critical]}}\n"
        )),
        &[],
    )
    .await;
    let am = Alertmanager::start(&am_config("['alertname']", &[("ding", webhook(&relay.url("plain"), None))])).await;
    am.post_alerts(&[alert(
        &[
            ("alertname", "NodeDown"),
            ("severity", "critical"),
            ("instance", "node-7"),
            ("oncall_mobile", "13900000002"),
            ("oncall", "zhangsan"),
        ],
        &[("summary", "节点失联")],
    )])
    .await;
    let diag = || format!("refused: {:?}\nlogs:\n{}", robots.refused(), logs());
    wait_until(WAIT, "the message", || robots.accepted("ding:tok-plain").len() == 1, diag).await;
    let msg = &robots.accepted("ding:tok-plain")[0];
    let mut mobiles: Vec<&str> =
        msg.body["at"]["atMobiles"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    mobiles.sort();
    assert_eq!(mobiles, ["13800000001", "13900000002"]);
    assert_eq!(msg.body["at"]["atUserIds"], json!(["zhangsan"]));
    assert_eq!(msg.body["at"]["isAtAll"], json!(true));
    let text = msg.text();
    for tag in ["@13800000001", "@13900000002", "@zhangsan"] {
        assert!(text.contains(tag), "{tag} not shown in text: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wecom_english_with_user_mentions() {
    let robots = Robots::start(20, Duration::from_secs(60)).await;
    let url = robots.add_wecom("key-wecom-1");
    let relay = TestRelay::start(
        &relay_yaml(&format!(
            "  wx:\n    kind: wecom\n    url: {url}\n    language: en\n    timezone: UTC\n    \
             mentions: {{user_ids: [lisi], user_ids_label: oncall}}\n    \
             auth: {{basic: {{username: am, password: {{file: pw}}}}}}\n"
        )),
        &[("pw", "basic-pw\n")],
    )
    .await;
    let cfg = format!(
        "      - url: {}\n        send_resolved: true\n        http_config:\n          basic_auth:\n            \
         username: am\n            password: basic-pw\n",
        relay.url("wx")
    );
    let am = Alertmanager::start(&am_config("['alertname']", &[("wx", cfg)])).await;
    am.post_alerts(&[alert(
        &[("alertname", "PodCrashLooping"), ("severity", "warning"), ("pod", "api-0"), ("oncall", "wangwu")],
        &[("summary", "api-0 restarted 5 times"), ("description", "see logs")],
    )])
    .await;
    let diag = || format!("refused: {:?}\nlogs:\n{}\nam:\n{}", robots.refused(), logs(), am.logs());
    wait_until(WAIT, "the message", || robots.accepted("wecom:key-wecom-1").len() == 1, diag).await;
    let msg = &robots.accepted("wecom:key-wecom-1")[0];
    let text = msg.text();
    assert!(text.contains("Firing: 1"), "{text}");
    assert!(text.contains("PodCrashLooping") && text.contains("api-0 restarted 5 times"), "{text}");
    assert!(text.contains(" UTC"), "{text}");
    assert!(text.contains("<@lisi>") && text.contains("<@wangwu>"), "{text}");
    assert!(msg.body["markdown"].get("mentioned_mobile_list").is_none());
}

/// 300 alerts in one group: split into several messages within the byte limits, each alert whole and exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splits_a_300_alert_group() {
    // WeCom needs more than 20 messages for this group: a short window keeps the test quick.
    let robots = Robots::start(20, Duration::from_secs(3)).await;
    let ding = robots.add_dingtalk("tok-split", Some("SECsplit"), None);
    let wx = robots.add_wecom("key-split");
    let relay = TestRelay::start(
        &relay_yaml(&format!(
            "  ding:\n    kind: dingtalk\n    url: {ding}\n    secret: SECsplit\n    \
             rate_limit: {{messages: 20, window: 3s}}\n  \
             wx:\n    kind: wecom\n    url: {wx}\n    rate_limit: {{messages: 20, window: 3s}}\n"
        )),
        &[],
    )
    .await;
    let am = Alertmanager::start(&am_config(
        "['alertname']",
        &[("ding", webhook(&relay.url("ding"), None)), ("wx", webhook(&relay.url("wx"), None))],
    ))
    .await;
    // Multi-byte text with characters that grow when JSON-encoded ("), so byte counting must be exact.
    let desc = "数据库连接池耗尽，\"主库\"响应缓慢；请检查慢查询。".repeat(6);
    let alerts: Vec<Value> = (0..300)
        .map(|i| {
            alert(
                &[("alertname", "PoolExhausted"), ("instance", &format!("db-{i:03}")), ("severity", "critical")],
                &[("summary", &uid(i)), ("description", &desc)],
            )
        })
        .collect();
    am.post_alerts(&alerts).await;
    let diag = || format!("refused: {:?}\nlogs:\n{}", robots.refused(), logs());
    for robot in ["ding:tok-split", "wecom:key-split"] {
        wait_until(
            WAIT,
            &format!("all 300 alerts at {robot}"),
            || uid_counts(&robots.accepted(robot), 300).iter().all(|&c| c >= 1),
            diag,
        )
        .await;
    }
    // Let any stray duplicate arrive before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(robots.refused().is_empty(), "robot refused messages: {:?}", robots.refused());
    for robot in ["ding:tok-split", "wecom:key-split"] {
        let msgs = robots.accepted(robot);
        assert!(msgs.len() > 1, "{robot}: expected a split, got {} message(s)", msgs.len());
        let counts = uid_counts(&msgs, 300);
        assert!(counts.iter().all(|&c| c == 1), "{robot}: alerts not exactly once: {counts:?}");
        let escaped_desc = desc.clone(); // no markdown metacharacters in it, so it is shown verbatim
        for m in &msgs {
            let text = m.text();
            if robot.starts_with("ding") {
                assert!(m.raw_len <= 20_000, "{robot}: body of {} bytes", m.raw_len);
            } else {
                assert!(text.len() <= 4096, "{robot}: content of {} bytes", text.len());
            }
            // Every alert in the message is whole: each uid is followed by its full description.
            let whole = text.matches(escaped_desc.as_str()).count();
            let uids = (0..300).filter(|i| text.contains(&uid(*i))).count();
            assert_eq!(whole, uids, "{robot}: an alert was cut: {text}");
        }
        let n = msgs.len();
        let first = msgs[0].text();
        assert!(first.contains(&format!("第 1/{n} 部分")), "{robot}: part marker missing: {first}");
    }
    assert!(relay.metric("nodesleuth_relay_split_parts_total", &[("target", "ding")]) > 1.0);
}

/// 500 alerts in 500 groups at once against 20 messages per window: queued and merged into digests, never over
/// the limit, every alert delivered exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_500_never_exceeds_the_rate_limit() {
    let window = Duration::from_secs(3);
    let robots = Robots::start(20, window).await;
    let ding = robots.add_dingtalk("tok-burst", Some("SECburst"), None);
    let relay = TestRelay::start(
        &relay_yaml(&format!(
            "  burst:\n    kind: dingtalk\n    url: {ding}\n    secret: SECburst\n    \
             rate_limit: {{messages: 20, window: 3s}}\n"
        )),
        &[],
    )
    .await;
    let am = Alertmanager::start(&am_config("['instance']", &[("burst", webhook(&relay.url("burst"), None))])).await;
    // Large enough that the 500 alerts need more than 20 messages: the limit must actually bite.
    let desc = "节点内存压力过高，kubelet 正在驱逐 Pod。".repeat(20);
    let alerts: Vec<Value> = (0..500)
        .map(|i| {
            alert(
                &[("alertname", "MemoryPressure"), ("instance", &format!("node-{i:03}"))],
                &[("summary", &uid(i)), ("description", &desc)],
            )
        })
        .collect();
    am.post_alerts(&alerts).await;
    let diag =
        || format!("refused: {:?}\nmetrics:\n{}\nlogs:\n{}", robots.refused(), relay.running.metrics_text(), logs());
    wait_until(
        Duration::from_secs(120),
        "all 500 alerts",
        || uid_counts(&robots.accepted("ding:tok-burst"), 500).iter().all(|&c| c >= 1),
        diag,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let msgs = robots.accepted("ding:tok-burst");
    let counts = uid_counts(&msgs, 500);
    assert!(counts.iter().all(|&c| c == 1), "alerts not exactly once: {counts:?}");
    assert_eq!(robots.rate_violations(), 0, "the robot saw more than 20 messages in a window");
    assert!(robots.max_in_window("ding:tok-burst", window) <= 20);
    assert!(msgs.len() > 20, "test too weak: {} messages never reach the limit", msgs.len());
    assert!(msgs.len() < 500, "no merging: {} messages", msgs.len());
    assert!(relay.metric("nodesleuth_relay_digest_messages_total", &[("target", "burst")]) >= 1.0);
    assert!(relay.metric("nodesleuth_relay_rate_limit_waits_total", &[("target", "burst")]) >= 1.0);
    assert!(msgs.iter().all(|m| m.raw_len <= 20_000));
    assert!(robots.refused().is_empty(), "{:?}", robots.refused());
}

/// The robot fails (5xx, then hangs) after accepting the first part: Alertmanager retries on the relay's 503 and
/// every alert arrives exactly once — the part already accepted is not sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn robot_fails_then_recovers_without_loss_or_duplicates() {
    let robots = Robots::start(20, Duration::from_secs(60)).await;
    let ding = robots.add_dingtalk("tok-flaky", None, None);
    let relay = TestRelay::start(
        &relay_yaml(&format!("  flaky:\n    kind: dingtalk\n    url: {ding}\n    max_bytes: 4000\n    timeout: 1s\n")),
        &[],
    )
    .await;
    let am = Alertmanager::start(&am_config("['alertname']", &[("flaky", webhook(&relay.url("flaky"), None))])).await;
    robots.script([
        Behaviour::Normal,
        Behaviour::Status(500),
        Behaviour::Status(502),
        Behaviour::Hang(Duration::from_secs(5)),
        Behaviour::Errcode(-1),
    ]);
    let desc = "上游服务错误率升高".repeat(10);
    let alerts: Vec<Value> = (0..40)
        .map(|i| {
            alert(
                &[("alertname", "UpstreamErrors"), ("instance", &format!("svc-{i:02}"))],
                &[("summary", &uid(i)), ("description", &desc)],
            )
        })
        .collect();
    am.post_alerts(&alerts).await;
    let diag = || {
        format!(
            "refused: {:?}\nmetrics:\n{}\nlogs:\n{}\nam:\n{}",
            robots.refused(),
            relay.running.metrics_text(),
            logs(),
            am.logs()
        )
    };
    wait_until(
        Duration::from_secs(90),
        "all 40 alerts",
        || uid_counts(&robots.accepted("ding:tok-flaky"), 40).iter().all(|&c| c >= 1),
        diag,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let msgs = robots.accepted("ding:tok-flaky");
    let counts = uid_counts(&msgs, 40);
    assert!(counts.iter().all(|&c| c == 1), "alerts not exactly once: {counts:?}\n{}", diag());
    let failures =
        |reason| relay.metric("nodesleuth_relay_send_failures_total", &[("target", "flaky"), ("reason", reason)]);
    assert!(failures("http_5xx") >= 2.0, "{}", diag());
    assert!(failures("timeout") >= 1.0, "{}", diag());
    assert!(failures("platform_busy") >= 1.0, "{}", diag());
    assert!(
        relay.metric("nodesleuth_relay_notifications_total", &[("target", "flaky"), ("outcome", "transient_failure")])
            >= 1.0
    );
    // Alertmanager came back after the 503s and the part delivered first was recognised.
    assert!(relay.metric("nodesleuth_relay_notifications_received_total", &[("target", "flaky")]) >= 2.0);
    assert!(relay.metric("nodesleuth_relay_notification_retries_total", &[("target", "flaky")]) >= 1.0);
    assert!(
        relay.metric("nodesleuth_relay_notifications_total", &[("target", "flaky"), ("outcome", "delivered")]) >= 1.0
    );
}

/// Bad token (DingTalk 300005, WeCom 93000) and wrong signing secret (310000): permanent, 4xx with the reason,
/// an error log naming the target and never the token, and a failure metric.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_token_and_bad_signature_are_permanent() {
    let robots = Robots::start(20, Duration::from_secs(60)).await;
    robots.add_dingtalk("tok-real", Some("SECreal"), None);
    let relay = TestRelay::start(
        &relay_yaml(&format!(
            "  badtoken:\n    kind: dingtalk\n    url: {}\n  badsign:\n    kind: dingtalk\n    url: {}\n    \
             secret: SECwrong-secret-value\n  badkey:\n    kind: wecom\n    url: {}\n",
            robots.dingtalk_url("tok-unregistered-777"),
            robots.dingtalk_url("tok-real"),
            robots.wecom_url("key-unregistered-888"),
        )),
        &[],
    )
    .await;
    let am = Alertmanager::start(&am_config(
        "['alertname']",
        &[
            ("badtoken", webhook(&relay.url("badtoken"), None)),
            ("badsign", webhook(&relay.url("badsign"), None)),
            ("badkey", webhook(&relay.url("badkey"), None)),
        ],
    ))
    .await;
    am.post_alerts(&[alert(&[("alertname", "Anything")], &[("summary", "x")])]).await;
    let failures = |t: &str, reason: &str| {
        relay.metric("nodesleuth_relay_send_failures_total", &[("target", t), ("reason", reason)])
    };
    let diag = || format!("metrics:\n{}\nlogs:\n{}", relay.running.metrics_text(), logs());
    wait_until(
        WAIT,
        "permanent failures of all three targets",
        || {
            failures("badtoken", "bad_token") >= 1.0
                && failures("badsign", "signature_mismatch") >= 1.0
                && failures("badkey", "bad_token") >= 1.0
        },
        diag,
    )
    .await;
    for t in ["badtoken", "badsign", "badkey"] {
        assert!(
            relay.metric("nodesleuth_relay_notifications_total", &[("target", t), ("outcome", "permanent_failure")])
                >= 1.0
        );
        assert_eq!(
            relay.metric("nodesleuth_relay_notifications_total", &[("target", t), ("outcome", "delivered")]),
            0.0
        );
    }
    assert!(robots.accepted("ding:tok-real").is_empty());
    // Directly: the answer is a 4xx carrying the platform's reason.
    let payload = json!({"status": "firing", "receiver": "direct", "groupKey": "direct-1",
        "alerts": [{"status": "firing", "labels": {"alertname": "Direct"}, "annotations": {},
                    "startsAt": "2024-05-01T10:00:00Z", "fingerprint": "direct"}]});
    let r = reqwest::Client::new().post(relay.url("badtoken")).body(payload.to_string()).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 422);
    let body = r.text().await.unwrap();
    assert!(body.contains("300005") && body.contains("bad_token"), "{body}");
    assert!(!body.contains("tok-unregistered-777"), "{body}");
    let r = reqwest::Client::new().post(relay.url("badsign")).body(payload.to_string()).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 422);
    assert!(r.text().await.unwrap().contains("310000"));
    let log = logs();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("ERROR") && l.contains("relay_target=badtoken")).collect();
    assert!(!lines.is_empty(), "no error log line names the target:\n{log}");
    for secret in ["tok-unregistered-777", "key-unregistered-888", "SECwrong-secret-value", "tok-real"] {
        assert!(!log.contains(secret), "{secret} leaked into the logs");
        assert!(!relay.running.metrics_text().contains(secret));
    }
}

/// Alert text cannot add markdown, links or mentions; only the configured mentions are made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markdown_and_mention_injection_is_neutralised() {
    let robots = Robots::start(20, Duration::from_secs(60)).await;
    let ding = robots.add_dingtalk("tok-inj", None, None);
    let wx = robots.add_wecom("key-inj");
    let relay = TestRelay::start(
        &relay_yaml(&format!(
            "  ding:\n    kind: dingtalk\n    url: {ding}\n    mentions: {{mobiles: ['13800000001']}}\n  \
             wx:\n    kind: wecom\n    url: {wx}\n"
        )),
        &[],
    )
    .await;
    let am = Alertmanager::start(&am_config(
        "['alertname']",
        &[("ding", webhook(&relay.url("ding"), None)), ("wx", webhook(&relay.url("wx"), None))],
    ))
    .await;
    am.post_alerts(&[alert(
        &[("alertname", "Injected"), ("instance", "@13999999999"), ("pod", "<@all>")],
        &[
            ("summary", "[点我](http://evil.test/x) **粗体** @所有人 @13999999999 <@boss> <@all>"),
            ("description", "第一行\n# 假标题\n> 引用 `code` ![img](http://evil.test/i.png)"),
            ("runbook_url", "javascript:alert(1)"),
        ],
    )])
    .await;
    let diag = || format!("refused: {:?}\nlogs:\n{}", robots.refused(), logs());
    wait_until(
        WAIT,
        "both messages",
        || robots.accepted("ding:tok-inj").len() == 1 && robots.accepted("wecom:key-inj").len() == 1,
        diag,
    )
    .await;
    let d = &robots.accepted("ding:tok-inj")[0];
    assert_eq!(d.body["at"]["atMobiles"], json!(["13800000001"]));
    assert_eq!(d.body["at"]["atUserIds"], json!([]));
    assert_eq!(d.body["at"]["isAtAll"], json!(false));
    let w = &robots.accepted("wecom:key-inj")[0];
    for text in [d.text(), w.text()] {
        assert!(!text.contains("@13999999999"), "{text}");
        assert!(!text.contains("<@"), "{text}");
        assert!(!text.contains("](http://evil"), "{text}");
        assert!(!text.contains("\n# "), "{text}");
        assert!(!text.contains("**粗体**"), "{text}");
        assert!(!text.contains("javascript:"), "{text}");
        // The content is still visible, only defused.
        assert!(text.contains("＠13999999999") && text.contains("假标题") && text.contains("粗体"), "{text}");
    }
    assert!(d.text().ends_with("@13800000001"), "{}", d.text());
}

/// Inbound security and input validation, straight over HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_auth_limits_and_strict_json() {
    let robots = Robots::start(20, Duration::from_secs(60)).await;
    let ding = robots.add_dingtalk("tok-in", None, None);
    let wx = robots.add_wecom("key-in");
    let relay = TestRelay::start(
        &format!(
            "server:\n  max_body_bytes: 65536\nauth: {{bearer_token: {{file: token}}}}\ntargets:\n  \
             ding:\n    kind: dingtalk\n    url: {ding}\n  \
             wx:\n    kind: wecom\n    url: {wx}\n    auth: {{basic: {{username: am, password: pw-1}}}}\n"
        ),
        &[("token", "inbound-token\n")],
    )
    .await;
    let c = reqwest::Client::new();
    let good = json!({"version": "4", "status": "firing", "receiver": "r", "groupKey": "k1", "newTopLevel": {"a": 1},
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am.test",
        "alerts": [{"status": "firing", "labels": {"alertname": "A"}, "annotations": {"summary": "s"},
                    "startsAt": "2024-05-01T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "", "fingerprint": "f1", "unknownAlertField": [1, 2, 3]}]})
    .to_string();
    let post = |path: &str| c.post(format!("{}{path}", relay.base));

    // Bearer route.
    let r = post("/alertmanager/ding").body(good.clone()).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    let r = post("/alertmanager/ding").bearer_auth("wrong").body(good.clone()).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(robots.requests() == 0, "an unauthorised request reached the robot");
    // Basic route: the bearer token of the other route is not accepted here.
    let r = post("/alertmanager/wx").bearer_auth("inbound-token").body(good.clone()).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"));
    let r = post("/alertmanager/wx").basic_auth("am", Some("nope")).body(good.clone()).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(relay.metric("nodesleuth_relay_inbound_rejected_total", &[("reason", "unauthorized")]), 4.0);

    // Unknown fields are tolerated, on both routes (the second is the prometheus-webhook-dingtalk path).
    let r = post("/alertmanager/ding").bearer_auth("inbound-token").body(good.clone()).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    let r = post("/dingtalk/wx/send").basic_auth("am", Some("pw-1")).body(good.clone()).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    assert_eq!(robots.accepted("ding:tok-in").len(), 1);
    assert_eq!(robots.accepted("wecom:key-in").len(), 1);
    // The same notification again (an Alertmanager retry) is acknowledged without a second message.
    let r = post("/alertmanager/ding").bearer_auth("inbound-token").body(good.clone()).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(robots.accepted("ding:tok-in").len(), 1);

    // Malformed bodies: clear 400s.
    for (bad, why) in [
        ("{not json", "syntax"),
        (r#"{"status": "firing", "alerts": 5}"#, "alerts"),
        (r#"{"alerts": []}"#, "status"),
        (r#"{"status": "burning", "alerts": []}"#, "status"),
        (
            r#"{"status": "firing", "alerts": [{"status": "firing", "labels": {}, "startsAt": "yesterday"}]}"#,
            "startsAt",
        ),
    ] {
        let r = post("/alertmanager/ding").bearer_auth("inbound-token").body(bad).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 400, "{why}");
        let text = r.text().await.unwrap();
        assert!(text.contains("not an Alertmanager webhook notification"), "{why}: {text}");
    }
    // Oversized: declared length, and chunked without a length.
    let big = format!("{{\"status\":\"firing\",\"alerts\":[],\"pad\":\"{}\"}}", "x".repeat(70_000));
    let r = post("/alertmanager/ding").bearer_auth("inbound-token").body(big.clone()).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 413);
    assert!(r.text().await.unwrap().contains("65536"));
    assert_eq!(post_chunked(relay.running.addr, "/alertmanager/ding", "inbound-token", big.as_bytes()).await, 413);
    // Unknown target.
    let r = post("/alertmanager/nosuch").body(good.clone()).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    // Health and metrics.
    let r = c.get(format!("{}/healthz", relay.base)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let m = c.get(format!("{}/metrics", relay.base)).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("nodesleuth_relay_messages_sent_total{target=\"ding\"} 1"), "{m}");
    assert!(m.contains("nodesleuth_relay_inbound_rejected_total{reason=\"too_large\"} 2"), "{m}");
    assert!(m.contains("nodesleuth_relay_inbound_rejected_total{reason=\"malformed\"} 5"), "{m}");
    assert!(!m.contains("inbound-token") && !m.contains("tok-in") && !m.contains("pw-1"));
}

/// POST `data` with `Transfer-Encoding: chunked` (no Content-Length) over a raw socket; returns the status code.
async fn post_chunked(addr: std::net::SocketAddr, path: &str, bearer: &str, data: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer {bearer}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    for chunk in data.chunks(4096) {
        // The server may answer and close before the whole body is sent.
        if s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await.is_err()
            || s.write_all(chunk).await.is_err()
            || s.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp).await;
    let text = String::from_utf8_lossy(&resp);
    text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no HTTP answer: {text}"))
}

/// The platform's own rate-limit answer (WeCom 45009): 503, the target pauses for `rate_limited_backoff` without
/// calling the robot, then delivers the retried notification. Also: an operator template from a file is used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_rate_limit_code_backs_off_then_delivers() {
    let robots = Robots::start(20, Duration::from_secs(60)).await;
    let wx = robots.add_wecom("key-rl");
    let relay = TestRelay::start(
        &relay_yaml(&format!(
            "  rl:\n    kind: wecom\n    url: {wx}\n    rate_limited_backoff: 2s\n    template: custom.md.j2\n"
        )),
        &[("custom.md.j2", "CUSTOM {{ firing|length }}{% for a in firing %} · {{ a.summary }}{% endfor %}")],
    )
    .await;
    let body = |n: &str| {
        json!({"status": "firing", "receiver": "r", "groupKey": n,
            "alerts": [{"status": "firing", "labels": {"alertname": n}, "annotations": {"summary": format!("sum-{n}")},
                        "startsAt": "2024-05-01T10:00:00Z", "fingerprint": n}]})
        .to_string()
    };
    let c = reqwest::Client::new();
    robots.script([Behaviour::Errcode(45009)]);
    let r = c.post(relay.url("rl")).body(body("one")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.text().await.unwrap().contains("45009"));
    let calls = robots.requests();
    let r = c.post(relay.url("rl")).body(body("two")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.text().await.unwrap().contains("backing_off"));
    assert_eq!(robots.requests(), calls, "the robot was called during the back-off");
    // Retry like Alertmanager until delivered.
    let mut delivered = false;
    for _ in 0..100 {
        let r = c.post(relay.url("rl")).body(body("one")).send().await.unwrap();
        if r.status().as_u16() == 200 {
            delivered = true;
            break;
        }
        assert_eq!(r.status().as_u16(), 503);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(delivered, "never delivered after the back-off\n{}", logs());
    let msgs = robots.accepted("wecom:key-rl");
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0].text().starts_with("CUSTOM 1 · sum-one"), "{}", msgs[0].text());
    assert_eq!(
        relay.metric("nodesleuth_relay_send_failures_total", &[("target", "rl"), ("reason", "rate_limited")]),
        1.0
    );
}
