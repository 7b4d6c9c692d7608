//! Pod attribution, shared by every collector that labels processes: `/proc/<pid>/cgroup` gives the pod UID and
//! container ID (see `nodesleuth_parse::cgroup`), kubelet's log directories give their names:
//! `/var/log/pods/<namespace>_<pod>_<uid>/` and `/var/log/containers/<pod>_<namespace>_<container>-<id>.log`.
//! No API-server access is needed, so the exporter keeps working when the control plane does not.
//!
//! Host processes get empty labels. A pod whose log directory is missing is labelled with its UID as `pod`; a
//! container without a log file (the pause container) gets an empty `container`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nodesleuth_parse::cgroup;

use crate::procfs::ProcFs;

/// Kubernetes identity of a process. Cheap to clone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodInfo {
    pub namespace: Arc<str>,
    pub pod: Arc<str>,
    pub container: Arc<str>,
}

impl PodInfo {
    pub fn is_pod(&self) -> bool {
        !self.pod.is_empty()
    }
}

#[derive(Default)]
struct Index {
    /// pod UID → (namespace, pod)
    pods: HashMap<String, (Arc<str>, Arc<str>)>,
    /// container ID → container name
    containers: HashMap<String, Arc<str>>,
    loaded: Option<Instant>,
}

pub struct PodResolver {
    pod_logs: PathBuf,
    container_logs: PathBuf,
    index: Mutex<Index>,
}

/// How often a lookup miss may trigger a re-read of the log directories (they change as pods come and go).
const RELOAD_AFTER: Duration = Duration::from_secs(5);

impl PodResolver {
    pub fn new(pod_logs: PathBuf, container_logs: PathBuf) -> Self {
        PodResolver { pod_logs, container_logs, index: Mutex::new(Index::default()) }
    }

    /// The pod, namespace and container of `pid`; empty for host processes and vanished ones.
    pub fn resolve(&self, proc: &ProcFs, pid: u32) -> PodInfo {
        let Ok(text) = std::fs::read_to_string(proc.pid_path(pid, "cgroup")) else {
            return PodInfo::default();
        };
        let r = cgroup::container_ref(&text);
        if r.pod_uid.is_empty() {
            return PodInfo::default();
        }
        let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        let uid = r.pod_uid.as_str();
        let miss = !index.pods.contains_key(uid)
            || (!r.container_id.is_empty() && !index.containers.contains_key(r.container_id));
        if miss && index.loaded.is_none_or(|t| t.elapsed() >= RELOAD_AFTER) {
            *index = self.load();
        }
        let (namespace, pod) = index.pods.get(uid).cloned().unwrap_or_else(|| ("".into(), uid.into()));
        let container = index.containers.get(r.container_id).cloned().unwrap_or_else(|| "".into());
        PodInfo { namespace, pod, container }
    }

    fn load(&self) -> Index {
        let mut index = Index { loaded: Some(Instant::now()), ..Index::default() };
        for name in dir_names(&self.pod_logs) {
            if let Some((ns, pod, uid)) = cgroup::pod_log_dir(&name) {
                index.pods.insert(uid.to_string(), (ns.into(), pod.into()));
            }
        }
        for name in dir_names(&self.container_logs) {
            if let Some((_, _, container, id)) = cgroup::container_log_file(&name) {
                index.containers.insert(id.to_string(), container.into());
            }
        }
        tracing::debug!(pods = index.pods.len(), containers = index.containers.len(), "loaded kubelet log index");
        index
    }
}

fn dir_names(dir: &std::path::Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok()).filter_map(|e| e.file_name().into_string().ok()).collect(),
        Err(_) => Vec::new(),
    }
}
