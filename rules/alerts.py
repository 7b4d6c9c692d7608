"""nodesleuth alert-rule library: the one source of truth.

`python3 rules/render.py` turns this file (plus an optional TOML configuration) into the shipped forms under
`rules/dist/`. Nothing here is YAML on purpose: a user changes selectors, the cluster and node labels, thresholds,
`for` durations, severities and groups in a TOML file, never in generated output.

Placeholders `<<name>>` are filled at render time:
  <<C>>            "cluster, " (the configured cluster label and a comma) or "" when the cluster label is disabled
  <<N>>            "node, "   (the configured node label and a comma)
  <<node_label>>   the node label alone
  <<sel:NAME>>     a selector from [selectors] (label matchers without braces, e.g. job="nodesleuth")
  <<NAME>>         a parameter of the alert (its defaults are in `params`, overridable per alert)
  <<where>> / <<where_zh>> / <<node>>   annotation snippets naming the pod (or network namespace) and the node
  <<runbook_url>>  runbook base URL + alert name + ".md"

Ideas learned from kubernetes-mixin / node-mixin / kube-prometheus (per-alert runbook_url, `by (cluster, ...)`
aggregation for multi-cluster rulers, recording rules named level:metric:operation, rules that state the labels a
person needs) are cited in the runbooks; no rule text is copied from them.

Every alert names its failure mode (FAILURE_MODES below): the same word finds the collector, the metric, this rule,
its runbook, the dashboard row and the doctor check.
"""

# Failure modes, machine-readable: name -> the nodesleuth metrics (or upstream metrics) the alerts read.
# Dashboards and the doctor reuse these names; `render.py` writes them with the alerts to dist/alerts.json.
FAILURE_MODES = {
    "close-wait-pile-up": ["nodesleuth_tcp_close_wait_sockets", "nodesleuth_tcp_sockets"],
    "accept-queue-full": [
        "nodesleuth_tcp_listen_queue_length",
        "nodesleuth_tcp_listen_queue_limit",
        "node_netstat_TcpExt_ListenOverflows",
        "node_netstat_TcpExt_ListenDrops",
    ],
    "hung-container": [
        "prober_probe_total",
        "kube_pod_container_status_restarts_total",
        "nodesleuth_tcp_close_wait_sockets",
        "nodesleuth_output_stalled_seconds",
    ],
    # issue 12: a process blocked writing its stdout/stderr (a tty the runtime stopped reading, an undrained pipe)
    "container-output-stalled": [
        "nodesleuth_output_stalled_seconds",
        "nodesleuth_output_stalled_threads",
        "nodesleuth_container_output_processes",
        "nodesleuth_container_log_age_seconds",
        "nodesleuth_container_log_partial_lines",
    ],
    "madv-free-retention": [
        "nodesleuth_process_lazyfree_bytes",
        "nodesleuth_process_resident_memory_bytes",
        "nodesleuth_process_resident_memory_minus_lazyfree_bytes",
        "nodesleuth_process_go_info",
        "container_memory_working_set_bytes",
        "container_spec_memory_limit_bytes",
        "go_memstats_heap_inuse_bytes",
    ],
    "ipvs-orphaned-connection": [
        "nodesleuth_ipvs_orphaned_connections",
        "nodesleuth_ipvs_connections_near_expiry",
        "nodesleuth_ipvs_established_idle_entries",
        "nodesleuth_ipvs_timeout_seconds",
    ],
    "systemd-cookie-exhaustion": ["nodesleuth_systemd_reply_serial_ratio"],
    "systemd-hung": ["nodesleuth_systemd_up", "nodesleuth_dbus_up", "nodesleuth_collector_source_present"],
    "systemd-unit-leak": ["nodesleuth_systemd_pattern_units", "nodesleuth_systemd_installed_jobs_total"],
    "node-signals": [
        "node_nf_conntrack_entries",
        "node_nf_conntrack_entries_limit",
        "node_nf_conntrack_stat_drop",
        "node_nf_conntrack_stat_early_drop",
        "node_nf_conntrack_stat_insert_failed",
        "node_netstat_Tcp_RetransSegs",
        "node_netstat_Tcp_OutSegs",
        "coredns_dns_request_duration_seconds_bucket",
        "coredns_dns_responses_total",
        "kubelet_pleg_relist_duration_seconds_bucket",
        "kube_node_status_condition",
        "node_cpu_seconds_total",
        "node_disk_io_time_seconds_total",
    ],
    "exporter-health": [
        "up",
        "nodesleuth_scrape_collector_success",
        "scrape_duration_seconds",
        "scrape_timeout_seconds",
    ],
}

# Groups: name -> (on by default, what it needs). Off-by-default groups overlap what upstream mixins already alert on.
GROUPS = {
    "nodesleuth-tcp": (True, "nodesleuth; ListenOverflows also node_exporter"),
    "nodesleuth-container": (True, "nodesleuth; the restart rules also kubelet /metrics/probes, kube-state-metrics"),
    "nodesleuth-memory": (True, "nodesleuth; cAdvisor for the limit rule; the service's Go metrics for the heap rule"),
    "nodesleuth-ipvs": (True, "nodesleuth"),
    "nodesleuth-systemd": (True, "nodesleuth"),
    "nodesleuth-exporter": (True, "Prometheus's own up/scrape_duration_seconds of the nodesleuth job"),
    "nodesleuth-node": (False, "node_exporter, CoreDNS, kubelet, kube-state-metrics (upstream mixins overlap)"),
}

# Labels an alert on one pod's sockets keeps.
TCP_BY = "<<C>><<N>>instance, namespace, pod, container, process, local_port, netns"
MEM_BY = "<<C>><<N>>instance, namespace, pod, container, process"
NODE_BY = "<<C>><<N>>instance"
WHERE = (
    "{{ if $labels.pod }}pod {{ $labels.namespace }}/{{ $labels.pod }}"
    "{{ else }}network namespace {{ $labels.netns }}{{ end }} on <<node>>"
)
WHERE_ZH = (
    "{{ if $labels.pod }}Pod {{ $labels.namespace }}/{{ $labels.pod }}"
    "{{ else }}网络命名空间 {{ $labels.netns }}{{ end }}（节点 <<node>>）"
)

# The output-stall alert names the process group; `(other)` is the exporter's overflow group beyond its top N
# (namespace/pod/container empty), a host process has a process but no pod.
OUT_BY = "<<C>><<N>>instance, namespace, pod, container, process, target"
OUT_WHO = (
    '{{ if $labels.pod }}process "{{ $labels.process }}" of container {{ $labels.container }} in pod '
    "{{ $labels.namespace }}/{{ $labels.pod }}{{ else if eq $labels.process \"(other)\" }}a process beyond the "
    "exporter's top N{{ else }}host process \"{{ $labels.process }}\"{{ end }} on <<node>>"
)
OUT_WHO_ZH = (
    "{{ if $labels.pod }}Pod {{ $labels.namespace }}/{{ $labels.pod }} 中容器 {{ $labels.container }} 的进程"
    "“{{ $labels.process }}”{{ else if eq $labels.process \"(other)\" }}exporter 前 N 名以外的某个进程"
    "{{ else }}主机进程“{{ $labels.process }}”{{ end }}（节点 <<node>>）"
)
# NodesleuthContainerHungRestarting names an output stall seen in the same pod within its window as the cause: a
# template query (Prometheus evaluates it when the alert is sent), empty when the pod had no stall. The stall series
# itself is gone by then (the restart killed the stuck process), hence max_over_time over the window; the liveness
# probe usually kills the process long before NodesleuthContainerOutputStalled's threshold, so this takes any stall
# of at least `output_stall` seconds.
STALL_QUERY = (
    '{{ with printf `topk(1, max by (process, target) (max_over_time(nodesleuth_output_stalled_seconds{'
    '<<sel:nodesleuth>>, <<CQ>>namespace=%q, pod=%q}[<<window>>])) >= <<output_stall>>)` <<CV>>$labels.namespace '
    "$labels.pod | query }}{{ with first . }}"
)
STALL_CAUSE = {
    "summary": STALL_QUERY + '{{ if eq .Labels.target "tty" }}: stuck writing logs to a terminal, set tty: false'
    "{{ else }}: stuck writing its output ({{ .Labels.target }}){{ end }}{{ end }}{{ end }}",
    "description": STALL_QUERY + ' Cause: process "{{ .Labels.process }}" of this pod was blocked for '
    "{{ .Value | humanizeDuration }} writing to its stdout/stderr ({{ .Labels.target }}) within <<window>>"
    '{{ if eq .Labels.target "tty" }}: it is stuck writing logs to a terminal: set tty: false'
    '{{ else if eq .Labels.target "pipe" }}: the runtime stopped draining its stdout pipe{{ end }} '
    "(NodesleuthContainerOutputStalled).{{ end }}{{ end }}",
    "summary_zh": STALL_QUERY + '{{ if eq .Labels.target "tty" }}：原因是写日志到终端卡死，请设置 tty: false'
    "{{ else }}：原因是写输出（{{ .Labels.target }}）卡死{{ end }}{{ end }}{{ end }}",
    "description_zh": STALL_QUERY + "原因：该 Pod 的进程“{{ .Labels.process }}”在 <<window>> 内向 stdout/stderr"
    "（{{ .Labels.target }}）写入时阻塞了 {{ .Value | humanizeDuration }}"
    '{{ if eq .Labels.target "tty" }}：它写日志到终端卡死了，请设置 tty: false'
    '{{ else if eq .Labels.target "pipe" }}：容器运行时不再读取它的 stdout 管道{{ end }}'
    "（见 NodesleuthContainerOutputStalled）。{{ end }}{{ end }}",
}

