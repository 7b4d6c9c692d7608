//! The eBPF side of the `tcp` collector's `ebpf` source: loads `exporter/bpf/tcp_state.bpf.o` (compiled from
//! `exporter/bpf/tcp_state.bpf.c`, committed, checked against its source by `tests/tcp_ebpf.rs`), attaches its
//! program to the `inet_sock_set_state` tracepoint (BTF-typed, so no tracefs), and reads its maps.
//!
//! What the program keeps (see the C file for why it is exact):
//! - per network namespace (by namespace inode): sockets per TCP state, with a generation number;
//! - the set of CLOSE_WAIT sockets: namespace, local port, socket inode;
//! - two overflow counters: namespace or CLOSE_WAIT entries it could not create because the map was full;
//! - the IPVS client sockets: ESTABLISHED sockets whose remote address is in the `vips` set, which the exporter
//!   keeps equal to the IPVS TCP virtual services ([`TcpBpf::set_vip`]), with their own overflow counter.
//!
//! Sockets that predate the program are counted by the program's TCP iterator, run inside one namespace at a time
//! ([`TcpBpf::run_in`]): once when the exporter first sees the namespace (seeding: [`TcpBpf::reset_namespace`],
//! the iterator, then [`TcpBpf::mark_steady`]), then periodically (resync).
//!
//! Loader: libbpf (through `libbpf-rs`, which builds the libbpf C sources it vendors with the C compiler cargo
//! already needs): it performs the CO-RE relocations against the running kernel's BTF and knows every program and
//! map type used here (BPF iterators and socket-local storage included).

use std::collections::{HashMap, HashSet};
use std::io::{self, Read};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use libbpf_rs::{Link, MapCore, MapFlags, Object, ObjectBuilder};

/// The compiled program (`exporter/bpf/build.sh` produces it from `tcp_state.bpf.c`).
pub const OBJECT: &[u8] = include_bytes!("../bpf/tcp_state.bpf.o");

/// Map bounds, as compiled into the object (`NS_MAX`, `CLOSE_WAIT_MAX` in `tcp_state.bpf.c`).
pub const NS_MAX: u32 = 8192;
pub const CLOSE_WAIT_MAX: u32 = 131_072;
/// Bounds of the IPVS maps (`VIPS_MAX`, `IPVS_CLIENTS_MAX`).
pub const VIPS_MAX: u32 = 65_536;
pub const IPVS_CLIENTS_MAX: u32 = 131_072;

/// Number of state slots per namespace (kernel state numbers 1..=12 fit).
pub const STATES: usize = 16;

/// One namespace's entry (`struct ns_counts` in the C file).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NsCounts {
    pub generation: u64,
    pub count: [i64; STATES],
    pub seeded: u64,
    pub corrected: u64,
    pub lost: u64,
    /// Equal to `generation` once the namespace is seeded: sockets born since are counted without storage.
    pub steady: u64,
}

impl NsCounts {
    /// Seeded, and counting sockets born since by their events alone.
    pub fn is_steady(&self) -> bool {
        self.steady == self.generation && self.generation != 0
    }
}

const NS_COUNTS_SIZE: usize = 8 + 8 * STATES + 4 * 8;

impl NsCounts {
    fn parse(b: &[u8]) -> Option<NsCounts> {
        if b.len() < NS_COUNTS_SIZE {
            return None;
        }
        let u = |i: usize| u64::from_ne_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or_default());
        let mut count = [0i64; STATES];
        for (s, c) in count.iter_mut().enumerate() {
            *c = u(1 + s) as i64;
        }
        Some(NsCounts {
            generation: u(0),
            count,
            seeded: u(1 + STATES),
            corrected: u(2 + STATES),
            lost: u(3 + STATES),
            steady: u(4 + STATES),
        })
    }
}

/// One CLOSE_WAIT socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseWait {
    pub netns: u32,
    pub inode: u64,
    pub port: u16,
}

