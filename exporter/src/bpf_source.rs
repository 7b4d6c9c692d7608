//! The `ebpf` data path of the socket scan (`--collector.tcp.source=ebpf`, and `auto` where BPF is permitted):
//! per-namespace state counts and CLOSE_WAIT sockets come from the maps of [`crate::bpf`], so a scrape costs
//! O(namespaces + CLOSE_WAIT sockets + IPVS client sockets), not one walk of the node-wide socket hash per
//! namespace.
//!
//! Per namespace and scrape:
//! - first time seen (or its map entry was re-created, or is not steady): a fresh entry, one run of the program's
//!   TCP iterator inside it, then the entry is declared steady (seeding; counted in
//!   `nodesleuth_tcp_socket_table_walks_total`); from then on only the map is read;
//! - states: the map, except TIME_WAIT, from the namespace's `sockstat` `tw` counter (timewait minisockets are
//!   not full sockets, and die without an event); `fin_wait2` counts full sockets (an orphaned FIN_WAIT2
//!   connection the kernel turned into a minisocket is in `time_wait`, as in `sockstat`); `syn_recv` counts full
//!   sockets (request sockets of half-open handshakes are not);
//! - CLOSE_WAIT sockets: the program's set (a CLOSE_WAIT dump instead, for a namespace whose set may be incomplete
//!   because that map was full, until its next resync);
//! - accept queues: a LISTEN-only netlink dump (the listening hash only, not the established one);
//! - IPVS client sockets (only when IPVS has TCP virtual services): the program's set of ESTABLISHED sockets whose
//!   remote address is in its `vips` set, which each scrape first makes equal to the virtual services (writing
//!   only the changes); entries towards services removed since are dropped when read. Where the set may be
//!   incomplete, the kernel-filtered dump as with the netlink source (a walk), until the namespace's next iterator
//!   run: after a service was added (connections established before the program knew it are found by the
//!   iterator, not by events), after the client map was full, or while the `vips` map is full. A seeding clears
//!   the namespace's entries before its iterator run records them again.
//!
//! A namespace whose entry could not be created (namespace map full) is read by the netlink walk instead.
//! A background thread re-checks one namespace at a time, each once per `--collector.tcp.ebpf-resync-interval`:
//! it re-runs the iterator, which corrects any socket carrying a mark (counted by the seeding) that is counted in
//! the wrong state or not at all, and exports how many it found; sockets born after the seeding carry no mark and
//! are counted by their events alone, so when the program missed events since the namespace's seeding it seeds
//! the namespace again instead (new entry, new generation: exact again, what was wrong is not known per socket).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use nodesleuth_parse::inet_diag;
use nodesleuth_parse::tcp_state::TcpState;

use crate::bpf::{Overflows, TcpBpf};
use crate::registry::ScrapeContext;
use crate::sock_diag;
use crate::sockets::{self, CounterSemantics, NetScan, NsSockets, SocketScanner};

/// The eBPF source's figures, exported by the tcp collector.
#[derive(Debug, Clone, Copy, Default)]
pub struct EbpfStats {
    /// Resync runs since start.
    pub resyncs: u64,
    /// Sockets the resync runs found counted in the wrong state or not at all.
    pub corrections: u64,
    /// Entries the program could not create because a map was full.
    pub overflows: Overflows,
    /// Kernel memory of the maps.
    pub map_memory: u64,
    /// Resync iterator runs of the background thread since start (walks of the socket hash).
    pub walks: u64,
    /// Of the resyncs, those that seeded their namespace again because the program missed events.
    pub reseeds: u64,
    /// State changes the kernel did not run the program for, since load.
    pub missed_events: u64,
}

pub struct EbpfSource {
    bpf: TcpBpf,
    track: Mutex<Track>,
    resyncs: AtomicU64,
    corrections: AtomicU64,
    walks: AtomicU64,
    reseeds: AtomicU64,
}