RECORDING = {
    "nodesleuth-tcp": [
        {
            # One series per (pod, process, port) without the scrape's job/endpoint labels: the series the
            # pile-up alerts and the dashboards read.
            "record": "nodesleuth:tcp_close_wait_sockets:sum",
            "expr": f"sum by ({TCP_BY}) (nodesleuth_tcp_close_wait_sockets{{<<sel:nodesleuth>>}})",
        },
    ],
    "nodesleuth-container": [
        {
            "record": "namespace_pod:nodesleuth_tcp_close_wait_sockets:sum",
            "expr": 'sum by (<<C>>namespace, pod) (nodesleuth_tcp_close_wait_sockets{<<sel:nodesleuth>>, pod!=""})',
        },
    ],
    "nodesleuth-memory": [
        {
            "record": "namespace_pod_container:nodesleuth_process_resident_memory_minus_lazyfree_bytes:sum",
            "expr": "sum by (<<C>>namespace, pod, container) "
            '(nodesleuth_process_resident_memory_minus_lazyfree_bytes{<<sel:nodesleuth>>, container!=""})',
        },
    ],
    "nodesleuth-systemd": [
        {
            # rate(), not deriv()/predict_linear(): the serial restarts from 1 when systemd reconnects to the bus
            # (daemon-reexec, dbus restart); rate() treats that drop as a counter reset, so the growth measured
            # across the restart stays the real growth instead of turning negative.
            "record": "nodesleuth:systemd_reply_serial_ratio:rate<<forecast_window>>",
            "expr": f"max by ({NODE_BY}) (rate(nodesleuth_systemd_reply_serial_ratio{{<<sel:nodesleuth>>}}[<<forecast_window>>]))",
        },
    ],
}

# Parameters shared by the whole systemd group (the recording rule above uses them).
GROUP_PARAMS = {"nodesleuth-systemd": {"forecast_window": "6h"}}

