//! `/proc/<pid>/cgroup` → the Kubernetes pod UID and container ID a process runs in, plus kubelet's log directory
//! names that map them to namespace, pod and container names.
//!
//! Handles cgroup v1 (`N:controllers:/path`) and v2 (`0::/path`) lines, kubelet's `systemd` and `cgroupfs` drivers,
//! and the container-runtime spellings of the leaf: containerd (`cri-containerd-<id>.scope` or a bare `<id>`),
//! CRI-O (`crio-<id>.scope`, `crio-conmon-<id>.scope`), Docker (`docker-<id>.scope`, `/docker/<id>`) and
//! cri-dockerd. Examples:
//! ```text
//! 0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6b1a_..._e2.slice/cri-containerd-<64 hex>.scope
//! 11:memory:/kubepods/besteffort/pod6b1a...-e2/<64 hex>
//! ```

/// Where a process sits in Kubernetes, borrowed from the cgroup file's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ContainerRef<'a> {
    /// The pod UID as in the pod's `metadata.uid`, dashes restored for the systemd driver (which writes `_`).
    /// Empty for processes outside pods.
    pub pod_uid: PodUid,
    /// The container ID (64 hex digits for containerd, CRI-O and Docker), or empty.
    pub container_id: &'a str,
}

/// A pod UID, stored inline (36 bytes for an RFC 4122 UID) so that parsing allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PodUid {
    bytes: [u8; 36],
    len: u8,
}

impl Default for PodUid {
    fn default() -> Self {
        PodUid { bytes: [0; 36], len: 0 }
    }
}

impl PodUid {
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn from_segment(raw: &str) -> Option<PodUid> {
        if raw.is_empty() || raw.len() > 36 {
            return None;
        }
        let mut uid = PodUid { bytes: [0; 36], len: raw.len() as u8 };
        for (i, b) in raw.bytes().enumerate() {
            uid.bytes[i] = match b {
                b'_' => b'-',
                b'0'..=b'9' | b'a'..=b'f' | b'-' => b,
                _ => return None,
            };
        }
        Some(uid)
    }
}

/// Finds the pod and container of a process from its whole `cgroup` file. Prefers the v2 unified line, then any
/// v1 line that names a pod. Returns the default (empty) reference for host processes.
pub fn container_ref(cgroup_file: &str) -> ContainerRef<'_> {
    let mut best = ContainerRef::default();
    for line in cgroup_file.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(_controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let found = from_path(path);
        // A line naming a pod beats one that does not; among pod lines, one that also names the container wins.
        let better_pod = !found.pod_uid.is_empty() && (best.pod_uid.is_empty() || best.container_id.is_empty());
        let first_container = best == ContainerRef::default() && !found.container_id.is_empty();
        if better_pod || first_container {
            best = found;
        }
    }
    best
}

/// Extracts the pod UID and container ID from one cgroup path.
pub fn from_path(path: &str) -> ContainerRef<'_> {
    let mut r = ContainerRef::default();
    let mut in_kubepods = false;
    for seg in path.split('/') {
        if seg.starts_with("kubepods") {
            in_kubepods = true;
        }
        if let Some(uid) = pod_segment(seg) {
            r.pod_uid = uid;
            continue;
        }
        if let Some(id) = container_segment(seg) {
            // A bare 64-hex segment is a container only under kubepods or docker; elsewhere it could be anything.
            if seg.len() != id.len() || in_kubepods || path.contains("/docker/") {
                r.container_id = id;
            }
        }
    }
    r
}

fn pod_segment(seg: &str) -> Option<PodUid> {
    // systemd driver: kubepods-burstable-pod<uid_with_underscores>.slice; cgroupfs: pod<uid>.
    let seg = seg.strip_suffix(".slice").unwrap_or(seg);
    let at = seg.rfind("pod")?;
    if at > 0 && !seg[..at].ends_with('-') {
        return None;
    }
    PodUid::from_segment(&seg[at + 3..]).filter(|u| u.len >= 32)
}

