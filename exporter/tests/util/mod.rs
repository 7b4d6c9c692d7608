//! Helpers for the end-to-end tests: run the real `nodesleuth` binary, scrape it, read samples; make network
//! namespaces and socket-holding processes that are always cleaned up, even when a test fails.
#![allow(dead_code)]

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Fails loudly (never skips) when the tests are not run as root: they need network namespaces.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "these tests create network namespaces and must run as root (see README)"
    );
}

/// Fails loudly when a tool the test needs is missing.
/// Compiles the C test helper `exporter/tests/helpers/<source>` into `dir/<name>` (`name` is its process name).
pub fn build_c_helper(dir: &Path, source: &str, name: &str) -> PathBuf {
    let cc = require_tool("cc");
    let src = repo_root().join("exporter/tests/helpers").join(source);
    let out = dir.join(name);
    let st = std::process::Command::new(cc)
        .args(["-O2", "-Wall", "-Werror", "-pthread", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("run cc");
    assert!(st.success(), "cc {} failed", src.display());
    out
}

pub fn require_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{name}` is not installed; run tests/run-all.sh, which installs it"))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running exporter, killed on drop. Its log is kept in a file for assertions and failure messages.
pub struct Exporter {
    pub port: u16,
    child: Child,
    log: tempfile::NamedTempFile,
}

impl Exporter {
    pub fn start(args: &[&str]) -> Exporter {
        Self::start_when(args, |port| http_get(port, "/healthz").is_ok())
    }

    /// Starts the exporter and waits until `ready(port)` holds (for servers that do not speak plain HTTP).
    pub fn start_when(args: &[&str], ready: impl Fn(u16) -> bool) -> Exporter {
        Self::launch(&[], args, &[], ready)
    }

    /// Starts `wrapper… nodesleuth --web.listen-address=… args…` with extra environment variables, and waits
    /// until `ready(port)` holds; fails with the exporter's log if it exits or never gets ready.
    pub fn launch(wrapper: &[&str], args: &[&str], env: &[(&str, &str)], ready: impl Fn(u16) -> bool) -> Exporter {
        let port = free_port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let exe = env!("CARGO_BIN_EXE_nodesleuth");
        let mut cmd = Command::new(wrapper.first().copied().unwrap_or(exe));
        if !wrapper.is_empty() {
            cmd.args(&wrapper[1..]).arg(exe);
        }
        let child = cmd
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("start nodesleuth");
        let mut e = Exporter { port, child, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if ready(port) {
                return e;
            }
            if let Ok(Some(status)) = e.child.try_wait() {
                panic!("nodesleuth exited with {status}; log:\n{}", e.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nodesleuth did not come up; log:\n{}", e.log());
    }

    pub fn scrape(&self) -> String {
        let (status, body) =
            http_get(self.port, "/metrics").unwrap_or_else(|err| panic!("scrape failed: {err}\nlog:\n{}", self.log()));
        assert_eq!(status, 200, "scrape status; body: {body}");
        body
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit by itself, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Minimal HTTP/1.1 GET (no client library needed for a loopback test).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    http_request(port, path, &[])
}

pub fn http_request(port: u16, path: &str, headers: &[(&str, &str)]) -> std::io::Result<(u16, String)> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra}\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_string() };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// The value of the one sample of `name` whose labels include every `(label, value)` given.
pub fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<f64> = samples(metrics, name, labels).into_iter().map(|(_, v)| v).collect();
    assert!(found.len() <= 1, "{name} {labels:?} matches {} series", found.len());
    found.first().copied()
}

/// Every sample of `name` whose labels include the given pairs, as (label text, value).
pub fn samples(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Vec<(String, f64)> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let wanted = metric == name && labels.iter().all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")));
            if !wanted {
                return None;
            }
            Some((label_text.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// A network namespace made with `ip netns add`, deleted on drop; processes started in it are killed first.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new(tag: &str) -> NetNs {
        require_tool("ip");
        let name = format!("nstest-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).stderr(Stdio::null()).status();
        run("ip", &["netns", "add", &name]);
        run("ip", &["-n", &name, "link", "set", "lo", "up"]);
        NetNs { name }
    }

    /// The namespace's inode (what nodesleuth labels unnamed namespaces with).
    pub fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/run/netns/{}", self.name)).unwrap().ino()
    }

    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &self.name]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

pub fn run(program: &str, args: &[&str]) {
    let st = Command::new(program).args(args).status().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(st.success(), "{program} {args:?} failed: {st}");
}

/// A process running a Python socket script, killed on drop. The script prints `READY <json>` once its sockets
/// are in place; `ready` holds that JSON text.
pub struct Holder {
    child: Child,
    pub ready: String,
}

impl Holder {
    pub fn spawn(mut cmd: Command, script: &str, args: &[String]) -> Holder {
        require_tool("python3");
        let mut child = cmd
            .arg("-c")
            .arg(script)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn python3");
        let mut out = child.stdout.take().unwrap();
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while out.read(&mut byte).map(|n| n == 1).unwrap_or(false) {
            if byte[0] == b'\n' {
                break;
            }
            buf.push(byte[0]);
        }
        let line = String::from_utf8_lossy(&buf).to_string();
        let ready =
            line.strip_prefix("READY ").unwrap_or_else(|| panic!("holder did not get ready: {line:?}")).to_string();
        Holder { child, ready }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Like [`Exporter::start`], with extra environment variables for the exporter.
pub fn start_exporter_with_env(args: &[&str], env: &[(&str, &str)]) -> Exporter {
    Exporter::launch(&[], args, env, |port| http_get(port, "/healthz").is_ok())
}

/// A real systemd (the one installed, 252 on Debian 12) running as PID 1 of new PID and mount namespaces, with
/// dbus-daemon socket-activated under it. From the host its system bus is at
/// `/proc/<pid>/root/run/dbus/system_bus_socket`.
///
/// Always cleaned up: on drop (also when a test panics) PID 1 of the namespace gets SIGKILL, which makes the kernel
/// kill every process in the namespace; `unshare --kill-child` and a parent-death signal on `unshare` do the same if
/// the test process itself dies.
pub struct SystemdSandbox {
    /// Host PID of the sandbox's PID 1 (systemd).
    pub pid: u32,
    unshare: Child,
    dir: tempfile::TempDir,
}

const SANDBOX_SYSTEMD: &str = "/lib/systemd/systemd";

impl SystemdSandbox {
    pub fn start() -> SystemdSandbox {
        use std::os::unix::process::CommandExt;
        require_root();
        for tool in ["unshare", "nsenter", "systemd-run", "systemctl", "busctl", "dbus-daemon"] {
            require_tool(tool);
        }
        assert!(
            Path::new(SANDBOX_SYSTEMD).is_file(),
            "{SANDBOX_SYSTEMD} is not installed (Debian package `systemd`); run tests/run-all.sh, which installs it"
        );
        let dir = tempfile::tempdir().unwrap();
        let units = dir.path().join("units");
        std::fs::create_dir(&units).unwrap();
        for unit in ["dbus.socket", "dbus.service"] {
            let from = Path::new("/lib/systemd/system").join(unit);
            std::fs::copy(&from, units.join(unit))
                .unwrap_or_else(|e| panic!("{}: {e} (Debian package `dbus` installs it)", from.display()));
        }
        std::fs::write(units.join("test.target"), "[Unit]\nDescription=test\nWants=dbus.socket dbus.service\n")
            .unwrap();
        // dbus.socket and dbus.service depend on these; without them systemd cannot re-activate dbus-daemon after
        // it dies (the socket unit fails with "resources").
        for stub in ["sysinit.target", "sockets.target", "basic.target"] {
            std::fs::write(units.join(stub), format!("[Unit]\nDescription=stub {stub}\n")).unwrap();
        }
        let script = dir.path().join("pid1.sh");
        std::fs::write(
            &script,
            format!(
                "set -e\nmount -t tmpfs tmpfs /run\nmkdir -p /run/dbus\n\
                 SYSTEMD_UNIT_PATH={} container=unshare exec {SANDBOX_SYSTEMD} --system --unit=test.target\n",
                units.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("systemd.log")).unwrap();
        let mut cmd = Command::new("unshare");
        cmd.args(["--pid", "--fork", "--kill-child=SIGKILL", "--mount", "--mount-proc", "--propagation", "private"])
            .arg("sh")
            .arg(&script)
            .env_remove("DBUS_SYSTEM_BUS_ADDRESS")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let unshare = cmd.spawn().expect("spawn unshare");
        let mut sandbox = SystemdSandbox { pid: 0, unshare, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while sandbox.pid == 0 {
            assert!(Instant::now() < deadline, "sandbox systemd did not start; log:\n{}", sandbox.log());
            if let Ok(Some(st)) = sandbox.unshare.try_wait() {
                panic!("unshare exited ({st}); log:\n{}", sandbox.log());
            }
            sandbox.pid = children_of(sandbox.unshare.id())
                .into_iter()
                .find(|p| std::fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|e| e.ends_with("systemd")))
                .unwrap_or(0);
            std::thread::sleep(Duration::from_millis(20));
        }
        // Ready once systemd answers on its bus.
        loop {
            let ok = sandbox.busctl(&["get-property", SD, SD_PATH, SD_MANAGER, "Version"]).is_ok();
            if ok {
                return sandbox;
            }
            assert!(Instant::now() < deadline, "sandbox bus did not come up; log:\n{}", sandbox.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The sandbox's system bus as seen from the host.
    pub fn address(&self) -> String {
        format!("unix:path=/proc/{}/root/run/dbus/system_bus_socket", self.pid)
    }

    /// A command run inside the sandbox's PID and mount namespaces (where `systemctl` and `systemd-run` find its
    /// systemd on their own).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.pid.to_string(), "-m", "-p", program]).env_remove("DBUS_SYSTEM_BUS_ADDRESS");
        c
    }

    /// Runs a program inside the sandbox and returns its stdout; panics with its output when it fails.
    pub fn run(&self, program: &str, args: &[&str]) -> String {
        let out = self.command(program).args(args).output().unwrap_or_else(|e| panic!("nsenter {program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?} in the sandbox failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// `busctl` against the sandbox's bus from the host; `Err` carries its stderr.
    pub fn busctl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("busctl")
            .arg(format!("--address={}", self.address()))
            .args(args)
            .output()
            .map_err(|e| format!("busctl: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).to_string())
        }
    }

    /// A Manager property as `busctl` prints it (`s "252.38-1~deb12u1"`, `u 0`).
    pub fn manager_property(&self, name: &str) -> String {
        self.busctl(&["get-property", SD, SD_PATH, SD_MANAGER, name]).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// SIGSTOP / SIGCONT to the sandbox's systemd.
    pub fn freeze(&self) {
        signal(self.pid, libc::SIGSTOP);
    }

    pub fn thaw(&self) {
        signal(self.pid, libc::SIGCONT);
    }

    /// Host PID of the sandbox's dbus-daemon, if one runs.
    pub fn dbus_daemon_pid(&self) -> Option<u32> {
        children_of(self.pid)
            .into_iter()
            .find(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "dbus-daemon"))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("systemd.log")).unwrap_or_default()
    }
}

impl Drop for SystemdSandbox {
    fn drop(&mut self) {
        if self.pid != 0 {
            // PID 1 of a namespace ignores signals from inside it, but SIGKILL from an ancestor namespace always
            // lands (also while it is stopped), and its death kills every process of the namespace.
            signal(self.pid, libc::SIGKILL);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !matches!(self.unshare.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

const SD: &str = "org.freedesktop.systemd1";
const SD_PATH: &str = "/org/freedesktop/systemd1";
const SD_MANAGER: &str = "org.freedesktop.systemd1.Manager";

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert!(rc == 0 || sig == libc::SIGKILL, "kill({pid}, {sig}): {}", std::io::Error::last_os_error());
}

/// Host PIDs whose parent is `parent`.
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| {
                // The command name is in parentheses and may contain spaces: the fields after it start at the last ')'.
                let rest = &s[s.rfind(')')? + 2..];
                rest.split_whitespace().nth(1)?.parse::<u32>().ok()
            }) == Some(parent)
        })
        .collect()
}

/// A dbus-daemon of its own (no systemd on it) whose policy denies `org.freedesktop.DBus.Debug.Stats`, killed on
/// drop.
pub struct StatsDeniedBus {
    child: Child,
    dir: tempfile::TempDir,
}

impl StatsDeniedBus {
    pub fn start() -> StatsDeniedBus {
        require_tool("dbus-daemon");
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("bus");
        let config = dir.path().join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Debug.Stats"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        )
        .unwrap();
        let child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .arg("--nofork")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn dbus-daemon");
        let bus = StatsDeniedBus { child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "dbus-daemon did not listen on {}", socket.display());
            std::thread::sleep(Duration::from_millis(20));
        }
        bus
    }

    pub fn address(&self) -> String {
        format!("unix:path={}", self.dir.path().join("bus").display())
    }
}

impl Drop for StatsDeniedBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Flags that turn off every collector of the binary except `keep` (from the binary's own collector list, so
/// that collectors added later do not leak into another collector's golden file).
pub fn only_collector(keep: &str) -> Vec<String> {
    assert!(nodesleuth::collectors::ALL.iter().any(|c| c.name == keep), "unknown collector {keep}");
    nodesleuth::collectors::ALL
        .iter()
        .filter(|c| c.name != keep)
        .map(|c| format!("--no-collector.{}", c.name))
        .collect()
}

/// Starts the exporter on a fixture tree (`proc/`, `var/log/pods`, `var/log/containers` under `root`) with only
/// `collector` enabled.
pub fn start_on_fixture(root: &Path, collector: &str, extra: &[&str]) -> Exporter {
    let mut args = vec![
        format!("--path.procfs={}", root.join("proc").display()),
        format!("--path.rootfs={}", root.display()),
        format!("--path.pod-logs={}", root.join("var/log/pods").display()),
        format!("--path.container-logs={}", root.join("var/log/containers").display()),
    ];
    args.extend(only_collector(collector));
    args.extend(extra.iter().map(|s| s.to_string()));
    Exporter::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The exporter's own families (process and HTTP counters), which change from run to run.
const SELF_FAMILIES: &[&str] = &["process_", "nodesleuth_http_requests_total"];

/// The exposition text without what legitimately changes between runs (timings, log-file ages, build info, the
/// exporter's own process and request metrics).
pub fn normalize(metrics: &str) -> String {
    metrics
        .lines()
        .filter(|l| {
            !l.starts_with("nodesleuth_scrape_collector_duration_seconds{")
                && !l.starts_with("nodesleuth_build_info{")
                // A log file's age grows with the wall clock (the output collector's tests check it by value).
                && !l.starts_with("nodesleuth_container_log_age_seconds{")
        })
        .filter(|l| {
            let name = l.strip_prefix("# HELP ").or_else(|| l.strip_prefix("# TYPE ")).unwrap_or(l);
            !SELF_FAMILIES.iter().any(|f| name.starts_with(f))
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Compares normalized output with a golden file; `UPDATE_GOLDEN=1` (tests/update-golden.sh) rewrites it first.
/// Returns the golden text.
pub fn assert_golden(got: &str, golden_path: &Path) -> String {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(golden_path, got).unwrap();
    }
    let want = std::fs::read_to_string(golden_path)
        .unwrap_or_else(|_| panic!("{} missing: run tests/update-golden.sh", golden_path.display()));
    if got != want {
        // Compared in order, as text: a reordered family or series is a change too. `diff -u` shows where.
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, got.as_bytes()).unwrap();
        let out = Command::new(require_tool("diff"))
            .args(["-u", "--label", "golden", "--label", "scraped"])
            .arg(golden_path)
            .arg(file.path())
            .output()
            .unwrap();
        panic!(
            "/metrics differs from {} (run tests/update-golden.sh if intended):\n{}",
            golden_path.display(),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    want
}

/// Fails unless `promtool check metrics` accepts the exposition text.
pub fn check_with_promtool(metrics: &str) {
    use std::io::Write;
    let promtool = require_tool("promtool");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(metrics.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Exporter {
    /// Starts the exporter through a wrapper command (e.g. `setpriv --reuid=65534 …` to run it unprivileged).
    pub fn start_via(wrapper: &[&str], args: &[&str]) -> Exporter {
        Self::launch(wrapper, args, &[], |port| http_get(port, "/healthz").is_ok())
    }
}