#[derive(Default)]
struct Track {
    ns: HashMap<u32, NsTrack>,
    overflows: Overflows,
    /// The virtual services in the program's `vips` set.
    vips: HashSet<SocketAddr>,
    /// Incremented whenever a virtual service is added to `vips`: an iterator run that started before holds no
    /// connection to it that was established before it was added.
    vip_epoch: u64,
    /// Some virtual service could not be added (`vips` full): no namespace's IPVS client set is complete.
    vips_failed: bool,
    /// The ports in the program's `vip_ports` bitmap: those of every virtual service seen since start (never
    /// cleared, so that the program removes a connection under the port it recorded it under).
    vip_ports: HashSet<u16>,
}

impl Track {
    /// The namespace's IPVS client sockets are all in the program's set: an iterator run since the last virtual
    /// service was added, and no overflow since.
    fn ipvs_complete(&self, t: &NsTrack) -> bool {
        !self.vips_failed && t.ipvs_epoch == Some(self.vip_epoch)
    }
}

struct NsTrack {
    generation: u64,
    lost: u64,
    last_sync: Instant,
    path: PathBuf,
    /// The CLOSE_WAIT set holds every CLOSE_WAIT socket of the namespace (no overflow since its last iterator run).
    close_wait_complete: bool,
    /// The program's missed events (node-wide) when the namespace was seeded: more since, and it is seeded again.
    missed: u64,
    /// `vip_epoch` when the namespace's last iterator run started, if no IPVS client socket was left out since.
    ipvs_epoch: Option<u64>,
}