ALERTS = [
    # ------------------------------------------------------------------ tcp
    {
        "id": "NodesleuthTCPCloseWaitPileUp",
        "group": "nodesleuth-tcp",
        "mode": "close-wait-pile-up",
        "severity": "warning",
        "for": "5m",
        "params": {"threshold": 100, "window": "10m"},
        "meaning": "A server process holds many CLOSE_WAIT sockets on its listening port and the number is not "
        "going down: it stopped closing connections its clients closed (a leak or a hang).",
        "expr": """\
nodesleuth:tcp_close_wait_sockets:sum{local_port!="(ephemeral)"} >= <<threshold>>
and
deriv(nodesleuth:tcp_close_wait_sockets:sum{local_port!="(ephemeral)"}[<<window>>]) >= 0""",
        "summary": "CLOSE_WAIT pile-up: {{ if $labels.process }}{{ $labels.process }}{{ else }}an unidentified "
        "process{{ end }} holds {{ $value }} CLOSE_WAIT sockets on port {{ $labels.local_port }} in <<where>>",
        "description": "Clients closed {{ $value }} connections to port {{ $labels.local_port }} of process "
        '"{{ $labels.process }}"{{ with $labels.container }} (container "{{ . }}"){{ end }} in <<where>>, and the process has not closed '
        "its side; the count has not gone down over <<window>> (threshold <<threshold>>). A process that stops "
        "closing sockets is usually hung or leaking; take a goroutine/thread dump before it is restarted, the "
        "evidence disappears with the restart.",
        "summary_zh": "CLOSE_WAIT 堆积：{{ if $labels.process }}进程 {{ $labels.process }} {{ else }}未识别的进程"
        "{{ end }}在端口 {{ $labels.local_port }} 上有 {{ $value }} 个 CLOSE_WAIT 连接，位于<<where_zh>>",
        "description_zh": "<<where_zh>>中{{ with $labels.container }}容器“{{ . }}”的{{ end }}进程“{{ $labels.process }}”在端口 "
        "{{ $labels.local_port }} 上有 {{ $value }} 个连接已被客户端关闭，但进程一直没有关闭自己这一端；"
        "过去 <<window>> 内数量没有下降（阈值 <<threshold>>）。进程不再关闭连接通常意味着它卡住或泄漏了连接。"
        "请在重启前先抓取线程/协程栈，重启后现场就没有了。",
    },
    {
        "id": "NodesleuthTCPCloseWaitClientLeak",
        "group": "nodesleuth-tcp",
        "mode": "close-wait-pile-up",
        "severity": "warning",
        "for": "10m",
        "params": {"threshold": 100, "window": "10m"},
        "meaning": "A process holds many client-side CLOSE_WAIT sockets (connections it opened, closed by the "
        "server): its connection pool never closes dead connections.",
        "expr": """\
nodesleuth:tcp_close_wait_sockets:sum{local_port="(ephemeral)"} >= <<threshold>>
and
deriv(nodesleuth:tcp_close_wait_sockets:sum{local_port="(ephemeral)"}[<<window>>]) >= 0""",
        "summary": "Client connection leak: {{ if $labels.process }}{{ $labels.process }}{{ else }}an unidentified "
        "process{{ end }} holds {{ $value }} outgoing connections in CLOSE_WAIT in <<where>>",
        "description": "Servers closed {{ $value }} connections that process \"{{ $labels.process }}\""
        '{{ with $labels.container }} (container "{{ . }}"){{ end }} in <<where>> opened, and the process never closed them; the count has not gone '
        "down over <<window>> (threshold <<threshold>>). Its client or connection pool keeps dead connections: "
        "each one holds a file descriptor, and a request sent on one fails.",
        "summary_zh": "客户端连接泄漏：{{ if $labels.process }}进程 {{ $labels.process }} {{ else }}未识别的进程"
        "{{ end }}有 {{ $value }} 个主动发起的连接处于 CLOSE_WAIT，位于<<where_zh>>",
        "description_zh": "<<where_zh>>中{{ with $labels.container }}容器“{{ . }}”的{{ end }}进程“{{ $labels.process }}”主动建立的 "
        "{{ $value }} 个连接已被服务端关闭，但进程一直没有关闭；过去 <<window>> 内数量没有下降（阈值 <<threshold>>）。"
        "说明它的客户端或连接池没有回收失效连接：每个连接占用一个文件描述符，在这些连接上发出的请求会失败。",
    },
    {
        "id": "NodesleuthTCPAcceptQueueFull",
        "group": "nodesleuth-tcp",
        "mode": "accept-queue-full",
        "severity": "warning",
        "for": "2m",
        "params": {},
        "meaning": "A listener's accept queue is full: the process does not accept new connections fast enough "
        "(or at all); new clients time out in SYN_SENT.",
        "expr": f"""\
(
  sum by (<<C>><<N>>instance, namespace, pod, netns, local_port) (nodesleuth_tcp_listen_queue_length{{<<sel:nodesleuth>>}})
  >= on (<<C>><<N>>instance, namespace, pod, netns, local_port)
  sum by (<<C>><<N>>instance, namespace, pod, netns, local_port) (nodesleuth_tcp_listen_queue_limit{{<<sel:nodesleuth>>}})
) > 0""",
        "summary": "Accept queue full on port {{ $labels.local_port }} in <<where>>: {{ $value }} connections wait",
        "description": "{{ $value }} connections wait to be accepted on port {{ $labels.local_port }} in <<where>>, "
        "as many as the listen backlog allows. The process is not calling accept(): new connections are dropped "
        "or time out. Often the same hang that piles up CLOSE_WAIT.",
        "summary_zh": "端口 {{ $labels.local_port }} 的全连接队列已满：<<where_zh>>有 {{ $value }} 个连接等待 accept",
        "description_zh": "<<where_zh>>的端口 {{ $labels.local_port }} 上有 {{ $value }} 个连接等待被 accept，"
        "已达到 listen backlog 上限。进程没有在调用 accept()，新连接会被丢弃或超时。这常与 CLOSE_WAIT 堆积是同一次卡死。",
    },
    {
        "id": "NodesleuthNodeListenOverflows",
        "group": "nodesleuth-tcp",
        "mode": "accept-queue-full",
        "severity": "warning",
        "for": "5m",
        "params": {"threshold": 0, "window": "5m"},
        "meaning": "The node's kernel keeps dropping connections because some accept queue is full "
        "(node_exporter's ListenOverflows/ListenDrops, host network namespace only).",
        "expr": f"""\
sum by ({NODE_BY}) (rate(node_netstat_TcpExt_ListenOverflows{{<<sel:node_exporter>>}}[<<window>>])) > <<threshold>>
or
sum by ({NODE_BY}) (rate(node_netstat_TcpExt_ListenDrops{{<<sel:node_exporter>>}}[<<window>>])) > <<threshold>>""",
        "summary": "Node <<node>> drops incoming connections: {{ $value | printf `%.2f` }}/s listen overflows",
        "description": "The kernel of node <<node>> dropped {{ $value | printf `%.2f` }} incoming connections per second "
        "over <<window>> because a listener's accept queue was full (TcpExt ListenOverflows, or ListenDrops where "
        "overflows are not exported). These counters cover the host network namespace; "
        "NodesleuthTCPAcceptQueueFull names the pod and port.",
        "summary_zh": "节点 <<node>> 正在丢弃新连接：每秒 {{ $value | printf `%.2f` }} 次 listen 溢出",
        "description_zh": "节点 <<node>> 的内核在过去 <<window>> 内平均每秒丢弃 {{ $value | printf `%.2f` }} 个新连接，"
        "原因是某个监听端口的全连接队列已满（TcpExt ListenOverflows，没有该指标时取 ListenDrops）。"
        "这些计数只覆盖主机网络命名空间；具体的 Pod 和端口见 NodesleuthTCPAcceptQueueFull。",
    },
    # ------------------------------------------------------------------ container
    # A process blocked writing its stdout/stderr (issue 12, the first documented incident). Two rules, one per
    # severity, as for the cookie alert: a terminal (tty: true) is critical because the fix is known and the
    # whole service hangs behind its logger; a pipe, file or socket is a warning. The overflow group
    # process="(other)" fires too: it is a real stall on the node, only not named (see the runbook); the exporter
    # gives it no target (it mixes them), so it is a warning.
    {
        "id": "NodesleuthContainerOutputStalled.critical",
        "name": "NodesleuthContainerOutputStalled",
        "group": "nodesleuth-container",
        "mode": "container-output-stalled",
        "severity": "critical",
        "for": "1m",
        "params": {"threshold": 120},
        "meaning": "A process has been blocked for minutes writing its logs to its stdout/stderr without progress: "
        "critical when that is a terminal (tty: true, the runtime stopped reading it: set tty: false), warning "
        "for a pipe the runtime stopped draining (or a file or socket). Every thread that logs hangs with it.",
        "expr": f"""\
max by ({OUT_BY}) (nodesleuth_output_stalled_seconds{{<<sel:nodesleuth>>, target="tty"}}) > <<threshold>>""",
        "summary": "Output stall: " + OUT_WHO + " is stuck writing logs to a terminal for "
        "{{ $value | humanizeDuration }}: set tty: false",
        "description": "A thread of " + OUT_WHO + " has been blocked for {{ $value | humanizeDuration }} in a "
        "write to its stdout/stderr, which is a terminal (tty: true), and the process has not written a byte since "
        "(threshold <<threshold>> s). The container runtime stopped reading the terminal (a race in "
        "containerd/console, fixed only in some Docker and containerd releases); with the terminal's buffer full, "
        "every thread that logs blocks too: the service stops answering, CLOSE_WAIT piles up and the liveness probe "
        "restarts it, which erases the evidence. Set tty: false in the pod spec (or upgrade the runtime); read "
        "/proc/<pid>/task/*/wchan and syscall before anything restarts it.",
        "summary_zh": "输出卡死：" + OUT_WHO_ZH + "写日志到终端已阻塞 {{ $value | humanizeDuration }}，请设置 tty: false",
        "description_zh": OUT_WHO_ZH + "的一个线程向 stdout/stderr 写入时已阻塞 {{ $value | humanizeDuration }}，"
        "它的输出是终端（tty: true），此后进程再没有写出一个字节（阈值 <<threshold>> 秒）。容器运行时不再读取这个终端"
        "（containerd/console 的竞争问题，只在部分 Docker 和 containerd 版本中修复），终端缓冲区已满，所有写日志的线程"
        "都会跟着阻塞：服务不再响应，CLOSE_WAIT 堆积，存活探针重启容器并抹掉现场。请在 Pod 中设置 tty: false"
        "（或升级容器运行时）；重启之前先读取 /proc/<pid>/task/*/wchan 和 syscall。",
    },
    {
        "id": "NodesleuthContainerOutputStalled.warning",
        "name": "NodesleuthContainerOutputStalled",
        "group": "nodesleuth-container",
        "mode": "container-output-stalled",
        "severity": "warning",
        "for": "1m",
        "params": {"threshold": 120},
        "meaning": None,
        "expr": f"""\
max by ({OUT_BY}) (nodesleuth_output_stalled_seconds{{<<sel:nodesleuth>>, target!="tty"}}) > <<threshold>>""",
        "summary": "Output stall: " + OUT_WHO + " is blocked writing its output{{ with $labels.target }} ({{ . }}){{ end }} for "
        "{{ $value | humanizeDuration }}",
        "description": "A thread of " + OUT_WHO + " has been blocked for {{ $value | humanizeDuration }} in a "
        "write to its stdout/stderr{{ with $labels.target }} ({{ . }}){{ end }} and the process has not written a byte since "
        "(threshold <<threshold>> s): "
        '{{ if eq $labels.target "pipe" }}the runtime stopped draining its stdout pipe (a hung containerd-shim, '
        "conmon or logging driver)"
        '{{ else if eq $labels.target "file" }}the file it writes to does not take the write (a hung or full '
        "filesystem)"
        '{{ else if eq $labels.target "socket" }}the peer of its output socket (a log collector) stopped reading'
        '{{ else if eq $labels.process "(other)" }}the groups beyond the top N mix targets: see the node'
        "{{ else }}its output does not take the write{{ end }}. Every thread that logs blocks too, and the liveness "
        "probe will restart the container and erase the evidence.",
        "summary_zh": "输出卡死：" + OUT_WHO_ZH + "写输出{{ with $labels.target }}（{{ . }}）{{ end }}已阻塞 {{ $value | humanizeDuration }}",
        "description_zh": OUT_WHO_ZH + "的一个线程向 stdout/stderr{{ with $labels.target }}（{{ . }}）{{ else }} {{ end }}写入时已阻塞 "
        "{{ $value | humanizeDuration }}，此后进程再没有写出一个字节（阈值 <<threshold>> 秒）："
        '{{ if eq $labels.target "pipe" }}容器运行时不再读取它的 stdout 管道（containerd-shim、conmon 或日志驱动卡住）'
        '{{ else if eq $labels.target "file" }}它写入的文件不接受写入（文件系统卡住或已满）'
        '{{ else if eq $labels.target "socket" }}它输出套接字的对端（日志采集器）不再读取'
        '{{ else if eq $labels.process "(other)" }}前 N 名以外的分组混合了多种输出，请到节点上查看'
        "{{ else }}它的输出不接受写入{{ end }}。所有写日志的线程都会跟着阻塞，存活探针会重启容器并抹掉现场。",
    },
    {
        "id": "NodesleuthContainerHungRestarting",
        "group": "nodesleuth-container",
        "mode": "hung-container",
        "severity": "critical",
        "for": "1m",
        "params": {"window": "30m", "close_wait": 50, "output_stall": 30},
        "meaning": "A container is restarted by its liveness probe while its pod piled up CLOSE_WAIT sockets: the "
        "restarts are the symptom of a hang, not a crash, and each restart erases the evidence. Names an output "
        "stall of the pod (NodesleuthContainerOutputStalled) as the cause when there was one.",
        "expr": """\
(
  sum by (<<C>>namespace, pod, container) (increase(prober_probe_total{<<sel:kubelet_probes>>, probe_type="Liveness", result="failed"}[<<window>>])) > 0
  and on (<<C>>namespace, pod, container)
  sum by (<<C>>namespace, pod, container) (increase(kube_pod_container_status_restarts_total{<<sel:kube_state_metrics>>}[<<window>>])) > 0
)
and on (<<C>>namespace, pod)
max_over_time(namespace_pod:nodesleuth_tcp_close_wait_sockets:sum[<<window>>]) >= <<close_wait>>""",
        "summary": "{{ $labels.namespace }}/{{ $labels.pod }} container {{ $labels.container }} hangs and is "
        "restarted by its liveness probe" + STALL_CAUSE["summary"],
        "description": "Container {{ $labels.container }} of pod {{ $labels.namespace }}/{{ $labels.pod }} failed "
        "its liveness probe {{ $value }} times and was restarted within <<window>>, while the pod held at least "
        "<<close_wait>> CLOSE_WAIT sockets. It does not crash: it hangs, stops closing connections, and the probe "
        "kills it. The sockets and the stuck threads disappear with every restart: capture a dump before the next "
        "one." + STALL_CAUSE["description"],
        "summary_zh": "{{ $labels.namespace }}/{{ $labels.pod }} 的容器 {{ $labels.container }} 卡死，被存活探针反复重启"
        + STALL_CAUSE["summary_zh"],
        "description_zh": "Pod {{ $labels.namespace }}/{{ $labels.pod }} 的容器 {{ $labels.container }} 在 "
        "<<window>> 内存活探针失败 {{ $value }} 次并被重启，同时该 Pod 持有至少 <<close_wait>> 个 CLOSE_WAIT 连接。"
        "它不是崩溃，而是卡死：不再关闭连接，然后被探针杀掉。每次重启都会抹掉这些连接和卡住的线程，"
        "请在下一次重启前抓取线程/协程栈。" + STALL_CAUSE["description_zh"],
    },
    {
        "id": "NodesleuthContainerLivenessRestarting",
        "group": "nodesleuth-container",
        "mode": "hung-container",
        "severity": "warning",
        "for": "5m",
        "params": {"window": "30m", "restarts": 2},
        "meaning": "A container keeps being restarted by failing liveness probes (a hang or overload, not a crash). "
        "Inhibited by NodesleuthContainerHungRestarting for the same pod.",
        "expr": """\
sum by (<<C>>namespace, pod, container) (increase(kube_pod_container_status_restarts_total{<<sel:kube_state_metrics>>}[<<window>>])) >= <<restarts>>
and on (<<C>>namespace, pod, container)
sum by (<<C>>namespace, pod, container) (increase(prober_probe_total{<<sel:kubelet_probes>>, probe_type="Liveness", result="failed"}[<<window>>])) > 0""",
        "summary": "{{ $labels.namespace }}/{{ $labels.pod }} container {{ $labels.container }} restarted "
        "{{ $value }} times after failed liveness probes",
        "description": "Container {{ $labels.container }} of pod {{ $labels.namespace }}/{{ $labels.pod }} "
        "restarted {{ $value }} times within <<window>> and its liveness probe failed in the same time: the kubelet "
        "kills it because it stops answering, not because it exits.",
        "summary_zh": "{{ $labels.namespace }}/{{ $labels.pod }} 的容器 {{ $labels.container }} 因存活探针失败重启了 "
        "{{ $value }} 次",
        "description_zh": "Pod {{ $labels.namespace }}/{{ $labels.pod }} 的容器 {{ $labels.container }} 在 "
        "<<window>> 内重启了 {{ $value }} 次，同期存活探针失败：kubelet 是因为它不再响应而杀掉它，并不是它自己退出。",
    },
    # ------------------------------------------------------------------ memory
    {
        "id": "NodesleuthGoMadvFreeRetention",
        "group": "nodesleuth-memory",
        "mode": "madv-free-retention",
        "severity": "warning",
        "for": "15m",
        "params": {"share": 0.5, "min_bytes": 268435456},
        "meaning": "A Go process's RSS is mostly memory it already freed with MADV_FREE (LazyFree): RSS looks like "
        "a leak but the heap is small.",
        "expr": f"""\
(
  sum by ({MEM_BY}) (nodesleuth_process_lazyfree_bytes{{<<sel:nodesleuth>>}})
  / sum by ({MEM_BY}) (nodesleuth_process_resident_memory_bytes{{<<sel:nodesleuth>>}})
  >= <<share>>
  and on ({MEM_BY})
  sum by ({MEM_BY}) (nodesleuth_process_lazyfree_bytes{{<<sel:nodesleuth>>}}) >= <<min_bytes>>
)
* on ({MEM_BY}) group_left (go_version, madvdontneed)
topk by ({MEM_BY}) (1, nodesleuth_process_go_info{{<<sel:nodesleuth>>, madvdontneed!="1"}})""",
        "summary": "{{ $labels.process }} in <<where>>: {{ $value | humanizePercentage }} of RSS is freed memory "
        "(MADV_FREE)",
        "description": "{{ $value | humanizePercentage }} of the resident memory of Go process "
        "\"{{ $labels.process }}\" ({{ with $labels.container }}container \"{{ . }}\", {{ end }}{{ $labels.go_version }}, madvdontneed="
        "{{ $labels.madvdontneed }}) in <<where>> is LazyFree: memory the Go runtime returned with MADV_FREE, which "
        "the kernel reclaims only under pressure. RSS overstates what the process uses; compare "
        "nodesleuth_process_resident_memory_minus_lazyfree_bytes with the heap. Fix: GODEBUG=madvdontneed=1 or Go "
        ">= 1.16.",
        "summary_zh": "<<where_zh>>的 {{ $labels.process }}：RSS 中 {{ $value | humanizePercentage }} 是已释放的内存"
        "（MADV_FREE）",
        "description_zh": "<<where_zh>>中 Go 进程“{{ $labels.process }}”（{{ with $labels.container }}容器“{{ . }}”，{{ end }}"
        "{{ $labels.go_version }}，madvdontneed={{ $labels.madvdontneed }}）的常驻内存有 "
        "{{ $value | humanizePercentage }} 是 LazyFree：Go 运行时用 MADV_FREE 归还的内存，内核只在内存紧张时才回收。"
        "RSS 高估了进程实际使用的内存，请用 nodesleuth_process_resident_memory_minus_lazyfree_bytes 与堆大小比较。"
        "修复方法：设置 GODEBUG=madvdontneed=1 或升级到 Go 1.16 及以上。",
    },
    {
        "id": "NodesleuthMemoryLimitNearButLazyFree",
        "group": "nodesleuth-memory",
        "mode": "madv-free-retention",
        "severity": "critical",
        "for": "10m",
        "params": {"working_set": 0.9, "kept": 0.5},
        "meaning": "A container's working set is near its memory limit while what its processes keep after "
        "MADV_FREE reclaim (RSS − LazyFree) is far below it: it is about to be OOM-killed or evicted for memory "
        "that is free.",
        "expr": """\
(
  sum by (<<C>>namespace, pod, container) (container_memory_working_set_bytes{<<sel:cadvisor>>, container!="", image!=""})
  / sum by (<<C>>namespace, pod, container) (container_spec_memory_limit_bytes{<<sel:cadvisor>>, container!="", image!=""} > 0)
  >= <<working_set>>
)
and on (<<C>>namespace, pod, container)
(
  namespace_pod_container:nodesleuth_process_resident_memory_minus_lazyfree_bytes:sum
  / on (<<C>>namespace, pod, container)
  sum by (<<C>>namespace, pod, container) (container_spec_memory_limit_bytes{<<sel:cadvisor>>, container!="", image!=""} > 0)
  < <<kept>>
)""",
        "summary": "{{ $labels.namespace }}/{{ $labels.pod }} container {{ $labels.container }} at "
        "{{ $value | humanizePercentage }} of its memory limit, mostly freed memory",
        "description": "The working set of container {{ $labels.container }} in pod {{ $labels.namespace }}/"
        "{{ $labels.pod }} is {{ $value | humanizePercentage }} of its memory limit, but its processes keep less "
        "than <<kept>> of the limit once MADV_FREE pages (LazyFree) are reclaimed. A restart or eviction now would "
        "be for memory that is already free. Fix the runtime (GODEBUG=madvdontneed=1, Go >= 1.16), not the limit.",
        "summary_zh": "{{ $labels.namespace }}/{{ $labels.pod }} 的容器 {{ $labels.container }} 已用到内存限制的 "
        "{{ $value | humanizePercentage }}，其中大部分是已释放的内存",
        "description_zh": "Pod {{ $labels.namespace }}/{{ $labels.pod }} 中容器 {{ $labels.container }} 的 "
        "working set 已达内存限制的 {{ $value | humanizePercentage }}，但回收 MADV_FREE 页（LazyFree）之后，"
        "它的进程实际占用不到限制的 <<kept>>。此时发生的重启或驱逐是为了本已释放的内存。"
        "应修复运行时（GODEBUG=madvdontneed=1 或 Go 1.16 及以上），而不是调大限制。",
    },
    {
        "id": "NodesleuthGoRSSAboveHeap",
        "group": "nodesleuth-memory",
        "mode": "madv-free-retention",
        "severity": "info",
        "for": "30m",
        "params": {"ratio": 2, "min_bytes": 1073741824},
        "meaning": "A container keeps far more memory than its Go heap even after LazyFree is subtracted: not "
        "MADV_FREE, but fragmentation, cgo, mmap or goroutine stacks.",
        "expr": """\
namespace_pod_container:nodesleuth_process_resident_memory_minus_lazyfree_bytes:sum >= <<min_bytes>>
and on (<<C>>namespace, pod, container)
namespace_pod_container:nodesleuth_process_resident_memory_minus_lazyfree_bytes:sum
  > on (<<C>>namespace, pod, container)
  (<<ratio>> * sum by (<<C>>namespace, pod, container) (go_memstats_heap_inuse_bytes{<<sel:go_services>>}))""",
        "summary": "{{ $labels.namespace }}/{{ $labels.pod }} container {{ $labels.container }} keeps "
        "{{ $value | humanize1024 }}B, more than <<ratio>>× its Go heap",
        "description": "The processes of container {{ $labels.container }} in pod {{ $labels.namespace }}/"
        "{{ $labels.pod }} keep {{ $value | humanize1024 }}B resident after LazyFree is subtracted, more than "
        "<<ratio>> times the Go heap in use it reports (go_memstats_heap_inuse_bytes). This is not MADV_FREE: look "
        "at fragmentation, cgo, mmap'd files and goroutine stacks.",
        "summary_zh": "{{ $labels.namespace }}/{{ $labels.pod }} 的容器 {{ $labels.container }} 占用 "
        "{{ $value | humanize1024 }}B，超过 Go 堆的 <<ratio>> 倍",
        "description_zh": "Pod {{ $labels.namespace }}/{{ $labels.pod }} 中容器 {{ $labels.container }} 的进程扣除 "
        "LazyFree 后仍常驻 {{ $value | humanize1024 }}B，超过其上报的 Go 堆使用量（go_memstats_heap_inuse_bytes）"
        "的 <<ratio>> 倍。这不是 MADV_FREE 造成的，请检查内存碎片、cgo、mmap 的文件和 goroutine 栈。",
    },
    # ------------------------------------------------------------------ ipvs
    {
        "id": "NodesleuthIPVSOrphanedConnections",
        "group": "nodesleuth-ipvs",
        "mode": "ipvs-orphaned-connection",
        "severity": "warning",
        "for": "10m",
        "params": {},
        "meaning": "A pod holds ESTABLISHED connections to a Service VIP that IPVS has forgotten: replies can no "
        "longer reach it and the client waits forever.",
        "expr": """\
sum by (<<C>><<N>>instance, namespace, pod, netns, virtual_address, virtual_port) (nodesleuth_ipvs_orphaned_connections{<<sel:nodesleuth>>}) > 0""",
        "summary": "{{ $value }} connections from <<where>> to {{ $labels.virtual_address }}:"
        "{{ $labels.virtual_port }} are no longer known to IPVS",
        "description": "<<where>> holds {{ $value }} ESTABLISHED connections to Service VIP "
        "{{ $labels.virtual_address }}:{{ $labels.virtual_port }} without an IPVS connection entry: the entry "
        "expired (idle longer than the IPVS TCP timeout) or was flushed. The server's reply will be answered with "
        "RST by the client's kernel and the client waits until its own timeout, often forever.",
        "summary_zh": "<<where_zh>>到 {{ $labels.virtual_address }}:{{ $labels.virtual_port }} 的 {{ $value }} "
        "个连接已被 IPVS 遗忘",
        "description_zh": "<<where_zh>>有 {{ $value }} 个到 Service VIP {{ $labels.virtual_address }}:"
        "{{ $labels.virtual_port }} 的 ESTABLISHED 连接在 IPVS 中已没有连接表项：表项因空闲超过 IPVS TCP 超时而过期，"
        "或被清空。服务端的回包会被客户端内核以 RST 回应，客户端会一直等到自己的超时，往往是永远。",
    },
    {
        "id": "NodesleuthIPVSConnectionsNearExpiry",
        "group": "nodesleuth-ipvs",
        "mode": "ipvs-orphaned-connection",
        "severity": "info",
        "for": "5m",
        "params": {},
        "meaning": "A pod's connections to a Service VIP are idle so long that their IPVS entries are about to "
        "expire: the early warning of orphaned connections.",
        "expr": """\
sum by (<<C>><<N>>instance, namespace, pod, netns, virtual_address, virtual_port) (nodesleuth_ipvs_connections_near_expiry{<<sel:nodesleuth>>}) > 0""",
        "summary": "{{ $value }} connections from <<where>> to {{ $labels.virtual_address }}:"
        "{{ $labels.virtual_port }} are about to expire in IPVS",
        "description": "The IPVS entries of {{ $value }} idle connections from <<where>> to "
        "{{ $labels.virtual_address }}:{{ $labels.virtual_port }} are close to the IPVS TCP timeout. If the server "
        "answers after the entry expires, the connection is orphaned (NodesleuthIPVSOrphanedConnections). Use TCP "
        "keepalive shorter than the IPVS timeout.",
        "summary_zh": "<<where_zh>>到 {{ $labels.virtual_address }}:{{ $labels.virtual_port }} 的 {{ $value }} "
        "个连接在 IPVS 中即将过期",
        "description_zh": "<<where_zh>>到 {{ $labels.virtual_address }}:{{ $labels.virtual_port }} 的 "
        "{{ $value }} 个空闲连接的 IPVS 表项已接近 IPVS TCP 超时。如果服务端在表项过期后才回包，连接就会变成孤儿"
        "（见 NodesleuthIPVSOrphanedConnections）。请让 TCP keepalive 间隔短于 IPVS 超时。",
    },
    {
        "id": "NodesleuthIPVSIdleNearTimeout",
        "group": "nodesleuth-ipvs",
        "mode": "ipvs-orphaned-connection",
        "severity": "warning",
        "for": "15m",
        "params": {"quantile": 0.99, "ratio": 0.8},
        "meaning": "The longest-idle ESTABLISHED IPVS connections on a node get close to the IPVS TCP timeout: "
        "long calls will soon be cut off.",
        "expr": f"""\
histogram_quantile(<<quantile>>, sum by ({NODE_BY}, le) (
  label_replace(nodesleuth_ipvs_established_idle_entries{{<<sel:nodesleuth>>}}, "le", "$1", "idle_le", "(.*)")
))
/ on ({NODE_BY})
max by ({NODE_BY}) (nodesleuth_ipvs_timeout_seconds{{<<sel:nodesleuth>>, timeout="tcp"}})
>= <<ratio>>""",
        "summary": "IPVS connections on <<node>> idle up to {{ $value | humanizePercentage }} of the TCP timeout",
        "description": "On node <<node>> the <<quantile>> quantile of the idle time of ESTABLISHED IPVS entries is "
        "{{ $value | humanizePercentage }} of the IPVS TCP timeout. Calls that stay silent longer than the timeout "
        "lose their entry and hang. Give clients TCP keepalive shorter than the timeout, or raise kube-proxy's "
        "--ipvs-tcp-timeout.",
        "summary_zh": "节点 <<node>> 上 IPVS 连接的空闲时间已达 TCP 超时的 {{ $value | humanizePercentage }}",
        "description_zh": "节点 <<node>> 上 ESTABLISHED 状态 IPVS 表项空闲时间的 <<quantile>> 分位数已达 IPVS TCP "
        "超时的 {{ $value | humanizePercentage }}。静默时间超过该超时的调用会失去表项并挂住。"
        "请让客户端的 TCP keepalive 间隔短于该超时，或调大 kube-proxy 的 --ipvs-tcp-timeout。",
    },
    # ------------------------------------------------------------------ systemd
    {
        "id": "NodesleuthSystemdCookieExhaustion.warning",
        "name": "NodesleuthSystemdCookieExhaustion",
        "group": "nodesleuth-systemd",
        "mode": "systemd-cookie-exhaustion",
        "severity": "warning",
        "for": "1h",
        "params": {"horizon": 2592000},
        "meaning": "At the current rate systemd's 32-bit D-Bus cookie runs out within 30 days (warning) / "
        "7 days or is above 95% (critical); an unpatched systemd then stops answering on the bus.",
        "expr": f"""\
(1 - max by ({NODE_BY}) (nodesleuth_systemd_reply_serial_ratio{{<<sel:nodesleuth>>}}))
/ on ({NODE_BY}) nodesleuth:systemd_reply_serial_ratio:rate<<forecast_window>>
<= <<horizon>>""",
        "summary": "systemd on <<node>> runs out of D-Bus cookies in about {{ $value | humanizeDuration }}",
        "description": "At the growth rate of the last <<forecast_window>>, systemd's D-Bus message cookie on node "
        "<<node>> reaches 2^32 in about {{ $value | humanizeDuration }}. An unpatched systemd (without systemd "
        "#11818) then stops answering: container starts hang, PLEG turns unhealthy and the node goes NotReady. "
        "Plan a `systemctl daemon-reexec` or a systemd update.",
        "summary_zh": "节点 <<node>> 上 systemd 的 D-Bus cookie 预计约 {{ $value | humanizeDuration }} 后耗尽",
        "description_zh": "按过去 <<forecast_window>> 的增长速度，节点 <<node>> 上 systemd 的 D-Bus 消息 cookie "
        "约 {{ $value | humanizeDuration }} 后达到 2^32。未打补丁（不含 systemd #11818）的 systemd 届时将不再响应："
        "容器启动挂起，PLEG 不健康，节点变为 NotReady。请安排执行 systemctl daemon-reexec 或升级 systemd。",
    },
    {
        "id": "NodesleuthSystemdCookieExhaustion.critical",
        "name": "NodesleuthSystemdCookieExhaustion",
        "group": "nodesleuth-systemd",
        "mode": "systemd-cookie-exhaustion",
        "severity": "critical",
        "for": "10m",
        "params": {"horizon": 604800, "ratio": 0.95},
        "meaning": None,
        "expr": f"""\
max by ({NODE_BY}) (nodesleuth_systemd_reply_serial_ratio{{<<sel:nodesleuth>>}}) > <<ratio>>
or
(
  max by ({NODE_BY}) (nodesleuth_systemd_reply_serial_ratio{{<<sel:nodesleuth>>}})
  and on ({NODE_BY})
  (1 - max by ({NODE_BY}) (nodesleuth_systemd_reply_serial_ratio{{<<sel:nodesleuth>>}}))
  / on ({NODE_BY}) nodesleuth:systemd_reply_serial_ratio:rate<<forecast_window>>
  <= <<horizon>>
)""",
        "summary": "systemd on <<node>> has used {{ $value | humanizePercentage }} of its D-Bus cookies",
        "description": "systemd on node <<node>> has used {{ $value | humanizePercentage }} of its 32-bit D-Bus "
        "message cookie space, and is either above <<ratio>> or, at the growth rate of the last "
        "<<forecast_window>>, reaches the end within <<horizon>> seconds. An unpatched systemd then stops "
        "answering and the node goes NotReady. Drain the node and run `systemctl daemon-reexec` now.",
        "summary_zh": "节点 <<node>> 上 systemd 的 D-Bus cookie 已用掉 {{ $value | humanizePercentage }}",
        "description_zh": "节点 <<node>> 上 systemd 已用掉 32 位 D-Bus 消息 cookie 空间的 "
        "{{ $value | humanizePercentage }}：要么已超过 <<ratio>>，要么按过去 <<forecast_window>> 的增长速度将在 "
        "<<horizon>> 秒内用尽。未打补丁的 systemd 届时将不再响应，节点变为 NotReady。"
        "请立即排空该节点并执行 systemctl daemon-reexec。",
    },
    {
        "id": "NodesleuthSystemdUnresponsive",
        "group": "nodesleuth-systemd",
        "mode": "systemd-hung",
        "severity": "critical",
        "for": "2m",
        # A hung PID 1 or bus makes the node slow enough that scrapes of the exporter time out; a cut-off scrape
        # leaves no series, which would resolve the alert (and re-arm its `for`) while the hang goes on.
        "keep_firing_for": "5m",
        "params": {},
        "meaning": "systemd (PID 1) does not answer on D-Bus while dbus-daemon does: a hung or cookie-exhausted "
        "PID 1; container runtimes hang and the node goes NotReady.",
        "expr": f"""\
max by ({NODE_BY}) (nodesleuth_systemd_up{{<<sel:nodesleuth>>}}) == 0
and on ({NODE_BY})
max by ({NODE_BY}) (nodesleuth_dbus_up{{<<sel:nodesleuth>>}}) == 1""",
        "summary": "systemd on <<node>> does not answer on D-Bus",
        "description": "dbus-daemon on node <<node>> answers but systemd (PID 1) has not answered a D-Bus call "
        "within the exporter's timeout. runc and the container runtime wait for it, so container starts and stops "
        "hang, the kubelet's PLEG turns unhealthy and the node goes NotReady. Check the cookie "
        "(nodesleuth_systemd_reply_serial_ratio) before anything else.",
        "summary_zh": "节点 <<node>> 上的 systemd 不响应 D-Bus 调用",
        "description_zh": "节点 <<node>> 上 dbus-daemon 正常，但 systemd（PID 1）在超时时间内没有响应 D-Bus 调用。"
        "runc 和容器运行时都在等它，因此容器启动和停止会挂起，kubelet 的 PLEG 变得不健康，节点变为 NotReady。"
        "请首先检查 cookie 使用率（nodesleuth_systemd_reply_serial_ratio）。",
    },
    {
        "id": "NodesleuthDBusDown",
        "group": "nodesleuth-systemd",
        "mode": "systemd-hung",
        "severity": "critical",
        "for": "5m",
        # A hung PID 1 or bus makes the node slow enough that scrapes of the exporter time out; a cut-off scrape
        # leaves no series, which would resolve the alert (and re-arm its `for`) while the hang goes on.
        "keep_firing_for": "5m",
        "params": {},
        "meaning": "The system D-Bus (dbus-daemon) does not answer on a node that has one: nothing can talk to "
        "systemd.",
        "expr": f"""\
max by ({NODE_BY}) (nodesleuth_dbus_up{{<<sel:nodesleuth>>}}) == 0
unless on ({NODE_BY})
max by ({NODE_BY}) (nodesleuth_collector_source_present{{<<sel:nodesleuth>>, collector="systemd"}}) == 0""",
        "summary": "The system D-Bus on <<node>> does not answer",
        "description": "dbus-daemon on node <<node>> has not answered the exporter for the last checks although its "
        "socket exists. Without the system bus, runc cannot create cgroups through systemd and container starts "
        "fail or hang.",
        "summary_zh": "节点 <<node>> 上的系统 D-Bus 不响应",
        "description_zh": "节点 <<node>> 上的 dbus-daemon 套接字存在，但最近的检查中它都没有响应。"
        "没有系统总线，runc 无法通过 systemd 创建 cgroup，容器启动会失败或挂起。",
    },
    {
        "id": "NodesleuthSystemdLeakedProbeSlices",
        "group": "nodesleuth-systemd",
        "mode": "systemd-unit-leak",
        "severity": "warning",
        "for": "30m",
        "params": {"threshold": 20, "pattern": "libcontainer_*_systemd_test_default.slice"},
        "meaning": "systemd holds many leaked `libcontainer_*_systemd_test_default.slice` units from runc's "
        "systemd probe: a known runc bug that grows systemd's memory and its unit churn.",
        "expr": f"""\
max by ({NODE_BY}) (nodesleuth_systemd_pattern_units{{<<sel:nodesleuth>>, pattern="<<pattern>>"}}) >= <<threshold>>""",
        "summary": "systemd on <<node>> holds {{ $value }} leaked runc probe slices",
        "description": "systemd on node <<node>> holds {{ $value }} units matching <<pattern>> (threshold "
        "<<threshold>>). runc creates one to probe systemd support and some versions leave it behind; they pile "
        "up in PID 1 and add to its unit churn. Update runc; remove them with `systemctl stop`.",
        "summary_zh": "节点 <<node>> 上的 systemd 残留了 {{ $value }} 个 runc 探测 slice",
        "description_zh": "节点 <<node>> 上的 systemd 中有 {{ $value }} 个匹配 <<pattern>> 的 unit（阈值 "
        "<<threshold>>）。runc 为探测 systemd 支持会创建这种 slice，部分版本会遗留它们；它们在 PID 1 中越积越多，"
        "并增加 unit 的创建销毁。请升级 runc，并用 systemctl stop 清理它们。",
    },
    {
        "id": "NodesleuthSystemdUnitChurn",
        "group": "nodesleuth-systemd",
        "mode": "systemd-unit-leak",
        "severity": "info",
        "for": "1h",
        "params": {"threshold": 3000, "window": "1h"},
        "meaning": "systemd installs jobs (transient units) at an unusual rate; each costs D-Bus cookies and is "
        "what drives the cookie towards exhaustion.",
        "expr": f"""\
sum by ({NODE_BY}) (increase(nodesleuth_systemd_installed_jobs_total{{<<sel:nodesleuth>>}}[<<window>>])) >= <<threshold>>""",
        "summary": "systemd on <<node>> installed {{ $value | humanize }} jobs in <<window>>",
        "description": "systemd on node <<node>> installed {{ $value | humanize }} jobs within <<window>> "
        "(threshold <<threshold>>): transient scopes and slices from containers, probes or cron-like workloads. "
        "Each one uses D-Bus cookies; find the source before the cookie runs out.",
        "summary_zh": "节点 <<node>> 上的 systemd 在 <<window>> 内创建了 {{ $value | humanize }} 个任务",
        "description_zh": "节点 <<node>> 上的 systemd 在 <<window>> 内创建了 {{ $value | humanize }} 个任务（阈值 "
        "<<threshold>>），主要是容器、探针或定时任务产生的临时 scope 和 slice。每个都会消耗 D-Bus cookie，"
        "请在 cookie 耗尽前找出来源。",
    },
    # ------------------------------------------------------------------ exporter
    {
        "id": "NodesleuthExporterDown",
        "group": "nodesleuth-exporter",
        "mode": "exporter-health",
        "severity": "warning",
        "for": "5m",
        "params": {},
        "meaning": "Prometheus cannot scrape nodesleuth on a node: none of the alerts above can fire there.",
        "expr": "up{<<sel:nodesleuth>>} == 0",
        "summary": "nodesleuth on <<node>> cannot be scraped",
        "description": "Prometheus has failed to scrape nodesleuth target {{ $labels.instance }} (job "
        "{{ $labels.job }}) for <<for>>. The node's CLOSE_WAIT, IPVS, memory and systemd alerts are blind until it "
        "is back.",
        "summary_zh": "无法采集节点 <<node>> 上的 nodesleuth",
        "description_zh": "Prometheus 已经 <<for>> 无法采集 nodesleuth 目标 {{ $labels.instance }}（job "
        "{{ $labels.job }}）。在它恢复之前，该节点的 CLOSE_WAIT、IPVS、内存和 systemd 告警都无法触发。",
    },
    {
        "id": "NodesleuthCollectorFailing",
        "group": "nodesleuth-exporter",
        "mode": "exporter-health",
        "severity": "warning",
        "for": "15m",
        "params": {},
        "meaning": "One nodesleuth collector has failed (error, timeout or malformed input) on every scrape for a "
        "long time; its metrics are missing or partial (the systemd collector while systemd is down is left to the "
        "systemd alerts).",
        # A hung systemd or a dead bus makes the systemd collector report failure; that is the systemd alerts' job.
        "expr": f"""\
max by ({NODE_BY}, collector) (nodesleuth_scrape_collector_success{{<<sel:nodesleuth>>}}) == 0
unless on ({NODE_BY}, collector)
label_replace(max by ({NODE_BY}) (nodesleuth_systemd_up{{<<sel:nodesleuth>>}}) == 0, "collector", "systemd", "", "")""",
        "summary": "nodesleuth collector {{ $labels.collector }} fails on <<node>>",
        "description": "The {{ $labels.collector }} collector of nodesleuth on node <<node>> has reported failure "
        "on every scrape for <<for>>; its series are missing or partial. The exporter logs the reason once.",
        "summary_zh": "节点 <<node>> 上 nodesleuth 的 {{ $labels.collector }} 采集器持续失败",
        "description_zh": "节点 <<node>> 上 nodesleuth 的 {{ $labels.collector }} 采集器在过去 <<for>> 的每次采集中"
        "都报告失败，其指标缺失或不完整。失败原因在 exporter 日志中记录一次。",
    },
    {
        "id": "NodesleuthScrapeNearTimeout",
        "group": "nodesleuth-exporter",
        "mode": "exporter-health",
        "severity": "warning",
        "for": "15m",
        "params": {"ratio": 0.8, "assumed_timeout": 10},
        "meaning": "Scraping nodesleuth takes nearly the scrape timeout: collectors are being cut off at their "
        "deadline.",
        "expr": """\
scrape_duration_seconds{<<sel:nodesleuth>>} >= <<ratio>> * scrape_timeout_seconds{<<sel:nodesleuth>>}
or
scrape_duration_seconds{<<sel:nodesleuth>>} >= <<ratio>> * <<assumed_timeout>> unless scrape_timeout_seconds{<<sel:nodesleuth>>}""",
        "summary": "Scraping nodesleuth on <<node>> takes {{ $value | humanizeDuration }}",
        "description": "A scrape of nodesleuth target {{ $labels.instance }} takes {{ $value | humanizeDuration }}, "
        "at least <<ratio>> of the scrape timeout (scrape_timeout_seconds, or <<assumed_timeout>> s where "
        "Prometheus does not export it). Collectors that miss the deadline report failure and their data is "
        "partial. Look at nodesleuth_scrape_collector_duration_seconds.",
        "summary_zh": "采集节点 <<node>> 上的 nodesleuth 耗时 {{ $value | humanizeDuration }}",
        "description_zh": "采集 nodesleuth 目标 {{ $labels.instance }} 耗时 {{ $value | humanizeDuration }}，"
        "已达采集超时的 <<ratio>>（取 scrape_timeout_seconds，Prometheus 未导出时按 <<assumed_timeout>> 秒计）。"
        "超过截止时间的采集器会报告失败，数据不完整。请查看 nodesleuth_scrape_collector_duration_seconds。",
    },
    # ------------------------------------------------------------------ node (off by default)
    {
        "id": "NodesleuthNodeConntrackDropping",
        "group": "nodesleuth-node",
        "mode": "node-signals",
        "severity": "critical",
        "for": "5m",
        "params": {"fill": 0.9, "window": "5m"},
        "meaning": "The conntrack table is nearly full and the kernel is actually dropping or failing to insert "
        "connections (not only a fill ratio).",
        "expr": f"""\
(
  sum by ({NODE_BY}) (rate(node_nf_conntrack_stat_drop{{<<sel:node_exporter>>}}[<<window>>]))
  + on ({NODE_BY}) sum by ({NODE_BY}) (rate(node_nf_conntrack_stat_early_drop{{<<sel:node_exporter>>}}[<<window>>]))
  + on ({NODE_BY}) sum by ({NODE_BY}) (rate(node_nf_conntrack_stat_insert_failed{{<<sel:node_exporter>>}}[<<window>>]))
) > 0
and on ({NODE_BY})
max by ({NODE_BY}) (node_nf_conntrack_entries{{<<sel:node_exporter>>}} / node_nf_conntrack_entries_limit{{<<sel:node_exporter>>}}) >= <<fill>>""",
        "summary": "Conntrack on <<node>> is full and drops {{ $value | printf `%.2f` }} packets/s",
        "description": "The conntrack table of node <<node>> is at least <<fill>> full and the kernel drops or "
        "fails to insert {{ $value | printf `%.2f` }} connections per second (over <<window>>). New connections, DNS "
        "lookups first, time out.",
        "summary_zh": "节点 <<node>> 的 conntrack 表已满，每秒丢弃 {{ $value | printf `%.2f` }} 个连接",
        "description_zh": "节点 <<node>> 的 conntrack 表已用到 <<fill>> 以上，内核每秒丢弃或插入失败 "
        "{{ $value | printf `%.2f` }} 个连接（统计窗口 <<window>>）。新连接会超时，首先受影响的是 DNS 查询。",
    },
    {
        "id": "NodesleuthNodeConntrackInsertFailures",
        "group": "nodesleuth-node",
        "mode": "node-signals",
        "severity": "warning",
        "for": "15m",
        "params": {"threshold": 0.1, "window": "5m"},
        "meaning": "conntrack insertions fail on a node whose table is not full: the SNAT/DNAT race that delays "
        "DNS by 5 s.",
        "expr": f"""\
sum by ({NODE_BY}) (rate(node_nf_conntrack_stat_insert_failed{{<<sel:node_exporter>>}}[<<window>>])) >= <<threshold>>""",
        "summary": "conntrack insertions fail on <<node>>: {{ $value | printf `%.2f` }}/s",
        "description": "The kernel of node <<node>> fails {{ $value | printf `%.2f` }} conntrack insertions per second "
        "(over <<window>>). Without a full table this is the race of two packets of one UDP flow (typically DNS A "
        "and AAAA queries) being NATed at once: one is dropped and the client retries after 5 s.",
        "summary_zh": "节点 <<node>> 上 conntrack 插入失败：每秒 {{ $value | printf `%.2f` }} 次",
        "description_zh": "节点 <<node>> 的内核每秒有 {{ $value | printf `%.2f` }} 次 conntrack 插入失败（统计窗口 "
        "<<window>>）。表未满时，这是同一 UDP 流的两个包（通常是 DNS 的 A 和 AAAA 查询）同时做 NAT 的竞争："
        "其中一个被丢弃，客户端 5 秒后重试。",
    },
    {
        "id": "NodesleuthNodeTCPRetransmitHigh",
        "group": "nodesleuth-node",
        "mode": "node-signals",
        "severity": "warning",
        "for": "15m",
        "params": {"ratio": 0.05, "min_segments": 10, "window": "5m"},
        "meaning": "A node retransmits a large share of the TCP segments it sends: packet loss on its path.",
        "expr": f"""\
sum by ({NODE_BY}) (rate(node_netstat_Tcp_RetransSegs{{<<sel:node_exporter>>}}[<<window>>]))
/ sum by ({NODE_BY}) (rate(node_netstat_Tcp_OutSegs{{<<sel:node_exporter>>}}[<<window>>]))
>= <<ratio>>
and on ({NODE_BY})
sum by ({NODE_BY}) (rate(node_netstat_Tcp_OutSegs{{<<sel:node_exporter>>}}[<<window>>])) >= <<min_segments>>""",
        "summary": "Node <<node>> retransmits {{ $value | humanizePercentage }} of its TCP segments",
        "description": "Node <<node>> retransmitted {{ $value | humanizePercentage }} of the TCP segments it sent "
        "over <<window>> (threshold <<ratio>>). Look for packet loss: NIC errors, conntrack drops, an overloaded "
        "peer.",
        "summary_zh": "节点 <<node>> 的 TCP 重传率为 {{ $value | humanizePercentage }}",
        "description_zh": "节点 <<node>> 在过去 <<window>> 内重传了所发送 TCP 报文的 {{ $value | humanizePercentage }}"
        "（阈值 <<ratio>>）。请排查丢包：网卡错误、conntrack 丢弃、对端过载。",
    },
    {
        "id": "NodesleuthCoreDNSLatencyHigh",
        "group": "nodesleuth-node",
        "mode": "node-signals",
        "severity": "warning",
        "for": "10m",
        "params": {"quantile": 0.99, "seconds": 1, "window": "5m"},
        "meaning": "A CoreDNS instance answers slowly (p99); often conntrack or upstream trouble on its node.",
        "expr": f"""\
histogram_quantile(<<quantile>>, sum by ({NODE_BY}, le) (rate(coredns_dns_request_duration_seconds_bucket{{<<sel:coredns>>}}[<<window>>]))) >= <<seconds>>""",
        "summary": "CoreDNS {{ $labels.instance }} answers in {{ $value | humanizeDuration }} (p<<quantile>>)",
        "description": "The <<quantile>> quantile of CoreDNS {{ $labels.instance }} request latency on node <<node>> "
        "is {{ $value | humanizeDuration }} over <<window>> (threshold <<seconds>> s). Check conntrack drops on the "
        "node and the upstream resolvers.",
        "summary_zh": "CoreDNS {{ $labels.instance }} 的响应时间为 {{ $value | humanizeDuration }}（<<quantile>> 分位）",
        "description_zh": "节点 <<node>> 上 CoreDNS {{ $labels.instance }} 请求延迟的 <<quantile>> 分位数在过去 "
        "<<window>> 内为 {{ $value | humanizeDuration }}（阈值 <<seconds>> 秒）。请检查该节点的 conntrack 丢弃和上游 DNS。",
    },
    {
        "id": "NodesleuthCoreDNSServfailHigh",
        "group": "nodesleuth-node",
        "mode": "node-signals",
        "severity": "warning",
        "for": "10m",
        "params": {"ratio": 0.05, "window": "5m"},
        "meaning": "A CoreDNS instance answers a large share of queries with SERVFAIL.",
        "expr": f"""\
sum by ({NODE_BY}) (rate(coredns_dns_responses_total{{<<sel:coredns>>, rcode="SERVFAIL"}}[<<window>>]))
/ sum by ({NODE_BY}) (rate(coredns_dns_responses_total{{<<sel:coredns>>}}[<<window>>]))
>= <<ratio>>""",
        "summary": "CoreDNS {{ $labels.instance }} answers {{ $value | humanizePercentage }} of queries with "
        "SERVFAIL",
        "description": "CoreDNS {{ $labels.instance }} on node <<node>> answered {{ $value | humanizePercentage }} of "
        "its queries with SERVFAIL over <<window>> (threshold <<ratio>>): its upstreams fail or time out.",
        "summary_zh": "CoreDNS {{ $labels.instance }} 有 {{ $value | humanizePercentage }} 的查询返回 SERVFAIL",
        "description_zh": "节点 <<node>> 上的 CoreDNS {{ $labels.instance }} 在过去 <<window>> 内有 "
        "{{ $value | humanizePercentage }} 的查询返回 SERVFAIL（阈值 <<ratio>>）：它的上游失败或超时。",
    },
    {
        "id": "NodesleuthKubeletPLEGSlow",
        "group": "nodesleuth-node",
        "mode": "node-signals",
        "severity": "warning",
        "for": "5m",
        "params": {"quantile": 0.99, "seconds": 3, "window": "5m"},
        "meaning": "The kubelet's pod lifecycle event generator relists slowly: the container runtime (or systemd "
        "below it) answers slowly; the node goes NotReady at 3 minutes.",
        "expr": """\
histogram_quantile(<<quantile>>, sum by (<<C>>instance, le) (rate(kubelet_pleg_relist_duration_seconds_bucket{<<sel:kubelet>>}[<<window>>])))
* on (<<C>>instance) group_left (<<node_label>>)
max by (<<C>>instance, <<node_label>>) (label_replace(kubelet_node_name{<<sel:kubelet>>}, "<<node_label>>", "$1", "node", "(.*)"))
>= <<seconds>>""",
        "summary": "PLEG relist on <<node>> takes {{ $value | humanizeDuration }}",
        "description": "The <<quantile>> quantile of the kubelet's PLEG relist on node <<node>> is "
        "{{ $value | humanizeDuration }} (threshold <<seconds>> s). The container runtime answers slowly; check "
        "whether systemd answers (NodesleuthSystemdUnresponsive) before restarting anything.",
        "summary_zh": "节点 <<node>> 上 PLEG relist 耗时 {{ $value | humanizeDuration }}",
        "description_zh": "节点 <<node>> 上 kubelet PLEG relist 耗时的 <<quantile>> 分位数为 "
        "{{ $value | humanizeDuration }}（阈值 <<seconds>> 秒）。容器运行时响应缓慢；"
        "在重启任何组件之前，先确认 systemd 是否还在响应（NodesleuthSystemdUnresponsive）。",
    },
    {
        "id": "NodesleuthNodeNotReady",
        "group": "nodesleuth-node",
        "mode": "node-signals",
        "severity": "warning",
        "for": "5m",
        "params": {},
        "meaning": "A node is NotReady (kube-state-metrics).",
        "expr": """\
max by (<<C>><<node_label>>) (label_replace(kube_node_status_condition{<<sel:kube_state_metrics>>, condition="Ready", status="true"}, "<<node_label>>", "$1", "node", "(.*)")) == 0""",
        "summary": "Node <<node>> is NotReady",
        "description": "Node <<node>> has not been Ready for <<for>>. If systemd or D-Bus alerts fire for the same "
        "node, they are the cause (this alert is inhibited by them).",
        "summary_zh": "节点 <<node>> 处于 NotReady 状态",
        "description_zh": "节点 <<node>> 已经 <<for>> 不是 Ready 状态。如果同一节点有 systemd 或 D-Bus 告警，"
        "它们才是原因（此时本告警会被抑制）。",
    },
    {
        "id": "NodesleuthNodeCPUHigh",
        "group": "nodesleuth-node",
        "mode": "node-signals",
        "severity": "warning",
        "for": "15m",
        "params": {"percent": 90, "window": "5m"},
        "meaning": "A node's CPUs are busy almost all the time.",
        "expr": f"""\
100 * (1 - avg by ({NODE_BY}) (rate(node_cpu_seconds_total{{<<sel:node_exporter>>, mode="idle"}}[<<window>>]))) >= <<percent>>""",
        "summary": "Node <<node>> CPU usage is {{ $value | humanize }}%",
        "description": "Node <<node>> has used {{ $value | humanize }}% of its CPU time over <<window>> for "
        "<<for>> (threshold <<percent>>%). Probes time out and latency grows.",
        "summary_zh": "节点 <<node>> 的 CPU 使用率为 {{ $value | humanize }}%",
        "description_zh": "节点 <<node>> 在 <<for>> 内 CPU 使用率持续为 {{ $value | humanize }}%（阈值 <<percent>>%），"
        "探针会超时，延迟会上升。",
    },
    {
        "id": "NodesleuthNodeDiskIOBusy",
        "group": "nodesleuth-node",
        "mode": "node-signals",
        "severity": "warning",
        "for": "15m",
        "params": {"busy": 0.9, "window": "5m"},
        "meaning": "A node's disk is busy with I/O nearly all the time (saturated).",
        "expr": f"""\
max by ({NODE_BY}, device) (rate(node_disk_io_time_seconds_total{{<<sel:node_exporter>>}}[<<window>>])) >= <<busy>>""",
        "summary": "Disk {{ $labels.device }} on <<node>> is busy {{ $value | humanizePercentage }} of the time",
        "description": "Disk {{ $labels.device }} of node <<node>> was busy with I/O {{ $value | humanizePercentage }} "
        "of the time over <<window>> for <<for>>. The kubelet, the container runtime and etcd-like workloads stall "
        "behind it.",
        "summary_zh": "节点 <<node>> 的磁盘 {{ $labels.device }} 繁忙时间占比 {{ $value | humanizePercentage }}",
        "description_zh": "节点 <<node>> 的磁盘 {{ $labels.device }} 在 <<for>> 内处理 I/O 的时间占比为 "
        "{{ $value | humanizePercentage }}（统计窗口 <<window>>）。kubelet、容器运行时以及对磁盘延迟敏感的负载都会被拖慢。",
    },
]