/// Entries the program could not create because a map was full, since load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overflows {
    pub namespaces: u64,
    pub close_wait: u64,
    /// Sockets whose storage could not be allocated (it is charged to the exporter's memory cgroup).
    pub socket_storage: u64,
    /// IPVS client sockets the program could not record.
    pub ipvs_clients: u64,
}

/// One IPVS client socket: an ESTABLISHED socket whose remote address is a virtual service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpvsClient {
    pub netns: u32,
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

impl IpvsClient {
    /// `struct ipvs_client` in the C file: netns, local port, remote port, local address, remote address.
    fn parse(v: &[u8]) -> Option<IpvsClient> {
        let addr = |b: &[u8]| -> Option<IpAddr> {
            let octets: [u8; 16] = b.try_into().ok()?;
            Some(crate::sockets::canonical(IpAddr::V6(Ipv6Addr::from(octets))))
        };
        let port = |i: usize| Some(u16::from_ne_bytes(v.get(i..i + 2)?.try_into().ok()?));
        Some(IpvsClient {
            netns: u32::from_ne_bytes(v.get(0..4)?.try_into().ok()?),
            local: SocketAddr::new(addr(v.get(8..24)?)?, port(4)?),
            remote: SocketAddr::new(addr(v.get(24..40)?)?, port(6)?),
        })
    }
}

/// `struct vip_key` in the C file: the address as 16 bytes (IPv4 v4-mapped), the port in host order, padding.
fn vip_key(vip: SocketAddr) -> [u8; 20] {
    let octets = match vip.ip() {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    };
    let mut key = [0u8; 20];
    key[..16].copy_from_slice(&octets);
    key[16..18].copy_from_slice(&vip.port().to_ne_bytes());
    key
}

/// The loaded, attached program and its maps.
pub struct TcpBpf {
    obj: Object,
    _state_link: Link,
    iter_link: Link,
}

impl std::fmt::Debug for TcpBpf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TcpBpf")
    }
}