impl EbpfSource {
    /// Loads the program and starts the resync thread.
    pub fn start(resync_interval: Duration) -> Result<Arc<EbpfSource>, String> {
        let bpf = TcpBpf::load()?;
        let src = Arc::new(EbpfSource {
            bpf,
            track: Mutex::new(Track::default()),
            resyncs: AtomicU64::new(0),
            corrections: AtomicU64::new(0),
            walks: AtomicU64::new(0),
            reseeds: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&src);
        std::thread::Builder::new()
            .name("nodesleuth-resync".into())
            .spawn(move || resync_loop(weak, resync_interval))
            .map_err(|e| format!("starting the resync thread: {e}"))?;
        Ok(src)
    }

    pub fn stats(&self) -> EbpfStats {
        EbpfStats {
            resyncs: self.resyncs.load(Ordering::Relaxed),
            corrections: self.corrections.load(Ordering::Relaxed),
            overflows: self.bpf.overflows(),
            map_memory: self.bpf.map_memory(),
            walks: self.walks.load(Ordering::Relaxed),
            reseeds: self.reseeds.load(Ordering::Relaxed),
            missed_events: self.bpf.missed_events(),
        }
    }

    /// Fills `out.namespaces[i].sockets` (namespace inode `inodes[i]`); returns the socket-table walks it made.
    pub fn read(
        &self,
        scanner: &SocketScanner,
        ctx: &ScrapeContext,
        inodes: &[u64],
        semantics: Option<CounterSemantics>,
        out: &mut NetScan,
        buf: &mut Vec<u8>,
    ) -> u64 {
        let mut walks = 0u64;
        let mut track = self.track.lock().unwrap_or_else(|p| p.into_inner());
        self.note_overflows(&mut track);
        self.sync_vips(&mut track, &out.virtual_services);
        // Namespaces that are gone: free their entries (and those of namespaces no process is in).
        let present: HashSet<u32> = inodes.iter().map(|&i| i as u32).collect();
        let entries = self.bpf.namespaces();
        for key in entries.keys().filter(|k| !present.contains(k)) {
            self.bpf.forget(*key);
        }
        track.ns.retain(|k, _| present.contains(k));

        // Seed the namespaces seen for the first time, or whose entry was re-created, lost sockets or is not steady.
        let need: Vec<usize> = (0..out.namespaces.len())
            .filter(|&i| {
                let key = inodes[i] as u32;
                match (track.ns.get(&key), entries.get(&key)) {
                    (Some(t), Some(e)) => e.generation != t.generation || e.lost != t.lost || !e.is_steady(),
                    _ => true,
                }
            })
            .collect();
        if !need.is_empty() {
            let items: Vec<(u32, PathBuf)> = need
                .iter()
                .map(|&i| (inodes[i] as u32, ctx.proc.pid_path(out.namespaces[i].pids[0], "ns/net")))
                .collect();
            let results = self.seed(&items, track.vip_epoch);
            walks += need.len() as u64;
            for ((&i, (key, _)), r) in need.iter().zip(&items).zip(results) {
                match r {
                    Ok(Some(t)) => {
                        track.ns.insert(*key, t);
                    }
                    // Sockets the seeding could not mark (storage allocation failed) are not counted: the
                    // namespace is walked until a later seeding succeeds.
                    Ok(None) => {
                        track.ns.remove(key);
                    }
                    Err(e) => {
                        track.ns.remove(key);
                        // NotFound: a namespace whose processes all exited meanwhile is simply gone. Auto: one that
                        // cannot be entered is walked below, as the netlink source does.
                        if e.kind() != std::io::ErrorKind::NotFound
                            && scanner.config().source != sockets::TcpSource::Auto
                        {
                            let label = &out.namespaces[i].label;
                            out.problems.push(format!("netns {label}: BPF socket iterator: {e}"));
                        }
                    }
                }
            }
            self.note_overflows(&mut track);
        }

        // One netlink socket per namespace for the LISTEN-only dump (and the fallbacks).
        let paths: Vec<PathBuf> = out.namespaces.iter().map(|ns| ctx.proc.pid_path(ns.pids[0], "ns/net")).collect();
        let fds = crate::netns::sockets_in(&paths, libc::AF_NETLINK, libc::SOCK_RAW, inet_diag::NETLINK_SOCK_DIAG);
        let mut close_waits: HashMap<u32, Vec<(u64, u16)>> = HashMap::new();
        for cw in self.bpf.close_waits() {
            close_waits.entry(cw.netns).or_default().push((cw.inode, cw.port));
        }
        let virtual_services: Vec<SocketAddr> = {
            let mut v: Vec<SocketAddr> = out.virtual_services.iter().copied().collect();
            v.sort();
            v
        };
        // IPVS client sockets of every namespace, read once (entries towards services removed since dropped).
        let mut ipvs_clients: HashMap<u32, Vec<(SocketAddr, SocketAddr)>> = HashMap::new();
        if !virtual_services.is_empty() {
            for c in self.bpf.ipvs_clients() {
                if out.virtual_services.contains(&c.remote) {
                    ipvs_clients.entry(c.netns).or_default().push((c.local, c.remote));
                }
            }
        }
        for ((i, fd), key) in fds.into_iter().enumerate().zip(inodes.iter().map(|&i| i as u32)) {
            let fd = match fd {
                Ok(fd) => fd,
                // NotFound: its processes exited meanwhile (a zombie has no namespace links any more).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) if scanner.config().source == sockets::TcpSource::Auto => {
                    // The namespace cannot be entered (setns refused: no CAP_SYS_ADMIN, a seccomp profile): read
                    // its text tables, as the netlink source does.
                    scanner.note_netlink_unavailable(&out.namespaces[i].label, &e);
                    walks += 2;
                    let (line_buf, ns) = (&mut Vec::new(), &out.namespaces[i]);
                    let r = sockets::scan_procfs(&ctx.proc, ns, &out.virtual_services, line_buf, &mut out.problems);
                    out.namespaces[i].sockets = r;
                    continue;
                }
                Err(e) => {
                    let label = &out.namespaces[i].label;
                    out.problems.push(format!("netns {label}: cannot open netlink socket inside: {e}"));
                    continue;
                }
            };
            let tracked = track.ns.get(&key);
            let entry = tracked.and_then(|t| self.bpf.namespace(key).filter(|e| e.generation == t.generation));
            let (Some(t), Some(entry)) = (tracked, entry) else {
                // No (exact) entry: the map is full or the namespace is being rebuilt. Walk it.
                let ns = &out.namespaces[i];
                out.namespaces[i].sockets = sockets::scan_netlink(
                    scanner.config(),
                    &ctx.proc,
                    ns,
                    &fd,
                    semantics,
                    &out.virtual_services,
                    buf,
                    &mut out.problems,
                    &mut walks,
                );
                continue;
            };
            let ns = &out.namespaces[i];
            let mut scan = NsSockets { limits_known: true, source: "ebpf", ..NsSockets::default() };
            // Listeners' queues; CLOSE_WAIT sockets too where the set may be incomplete (that makes it a walk).
            let mut mask = TcpState::Listen.mask();
            if !t.close_wait_complete {
                mask |= TcpState::CloseWait.mask();
                walks += 1;
            }
            let dumped = sock_diag::dump_tcp(&fd, mask, buf, |s| {
                scan.add(s.state, s.local_port, s.inode, s.rqueue, s.wqueue, 0)
            });
            if let Err(e) = dumped {
                out.problems.push(format!("netns {}: sock_diag LISTEN dump: {e}", ns.label));
                continue;
            }
            if t.close_wait_complete {
                scan.close_wait = close_waits.remove(&key).unwrap_or_default();
            }
            for s in TcpState::ALL {
                scan.counts[s.index()] = entry.count[s as usize].max(0) as u64;
            }
            // The list and the count are both exact, but read at different instants: the list wins, so the
            // CLOSE_WAIT groups always sum to the count.
            scan.counts[TcpState::CloseWait.index()] = scan.close_wait.len() as u64;
            scan.counts[TcpState::TimeWait.index()] = match sockets::read_counters(&ctx.proc, &ns.pids) {
                Some((_, tw)) => tw,
                // Every process of the namespace exited meanwhile: it is gone, not broken.
                None if !ns.pids.iter().any(|&p| std::fs::read_link(ctx.proc.pid_path(p, "ns/net")).is_ok()) => {
                    continue;
                }
                None => {
                    out.problems.push(format!("netns {}: cannot read net/sockstat for TIME_WAIT", ns.label));
                    0
                }
            };
            if !virtual_services.is_empty() && track.ipvs_complete(t) {
                scan.to_virtual_services = ipvs_clients.remove(&key).unwrap_or_default();
            } else if !virtual_services.is_empty() {
                // The set may lack some (map full, a service added since the namespace's last iterator run): the
                // kernel-filtered dump, until the next run.
                for chunk in virtual_services.chunks(1500) {
                    walks += 1;
                    let r = sock_diag::dump_tcp_filtered(&fd, TcpState::Established.mask(), chunk, buf, |s| {
                        let remote = SocketAddr::new(sockets::canonical(s.remote_addr), s.remote_port);
                        scan.to_virtual_services
                            .push((SocketAddr::new(sockets::canonical(s.local_addr), s.local_port), remote));
                    });
                    if let Err(e) = r {
                        out.problems.push(format!("netns {}: filtered sock_diag dump: {e}", ns.label));
                        break;
                    }
                }
            }
            out.namespaces[i].sockets = Some(scan);
        }
        walks
    }