fn container_segment(seg: &str) -> Option<&str> {
    let seg = seg.strip_suffix(".scope").unwrap_or(seg);
    let id = ["cri-containerd-", "crio-conmon-", "crio-", "docker-", "cri-dockerd-", "containerd-"]
        .iter()
        .find_map(|p| seg.strip_prefix(p))
        .unwrap_or(seg);
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// A directory name under kubelet's `/var/log/pods`: `<namespace>_<pod>_<uid>`. Kubernetes names never contain
/// `_`, so the split is unambiguous.
pub fn pod_log_dir(name: &str) -> Option<(&str, &str, &str)> {
    let mut it = name.splitn(3, '_');
    let (ns, pod, uid) = (it.next()?, it.next()?, it.next()?);
    (!ns.is_empty() && !pod.is_empty() && !uid.is_empty()).then_some((ns, pod, uid))
}

/// A file name under `/var/log/containers`: `<pod>_<namespace>_<container>-<container id>.log`.
/// Returns (namespace, pod, container, container id).
pub fn container_log_file(name: &str) -> Option<(&str, &str, &str, &str)> {
    let stem = name.strip_suffix(".log")?;
    let mut it = stem.splitn(3, '_');
    let (pod, ns, rest) = (it.next()?, it.next()?, it.next()?);
    let dash = rest.rfind('-')?;
    let (container, id) = (&rest[..dash], &rest[dash + 1..]);
    (!container.is_empty() && container_segment(id).is_some()).then_some((ns, pod, container, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4b2c1d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b";
    const UID: &str = "6b1a2c3d-4e5f-6789-abcd-ef0123456789";

    #[test]
    fn systemd_driver_cgroup_v2_containerd() {
        let f = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope\n",
            UID.replace('-', "_")
        );
        let r = container_ref(&f);
        assert_eq!(r.pod_uid.as_str(), UID);
        assert_eq!(r.container_id, ID);
    }

    #[test]
    fn systemd_driver_guaranteed_pod_crio() {
        let f = format!("0::/kubepods.slice/kubepods-pod{}.slice/crio-{ID}.scope\n", UID.replace('-', "_"));
        let r = container_ref(&f);
        assert_eq!((r.pod_uid.as_str(), r.container_id), (UID, ID));
        let conmon = format!("0::/kubepods.slice/kubepods-pod{}.slice/crio-conmon-{ID}.scope\n", UID.replace('-', "_"));
        assert_eq!(container_ref(&conmon).container_id, ID);
    }

    #[test]
    fn cgroupfs_driver_cgroup_v1_with_many_controllers() {
        let f = format!(
            "12:pids:/kubepods/besteffort/pod{UID}/{ID}\n11:memory:/kubepods/besteffort/pod{UID}/{ID}\n1:name=systemd:/kubepods/besteffort/pod{UID}/{ID}\n0::/\n"
        );
        let r = container_ref(&f);
        assert_eq!((r.pod_uid.as_str(), r.container_id), (UID, ID));
    }

    #[test]
    fn cgroupfs_driver_cgroup_v2_and_docker_names() {
        let f = format!("0::/kubepods/burstable/pod{UID}/docker-{ID}.scope\n");
        assert_eq!(container_ref(&f).container_id, ID);
        let plain_docker = format!("0::/docker/{ID}\n");
        let r = container_ref(&plain_docker);
        assert!(r.pod_uid.is_empty());
        assert_eq!(r.container_id, ID);
    }

    #[test]
    fn pod_level_cgroup_without_container() {
        let f = format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice\n",
            UID.replace('-', "_")
        );
        let r = container_ref(&f);
        assert_eq!(r.pod_uid.as_str(), UID);
        assert_eq!(r.container_id, "");
    }

    #[test]
    fn host_processes_have_no_pod() {
        for f in [
            "0::/init.scope\n",
            "0::/system.slice/containerd.service\n",
            "4:memory:/process_api/5a16\n0::/\n",
            "",
            "garbage",
        ] {
            assert_eq!(container_ref(f), ContainerRef::default(), "{f:?}");
        }
        // A 64-hex directory outside kubepods/docker is not taken for a container.
        assert_eq!(container_ref(&format!("0::/user.slice/{ID}\n")).container_id, "");
        // `pod` inside an unrelated name is not a pod.
        assert!(container_ref("0::/system.slice/podman-1234.scope\n").pod_uid.is_empty());
    }

    #[test]
    fn kubelet_log_names() {
        assert_eq!(
            pod_log_dir(&format!("kube-system_coredns-5d78c9869d-abcde_{UID}")),
            Some(("kube-system", "coredns-5d78c9869d-abcde", UID))
        );
        assert_eq!(pod_log_dir("nounderscore"), None);
        assert_eq!(
            container_log_file(&format!("web-0_shop_nginx-proxy-{ID}.log")),
            Some(("shop", "web-0", "nginx-proxy", ID))
        );
        assert_eq!(container_log_file("web-0_shop_nginx.log"), None);
    }
}