impl TcpBpf {
    /// Loads and attaches the program. Fails without CAP_BPF + CAP_PERFMON (or CAP_SYS_ADMIN), without kernel
    /// BTF, or on a kernel that lacks one of the features used (BTF tracepoints, TCP iterators, socket storage in
    /// tracing programs, syscall programs: 5.14).
    pub fn load() -> Result<TcpBpf, String> {
        libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Info, libbpf_log)));
        let open = ObjectBuilder::default().open_memory(OBJECT).map_err(|e| format!("opening BPF object: {e}"))?;
        let obj = open.load().map_err(|e| format!("loading BPF object: {e}"))?;
        let prog = |name: &str| {
            obj.progs_mut().find(|p| p.name() == name).ok_or_else(|| format!("BPF object has no program {name}"))
        };
        let state_link = prog("on_state")?.attach().map_err(|e| format!("attaching to inet_sock_set_state: {e}"))?;
        let iter_link = prog("seed")?.attach().map_err(|e| format!("attaching the TCP iterator: {e}"))?;
        Ok(TcpBpf { obj, _state_link: state_link, iter_link })
    }

    fn map(&self, name: &str) -> Option<libbpf_rs::Map<'_>> {
        self.obj.maps().find(|m| m.name() == name)
    }

    /// Every (key, value) of a hash map, read from user space (an entry deleted meanwhile is skipped).
    fn entries(&self, name: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        let Some(map) = self.map(name) else { return Vec::new() };
        map.keys().filter_map(|k| Some((k.clone(), map.lookup(&k, MapFlags::ANY).ok()??))).collect()
    }

    /// Runs the seeding/resync iterator once inside each namespace (`/proc/<pid>/ns/net` paths), in order. Each
    /// run counts the namespace's sockets no state change has counted yet and corrects any counted in the wrong
    /// state; it walks the kernel's socket hash once (like one netlink dump).
    pub fn run_in(&self, namespaces: &[PathBuf]) -> Vec<io::Result<()>> {
        let link_fd = self.iter_link.as_fd().as_raw_fd();
        // The iterator walks the namespace it is created in: create each inside its namespace, read it here.
        let created = crate::netns::run_in(namespaces, move || {
            // SAFETY: BPF_ITER_CREATE on a live iterator link; the fd returned is owned exactly once.
            let fd = unsafe { libbpf_rs::libbpf_sys::bpf_iter_create(link_fd) };
            if fd < 0 {
                return Err(io::Error::from_raw_os_error(-fd));
            }
            // SAFETY: fresh descriptor owned by nobody else.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        });
        created
            .into_iter()
            .map(|r| {
                let mut file = std::fs::File::from(r?);
                // The program prints nothing; reading to the end runs it over every socket.
                let mut sink = [0u8; 64];
                while file.read(&mut sink)? > 0 {}
                Ok(())
            })
            .collect()
    }

    /// One namespace's entry, if the program has one.
    pub fn namespace(&self, netns: u32) -> Option<NsCounts> {
        let map = self.map("ns_counts")?;
        let v = map.lookup(&netns.to_ne_bytes(), MapFlags::ANY).ok()??;
        NsCounts::parse(&v)
    }

    /// Every namespace entry.
    pub fn namespaces(&self) -> HashMap<u32, NsCounts> {
        let Some(map) = self.map("ns_counts") else { return HashMap::new() };
        map.keys()
            .filter_map(|k| {
                let key = u32::from_ne_bytes(k.get(..4)?.try_into().ok()?);
                let v = map.lookup(&k, MapFlags::ANY).ok()??;
                Some((key, NsCounts::parse(&v)?))
            })
            .collect()
    }

    /// Gives the namespace a fresh entry (all counts 0, not steady), replacing any it has, with a generation from
    /// the clock the program uses (CLOCK_MONOTONIC), so it differs from any earlier entry's: every socket counts as
    /// not counted in it until an event or the iterator counts it. Returns the generation.
    pub fn reset_namespace(&self, netns: u32) -> Option<u64> {
        let map = self.map("ns_counts")?;
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime with a valid out-pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        let generation = (ts.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(ts.tv_nsec as u64) | 1;
        let mut value = vec![0u8; NS_COUNTS_SIZE];
        value[..8].copy_from_slice(&generation.to_ne_bytes());
        map.update(&netns.to_ne_bytes(), &value, MapFlags::ANY).ok()?;
        Some(generation)
    }

    /// Declares the namespace seeded under `generation` (an iterator run walked it completely since
    /// [`TcpBpf::reset_namespace`] returned that generation): sockets born there from now on are counted by their
    /// events alone, without socket storage. False when the program refused (the entry changed generation or lost
    /// a socket meanwhile): the namespace must be seeded again.
    pub fn mark_steady(&self, netns: u32, generation: u64) -> bool {
        let Some(prog) = self.obj.progs().find(|p| p.name() == "mark_steady") else { return false };
        // struct steady_args in the C file.
        let mut args = [0u8; 16];
        args[..4].copy_from_slice(&netns.to_ne_bytes());
        args[8..].copy_from_slice(&generation.to_ne_bytes());
        // SAFETY: zeroed options are valid (all inputs absent); only the context is set, to a live buffer of the
        // size given.
        let mut opts: libbpf_rs::libbpf_sys::bpf_test_run_opts = unsafe { std::mem::zeroed() };
        opts.sz = std::mem::size_of_val(&opts) as _;
        opts.ctx_in = args.as_ptr().cast();
        opts.ctx_size_in = args.len() as _;
        // SAFETY: BPF_PROG_TEST_RUN on a live program fd with the options above.
        let r = unsafe { libbpf_rs::libbpf_sys::bpf_prog_test_run_opts(prog.as_fd().as_raw_fd(), &mut opts) };
        r == 0 && opts.retval == 0
    }

    /// State changes the kernel did not run the program for since load (`recursion_misses`: the tracepoint fired
    /// while the program was already running on that CPU, e.g. from an interrupt).
    pub fn missed_events(&self) -> u64 {
        let Some(prog) = self.obj.progs().find(|p| p.name() == "on_state") else { return 0 };
        let mut info = libbpf_rs::libbpf_sys::bpf_prog_info::default();
        let mut len = std::mem::size_of_val(&info) as u32;
        // SAFETY: BPF_OBJ_GET_INFO_BY_FD on a live program fd, into a zeroed bpf_prog_info of the size passed (no
        // array pointers set, so the kernel writes nothing else).
        let r =
            unsafe { libbpf_rs::libbpf_sys::bpf_prog_get_info_by_fd(prog.as_fd().as_raw_fd(), &mut info, &mut len) };
        if r == 0 { info.recursion_misses } else { 0 }
    }

    /// Forgets a namespace (it vanished, or its entry stopped being exact). If it is still alive, the program
    /// re-creates its entry with a new generation and the next iterator run rebuilds it.
    pub fn forget(&self, netns: u32) {
        if let Some(map) = self.map("ns_counts") {
            let _ = map.delete(&netns.to_ne_bytes());
        }
    }

    /// The CLOSE_WAIT sockets of every namespace.
    pub fn close_waits(&self) -> Vec<CloseWait> {
        self.entries("close_waits")
            .into_iter()
            .filter_map(|(_, v)| {
                if v.len() < 16 {
                    return None;
                }
                Some(CloseWait {
                    inode: u64::from_ne_bytes(v[0..8].try_into().ok()?),
                    netns: u32::from_ne_bytes(v[8..12].try_into().ok()?),
                    port: u16::from_ne_bytes(v[12..14].try_into().ok()?),
                })
            })
            .collect()
    }

    /// Map-full counters since load.
    pub fn overflows(&self) -> Overflows {
        let Some(map) = self.map("globals") else { return Overflows::default() };
        let Ok(Some(v)) = map.lookup(&0u32.to_ne_bytes(), MapFlags::ANY) else { return Overflows::default() };
        let u = |i: usize| v.get(i * 8..i * 8 + 8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_ne_bytes);
        let ipvs_clients = self
            .map("ipvs_full")
            .and_then(|m| m.lookup(&0u32.to_ne_bytes(), MapFlags::ANY).ok().flatten())
            .and_then(|v| Some(u64::from_ne_bytes(v.get(..8)?.try_into().ok()?)))
            .unwrap_or(0);
        Overflows { namespaces: u(0), close_wait: u(1), socket_storage: u(2), ipvs_clients }
    }

    /// Sets the `vip_ports` bitmap to these ports (bit p: some virtual service has or had port p; the program looks
    /// nothing up for a connection whose remote port has no bit). Must hold a VIP's port before the VIP is added.
    pub fn set_vip_ports(&self, ports: &HashSet<u16>) -> bool {
        let Some(map) = self.map("vip_ports") else { return false };
        let mut bits = [0u64; 1024];
        for &p in ports {
            bits[usize::from(p >> 6)] |= 1 << (p & 63);
        }
        let value: Vec<u8> = bits.iter().flat_map(|w| w.to_ne_bytes()).collect();
        map.update(&0u32.to_ne_bytes(), &value, MapFlags::ANY).is_ok()
    }

    /// Adds (`present`) or removes a virtual service of the `vips` set; false when the map refused (full).
    pub fn set_vip(&self, vip: SocketAddr, present: bool) -> bool {
        let Some(map) = self.map("vips") else { return false };
        let key = vip_key(vip);
        if present { map.update(&key, &[1u8], MapFlags::ANY).is_ok() } else { map.delete(&key).is_ok() }
    }

    /// The IPVS client sockets of every namespace (those towards virtual services removed since included).
    pub fn ipvs_clients(&self) -> Vec<IpvsClient> {
        self.entries("ipvs_clients").iter().filter_map(|(_, v)| IpvsClient::parse(v)).collect()
    }

    /// Removes the IPVS client sockets of these namespaces (before a seeding's iterator run records them again).
    pub fn clear_ipvs_clients(&self, namespaces: &HashSet<u32>) {
        let Some(map) = self.map("ipvs_clients") else { return };
        for (k, v) in self.entries("ipvs_clients") {
            let netns = v.get(..4).and_then(|b| b.try_into().ok()).map(u32::from_ne_bytes);
            if netns.is_some_and(|ns| namespaces.contains(&ns)) {
                let _ = map.delete(&k);
            }
        }
    }

    /// Memory the kernel accounts to the maps (`memlock` of their fdinfo), in bytes. Socket-local storage (about
    /// 380 bytes per counted socket: `bpf_local_storage` + one element, from this kernel's BTF) is not included;
    /// it is charged to the exporter's memory cgroup like the maps.
    pub fn map_memory(&self) -> u64 {
        self.obj.maps().filter_map(|m| m.query_fdinfo().ok()).filter_map(|i| i.memlock).sum()
    }
}

fn libbpf_log(level: libbpf_rs::PrintLevel, msg: String) {
    let msg = msg.trim_end();
    match level {
        libbpf_rs::PrintLevel::Warn => tracing::debug!(target: "libbpf", "{msg}"),
        _ => tracing::trace!(target: "libbpf", "{msg}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout of `struct ns_counts` (tcp_state.bpf.c): gen, count[16], seeded, corrected, lost, steady.
    #[test]
    fn ns_counts_layout_and_steadiness() {
        let words: Vec<u64> = (0..(NS_COUNTS_SIZE / 8) as u64).map(|i| i + 100).collect();
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let c = NsCounts::parse(&bytes).unwrap();
        assert_eq!(c.generation, 100);
        assert_eq!(c.count[0], 101);
        assert_eq!(c.count[STATES - 1], 100 + STATES as i64);
        assert_eq!((c.seeded, c.corrected, c.lost, c.steady), (117, 118, 119, 120));
        assert!(!c.is_steady());
        assert!(NsCounts { generation: 7, steady: 7, ..NsCounts::default() }.is_steady());
        // A fresh entry (steady 0) and a zeroed one are not steady.
        assert!(!NsCounts { generation: 7, ..NsCounts::default() }.is_steady());
        assert!(!NsCounts::default().is_steady());
        assert_eq!(NsCounts::parse(&bytes[..NS_COUNTS_SIZE - 1]), None);
    }

    /// The layouts of `struct vip_key` and `struct ipvs_client`: IPv4 v4-mapped (and read back as IPv4), ports
    /// in host order.
    #[test]
    fn ipvs_layouts() {
        let vip: SocketAddr = "10.96.0.1:443".parse().unwrap();
        let key = vip_key(vip);
        assert_eq!(&key[..16], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 96, 0, 1]);
        assert_eq!(u16::from_ne_bytes([key[16], key[17]]), 443);
        assert_eq!(&key[18..], &[0, 0]);
        let v6: SocketAddr = "[fd00::1]:80".parse().unwrap();
        assert_eq!(vip_key(v6)[..16], "fd00::1".parse::<Ipv6Addr>().unwrap().octets());

        let mut v = Vec::new();
        v.extend_from_slice(&7u32.to_ne_bytes());
        v.extend_from_slice(&40000u16.to_ne_bytes());
        v.extend_from_slice(&443u16.to_ne_bytes());
        v.extend_from_slice(&"10.0.0.5".parse::<std::net::Ipv4Addr>().unwrap().to_ipv6_mapped().octets());
        v.extend_from_slice(&"fd00::1".parse::<Ipv6Addr>().unwrap().octets());
        let c = IpvsClient::parse(&v).unwrap();
        assert_eq!(c.netns, 7);
        assert_eq!(c.local, "10.0.0.5:40000".parse().unwrap());
        assert_eq!(c.remote, "[fd00::1]:443".parse().unwrap());
        assert_eq!(IpvsClient::parse(&v[..39]), None);
    }
}