    /// A CLOSE_WAIT entry could not be created since last looked: no namespace's set is known complete until its
    /// next iterator run.
    fn note_overflows(&self, track: &mut Track) {
        let now = self.bpf.overflows();
        if now.close_wait > track.overflows.close_wait {
            tracing::warn!(
                max = crate::bpf::CLOSE_WAIT_MAX,
                "tcp: eBPF CLOSE_WAIT map full; dumping CLOSE_WAIT sockets until each namespace is resynced"
            );
            for t in track.ns.values_mut() {
                t.close_wait_complete = false;
            }
        }
        if now.ipvs_clients > track.overflows.ipvs_clients {
            tracing::warn!(
                max = crate::bpf::IPVS_CLIENTS_MAX,
                "tcp: eBPF IPVS client map full; dumping IPVS client sockets until each namespace is resynced"
            );
            for t in track.ns.values_mut() {
                t.ipvs_epoch = None;
            }
        }
        if now.namespaces > track.overflows.namespaces {
            tracing::warn!(max = crate::bpf::NS_MAX, "tcp: eBPF namespace map full; walking the namespaces left out");
        }
        track.overflows = now;
    }

    /// Keeps the program's `vips` set equal to the IPVS TCP virtual services (only the changes are written).
    fn sync_vips(&self, track: &mut Track, virtual_services: &HashSet<SocketAddr>) {
        let gone: Vec<SocketAddr> = track.vips.difference(virtual_services).copied().collect();
        for vip in gone {
            // Connections towards it still in the client set are dropped when read.
            self.bpf.set_vip(vip, false);
            track.vips.remove(&vip);
        }
        let mut added = false;
        let new_ports: Vec<u16> =
            virtual_services.iter().map(SocketAddr::port).filter(|p| !track.vip_ports.contains(p)).collect();
        if !new_ports.is_empty() {
            let mut ports = track.vip_ports.clone();
            ports.extend(new_ports);
            if self.bpf.set_vip_ports(&ports) {
                track.vip_ports = ports;
            }
        }
        for vip in virtual_services.difference(&track.vips.clone()) {
            // Its port first: the program looks a connection up only when the bit of its remote port is set.
            if !track.vip_ports.contains(&vip.port()) {
                continue;
            }
            if self.bpf.set_vip(*vip, true) {
                track.vips.insert(*vip);
                added = true;
            }
        }
        if added {
            track.vip_epoch += 1;
        }
        let failed = track.vips.len() != virtual_services.len();
        if failed && !track.vips_failed {
            tracing::warn!(
                max = crate::bpf::VIPS_MAX,
                "tcp: eBPF virtual service map full; dumping IPVS client sockets in every namespace"
            );
        }
        track.vips_failed = failed;
    }