# Alertmanager inhibition: a root cause silences its symptoms on the same node or pod.
# (source alertnames, target alertnames, labels that must be equal). Upstream kubernetes-mixin names are listed as
# targets because most clusters run those rules too.
INHIBIT = [
    (
        ["NodesleuthSystemdUnresponsive", "NodesleuthDBusDown"],
        ["NodesleuthKubeletPLEGSlow", "NodesleuthNodeNotReady", "KubeletPlegDurationHigh", "KubeNodeNotReady"],
        ["<<cluster_label>>", "<<node_label>>"],
        None,
    ),
    (
        # only a critical cookie alert means the node is (about to be) stuck
        ["NodesleuthSystemdCookieExhaustion"],
        ["NodesleuthKubeletPLEGSlow", "NodesleuthNodeNotReady", "KubeletPlegDurationHigh", "KubeNodeNotReady"],
        ["<<cluster_label>>", "<<node_label>>"],
        'severity="critical"',
    ),
    (
        ["NodesleuthContainerHungRestarting"],
        ["NodesleuthContainerLivenessRestarting", "KubePodCrashLooping"],
        ["<<cluster_label>>", "namespace", "pod"],
        None,
    ),
    # A process stuck writing its output (issue 12) is the root cause of its pod's liveness restarts and of the
    # CLOSE_WAIT / accept-queue pile-up on its ports. Only pod-level stalls inhibit (pod!=""): the exporter's
    # (other) group and host processes have no pod, and an empty pod would "equal" every pod-less alert of the
    # cluster. NodesleuthContainerHungRestarting (critical, it names the stall as its cause) is silenced only by
    # the critical (tty) stall, never paged down by a warning.
    (
        ["NodesleuthContainerOutputStalled"],
        [
            "NodesleuthContainerLivenessRestarting",
            "KubePodCrashLooping",
            "NodesleuthTCPCloseWaitPileUp",
            "NodesleuthTCPAcceptQueueFull",
        ],
        ["<<cluster_label>>", "namespace", "pod"],
        ['pod!=""'],
    ),
    (
        ["NodesleuthContainerOutputStalled"],
        ["NodesleuthContainerHungRestarting"],
        ["<<cluster_label>>", "namespace", "pod"],
        ['severity="critical"', 'pod!=""'],
    ),
    (
        ["NodesleuthNodeConntrackDropping", "NodesleuthNodeConntrackInsertFailures"],
        ["NodesleuthCoreDNSLatencyHigh"],
        ["<<cluster_label>>", "<<node_label>>"],
        None,
    ),
    (
        ["NodesleuthSystemdCookieExhaustion"],
        ["NodesleuthSystemdCookieExhaustion"],
        ["<<cluster_label>>", "<<node_label>>"],
        "critical-over-warning",
    ),
]
