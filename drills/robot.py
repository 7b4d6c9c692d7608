"""A strict loopback fake of a DingTalk custom group robot ("自定义机器人", security setting 加签), the end of the drills'
chain. It enforces what the real service documents and what relay/src/robot.rs relies on:

- `POST /robot/send?access_token=<token>&timestamp=<ms>&sign=<sign>`; unknown token: errcode 300005;
- `sign` = base64(HMAC-SHA256(key = secret, message = "<timestamp>\\n<secret>")), URL-encoded in the query, and the
  timestamp within one hour of now; otherwise errcode 310000;
- the body: JSON, at most 20,000 bytes (460101), `msgtype` "markdown" with a non-empty `markdown.title` and
  `markdown.text`, `at` (if present) with `atMobiles`/`atUserIds` lists and a boolean `isAtAll` (40035 otherwise);
- at most 20 accepted messages in any 60 seconds; beyond: errcode 130101 ("send too fast").

Every accepted message is kept with its arrival time and parsed back into alerts (status, alert name, key labels) from
the relay's built-in `zh` template; every refusal is kept too, so a test can assert there was none.
"""
import base64
import hashlib
import hmac
import http.server
import json
import re
import threading
import time
import urllib.parse

LIMIT, WINDOW = 20, 60.0


def sign(timestamp_ms, secret):
    mac = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def unescape(s):
    """Undoes the relay's markdown defusing of label values (backslash before punctuation)."""
    return re.sub(r"\\(.)", r"\1", s)


def parse_alerts(text):
    """[(status, alertname, {label: value})] of one message of the built-in zh template."""
    out = []
    status = None
    current = None
    for line in text.splitlines():
        if line.startswith("### ") and "告警触发" in line:
            status = "firing"
        elif line.startswith("### ") and "告警恢复" in line:
            status = "resolved"
        m = re.match(r"^\*\*(.+?)\*\*", line)
        if m and status:
            current = (status, unescape(m.group(1)), {})
            out.append(current)
            continue
        m = re.match(r"^- ((?:\\_|[A-Za-z0-9])+)：(.*)$", line)  # label names are escaped too (local\_port)
        if m and current:
            current[2][unescape(m.group(1))] = unescape(m.group(2))
    return out


class Robot:
    def __init__(self, token, secret):
        self.token, self.secret = token, secret
        self.lock = threading.Lock()
        self.accepted = []  # (arrival time.time(), title, text, [(status, alertname, labels)])
        self.refused = []   # (arrival, errcode, errmsg)
        robot = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                code, msg = robot.handle(self.path, body)
                data = json.dumps({"errcode": code, "errmsg": msg}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/robot/send?access_token={token}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def handle(self, path, body):
        now = time.time()
        with self.lock:
            code, msg = self.check(path, body, now)
            if code:
                self.refused.append((now, code, msg))
            return code, msg

    def check(self, path, body, now):
        url = urllib.parse.urlsplit(path)
        if url.path != "/robot/send":
            return 404, "not found"
        raw = dict(p.split("=", 1) for p in url.query.split("&") if "=" in p)
        q = {k: urllib.parse.unquote(v) for k, v in raw.items()}
        if q.get("access_token") != self.token:
            return 300005, "token is not exist"
        ts, sg = q.get("timestamp"), q.get("sign")
        if not ts or not sg or not ts.isdigit():
            return 310000, "sign not match"
        if abs(now * 1000 - int(ts)) > 3_600_000:
            return 310000, "invalid timestamp"
        if re.search(r"[+/=]", raw["sign"]):
            return 310000, "sign not match (not URL-encoded)"
        if not hmac.compare_digest(sg, sign(int(ts), self.secret)):
            return 310000, "sign not match"
        if len(body) > 20000:
            return 460101, "message too long, exceed 20000 bytes"
        try:
            v = json.loads(body)
        except ValueError:
            return 400002, "invalid json"
        md = v.get("markdown") if isinstance(v, dict) else None
        at = v.get("at") if isinstance(v, dict) else None
        if (v.get("msgtype") != "markdown" or not isinstance(md, dict) or not isinstance(md.get("title"), str)
                or not md["title"] or not isinstance(md.get("text"), str) or not md["text"]
                or (at is not None and not (isinstance(at.get("atMobiles"), list)
                                            and isinstance(at.get("atUserIds"), list)
                                            and isinstance(at.get("isAtAll"), bool)))):
            return 40035, "invalid parameter"
        if sum(1 for t, *_ in self.accepted if now - t < WINDOW) >= LIMIT:
            return 130101, "send too fast, exceed 20 times per minute"
        self.accepted.append((now, md["title"], md["text"], parse_alerts(md["text"])))
        return 0, "ok"

    def find(self, status, alertname, labels, since=0.0):
        """Arrival time of the first accepted message (after `since`) with this alert in this status, else None."""
        with self.lock:
            for t, _title, _text, alerts in self.accepted:
                if t < since:
                    continue
                for st, name, ls in alerts:
                    if st == status and name == alertname and all(ls.get(k) == v for k, v in labels.items()):
                        return t, ls
        return None

    def last(self, alertname, labels):
        """(status, arrival) of the latest accepted message about this alert, else None."""
        out = None
        with self.lock:
            for t, _title, _text, alerts in self.accepted:
                for st, name, ls in alerts:
                    if name == alertname and all(ls.get(k) == v for k, v in labels.items()):
                        out = (st, t)
        return out

    def max_in_window(self):
        """The most messages accepted in any 60 s."""
        with self.lock:
            ts = [t for t, *_ in self.accepted]
        return max((sum(1 for u in ts if t <= u < t + WINDOW) for t in ts), default=0)