    /// Seeds each namespace (key, `/proc/<pid>/ns/net`): a fresh entry, one iterator run inside it, then steady.
    /// `Ok(None)`: the entry could not be created or seeded exactly (namespace map full, a socket lost).
    /// `vip_epoch`: [`Track::vip_epoch`] now (the `vips` set is in sync).
    fn seed(&self, items: &[(u32, PathBuf)], vip_epoch: u64) -> Vec<std::io::Result<Option<NsTrack>>> {
        // Read before the entries are reset: a miss from here on re-seeds the namespace at its next resync.
        let missed = self.bpf.missed_events();
        let generations: Vec<Option<u64>> = items.iter().map(|(key, _)| self.bpf.reset_namespace(*key)).collect();
        // Their IPVS client sockets too (a missed event may have left one behind): the iterator records them again.
        self.bpf.clear_ipvs_clients(&items.iter().map(|(key, _)| *key).collect());
        let before = self.bpf.overflows();
        let paths: Vec<PathBuf> = items.iter().map(|(_, p)| p.clone()).collect();
        let results = self.bpf.run_in(&paths);
        let after = self.bpf.overflows();
        let complete = after.close_wait == before.close_wait;
        let ipvs_epoch = (after.ipvs_clients == before.ipvs_clients).then_some(vip_epoch);
        items
            .iter()
            .zip(generations)
            .zip(results)
            .map(|(((key, path), generation), r)| {
                r?;
                let Some(generation) = generation.filter(|&g| self.bpf.mark_steady(*key, g)) else { return Ok(None) };
                Ok(Some(NsTrack {
                    generation,
                    lost: 0,
                    last_sync: Instant::now(),
                    path: path.clone(),
                    close_wait_complete: complete,
                    missed,
                    ipvs_epoch,
                }))
            })
            .collect()
    }

    /// Re-checks the namespace synced longest ago; returns false when there is none. If the program missed events
    /// since the namespace was seeded, it is seeded again (sockets born since its seeding are counted by their
    /// events alone, so a missed one cannot be found socket by socket); otherwise the iterator runs in place and
    /// corrects any marked socket counted in the wrong state or not at all.
    fn resync_one(&self) -> bool {
        let (key, path, reseed, vip_epoch) = {
            let track = self.track.lock().unwrap_or_else(|p| p.into_inner());
            let Some((key, t)) = track.ns.iter().min_by_key(|(_, t)| t.last_sync) else { return false };
            (*key, t.path.clone(), self.bpf.missed_events() != t.missed, track.vip_epoch)
        };
        if reseed {
            // Under the lock, so that a scrape meanwhile neither reads the entry being rebuilt nor seeds it too.
            let mut track = self.track.lock().unwrap_or_else(|p| p.into_inner());
            let Some(old) = track.ns.get(&key) else { return true };
            let missed = self.bpf.missed_events().saturating_sub(old.missed);
            let r = self.seed(&[(key, path)], track.vip_epoch).pop();
            self.walks.fetch_add(1, Ordering::Relaxed);
            self.resyncs.fetch_add(1, Ordering::Relaxed);
            self.reseeds.fetch_add(1, Ordering::Relaxed);
            // Routine on a busy node (nodesleuth_tcp_ebpf_reseeds_total counts them): not a warning.
            tracing::info!(netns = key, missed, "tcp: eBPF program missed state changes; namespace seeded again");
            match r {
                Some(Ok(Some(t))) => {
                    track.ns.insert(key, t);
                }
                // Walked, and seeded again, by the next scrape.
                _ => {
                    track.ns.remove(&key);
                }
            }
            self.note_overflows(&mut track);
            return true;
        }
        let before = self.bpf.namespace(key);
        let overflows = self.bpf.overflows();
        let r = self.bpf.run_in(std::slice::from_ref(&path)).pop();
        self.walks.fetch_add(1, Ordering::Relaxed);
        let after = self.bpf.namespace(key);
        let mut track = self.track.lock().unwrap_or_else(|p| p.into_inner());
        let Some(t) = track.ns.get_mut(&key) else { return true };
        t.last_sync = Instant::now();
        if !matches!(r, Some(Ok(()))) {
            return true;
        }
        if let (Some(b), Some(a)) = (before, after)
            && a.generation == b.generation
            && a.generation == t.generation
            && a.is_steady()
        {
            self.resyncs.fetch_add(1, Ordering::Relaxed);
            let found = (a.seeded - b.seeded) + (a.corrected - b.corrected);
            if found > 0 {
                self.corrections.fetch_add(found, Ordering::Relaxed);
                tracing::warn!(netns = key, sockets = found, "tcp: eBPF resync corrected sockets counted wrongly");
            }
            t.lost = a.lost;
            let now = self.bpf.overflows();
            if now.close_wait == overflows.close_wait {
                t.close_wait_complete = true;
            }
            // The run recorded every connection towards the services in `vips` when it started.
            if now.ipvs_clients == overflows.ipvs_clients {
                t.ipvs_epoch = Some(vip_epoch);
            }
        }
        true
    }
}

fn resync_loop(src: Weak<EbpfSource>, interval: Duration) {
    loop {
        let n = match src.upgrade() {
            Some(s) => s.track.lock().unwrap_or_else(|p| p.into_inner()).ns.len(),
            None => return,
        };
        // Each namespace once per interval, evenly spread.
        let pause = (interval / n.max(1) as u32).max(Duration::from_millis(50));
        std::thread::sleep(pause);
        match src.upgrade() {
            Some(s) => {
                s.resync_one();
            }
            None => return,
        }
    }
}
