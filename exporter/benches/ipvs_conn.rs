//! Benchmark: the IPVS collector's own pass over a 100,000-row `/proc/net/ip_vs_conn` ([`ConnTable`]), the code a
//! scrape runs, not a copy of it.
//!
//! Builds a table in the kernel's format (a few hundred IPv4 and IPv6 virtual services, TCP in mixed states and UDP,
//! a few mixed-family real servers and persistence templates) and a set of client sockets to join (some with an
//! entry, some orphaned), then times, over several rounds, feeding every line to a fresh `ConnTable`. Prints the
//! median, min and max, and the peak heap growth during one pass for 10k and 100k rows (it must not grow with the
//! row count). Target: median ≤ 50 ms for 100k rows.
//!
//! Run: `cargo bench -p nodesleuth --bench ipvs_conn` (env `IPVS_BENCH_ROWS`, `IPVS_BENCH_ROUNDS` override).

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use nodesleuth::collectors::ipvs::{ClientSocket, ConnTable, ServiceAgg, ServiceMap};
use nodesleuth_parse::ipvs::{self, ConnState, Connection, PersistenceEngine, Protocol};

/// Counts live heap bytes and their peak, so the benchmark can show that memory is bounded by services, not rows.
struct CountingAlloc;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the counters do not affect allocation.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Small deterministic generator (xorshift64*), so every run parses the same table.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Vs {
    protocol: Protocol,
    addr: SocketAddr,
    backends: Vec<SocketAddr>,
}

/// `services` virtual services: every tenth is UDP, every sixth IPv6 (with one IPv4 backend among its four).
fn make_services(services: usize) -> Vec<Vs> {
    (0..services)
        .map(|i| {
            let n = i as u32;
            let protocol = if i % 10 == 9 { Protocol::UDP } else { Protocol::TCP };
            let port = if protocol == Protocol::UDP { 53 } else { 80 + (i % 7) as u16 * 1000 };
            let ipv6 = i % 6 == 5;
            let addr = if ipv6 {
                SocketAddr::new(IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0x96, n as u16)), port)
            } else {
                SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0A60_0000 + n)), port)
            };
            let backends = (0..4u32)
                .map(|b| {
                    let id = n * 4 + b;
                    if ipv6 && b != 3 {
                        SocketAddr::new(IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0x244, id as u16)), 8080)
                    } else {
                        SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0AF4_0000 + id)), 8080)
                    }
                })
                .collect();
            Vs { protocol, addr, backends }
        })
        .collect()
}

/// The table as `/proc/net/ip_vs_conn` prints it: header, then `rows` rows.
fn make_table(services: &[Vs], rows: usize) -> String {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut out = String::with_capacity(rows * 110);
    out.push_str(ipvs::CONNECTIONS_HEADER);
    out.push('\n');
    for _ in 0..rows {
        let vs = &services[rng.below(services.len() as u64) as usize];
        let real_server = vs.backends[rng.below(4) as usize];
        let client_ip = match vs.addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(0x0AF4_8000 + rng.below(4096) as u32)),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0x1, rng.below(4096) as u16)),
        };
        let roll = rng.below(100);
        let (state, expires, client_port) = if vs.protocol == Protocol::UDP {
            (ConnState::Udp, rng.below(300), 1024 + rng.below(60000) as u16)
        } else if roll < 2 {
            (ConnState::Assured, rng.below(10800), 0) // persistence template
        } else {
            let state = match roll {
                2..=64 => ConnState::Established,
                65..=84 => ConnState::TimeWait,
                85..=89 => ConnState::FinWait,
                90..=93 => ConnState::SynRecv,
                94..=96 => ConnState::CloseWait,
                97 => ConnState::LastAck,
                _ => ConnState::Close,
            };
            let timeout = if state == ConnState::Established { 900 } else { 120 };
            (state, rng.below(timeout), 1024 + rng.below(60000) as u16)
        };
        let persistence_engine = (vs.protocol == Protocol::UDP && roll == 0)
            .then_some(PersistenceEngine { name: "sip", data: "a84b4c76e66710@pc33" });
        let row = Connection {
            protocol: vs.protocol,
            client: SocketAddr::new(client_ip, client_port),
            virtual_addr: vs.addr,
            real_server,
            state,
            expires_secs: expires as u32,
            expires_clamped: false,
            persistence_engine,
        };
        write!(out, "{row}").expect("writing to a String");
    }
    out
}

/// The collector's service map: (protocol, virtual address) → aggregate.
type Services = ServiceMap;

struct Result {
    lines: u64,
    errors: u64,
    keys: usize,
    established: u64,
    orphaned: usize,
}

/// The services as the collector keys them, and `clients` client sockets: every other one taken from the table's
/// rows (so it has an entry), the rest made up (orphaned).
fn join_inputs(services: &[Vs], table: &str, clients: usize) -> (Services, Vec<(SocketAddr, SocketAddr)>) {
    let keys = services.iter().map(|vs| ((vs.protocol, vs.addr), ServiceAgg::default())).collect();
    let mut sockets = Vec::with_capacity(clients);
    for row in ipvs::parse_connections(table.as_bytes()).expect("header").flatten() {
        if sockets.len() >= clients / 2 {
            break;
        }
        if row.protocol == Protocol::TCP && row.state == ConnState::Established {
            sockets.push((row.client, row.virtual_addr));
        }
    }
    let vip = services[0].addr;
    for i in 0..clients - sockets.len() {
        sockets.push((SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 200, (i >> 8) as u8, i as u8)), 40000), vip));
    }
    (keys, sockets)
}

/// One scrape's pass: a fresh `ConnTable` over the services and clients, fed every line.
fn run_pass(input: &[u8], keys: &Services, sockets: &[(SocketAddr, SocketAddr)]) -> Result {
    let services = keys.keys().map(|k| (*k, ServiceAgg::default())).collect();
    let clients =
        sockets.iter().map(|k| (*k, ClientSocket { namespace: 0, matched: false, near_expiry: false })).collect();
    let mut table = ConnTable::new(services, clients, 900, 0.1);
    for line in input.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        table.add_line(line);
    }
    let established =
        table.services.values().flat_map(|a| a.states.iter()).filter(|(s, _)| s == "ESTABLISHED").map(|(_, n)| n).sum();
    Result {
        lines: table.rows.lines,
        errors: table.rows.malformed,
        keys: table.services.values().map(|a| a.states.len()).sum(),
        established,
        orphaned: table.clients.values().filter(|c| !c.matched).count(),
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it once with few rows as a smoke test.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let rows = env_usize("IPVS_BENCH_ROWS", if smoke { 2_000 } else { 100_000 });
    let rounds = env_usize("IPVS_BENCH_ROUNDS", if smoke { 1 } else { 15 }).max(1);
    let services = make_services(300);
    let table = make_table(&services, rows);
    let (keys, sockets) = join_inputs(&services, &table, 1000);

    let mut times = Vec::with_capacity(rounds);
    let mut last = None;
    for _ in 0..rounds {
        let start = Instant::now();
        let r = run_pass(black_box(table.as_bytes()), &keys, &sockets);
        times.push(start.elapsed().as_secs_f64() * 1e3);
        last = Some(black_box(r));
    }
    let r = last.expect("at least one round");
    assert_eq!(r.errors, 0, "generated table has malformed rows");
    assert_eq!(r.lines, rows as u64 + 1, "header plus every row");
    assert_eq!(r.orphaned, sockets.len() - sockets.len().min(500), "made-up client sockets have no entry");
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "ipvs_conn: {rows} rows, {} virtual services, {} (service, state) keys, {} ESTABLISHED, {} client sockets \
         ({} orphaned), input {:.1} MiB",
        services.len(),
        r.keys,
        r.established,
        sockets.len(),
        r.orphaned,
        table.len() as f64 / (1 << 20) as f64
    );
    println!(
        "ipvs_conn: collector pass (ConnTable) median {median:.2} ms (min {:.2}, max {:.2}, {rounds} rounds; target <= 50 ms)",
        times[0],
        times[times.len() - 1]
    );

    // Peak heap growth of one pass, for a tenth of the rows and for all of them: equal means bounded by services.
    for n in [rows / 10, rows] {
        let sub = &table.as_bytes()[..nth_line_end(table.as_bytes(), n + 1)];
        let base = LIVE.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        let r = black_box(run_pass(sub, &keys, &sockets));
        let peak = PEAK.load(Ordering::Relaxed) - base;
        println!(
            "ipvs_conn: peak heap growth for {:>7} rows: {:>8} bytes ({} keys; bounded by services and clients)",
            r.lines - 1,
            peak,
            r.keys
        );
    }
    // The parser alone allocates nothing, whatever the row count.
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let parsed = ipvs::parse_connections(table.as_bytes()).expect("header").filter(|r| black_box(r).is_ok()).count();
    println!("ipvs_conn: peak heap growth parsing {parsed} rows alone: {} bytes", PEAK.load(Ordering::Relaxed) - base);
}

/// Byte offset just past the `n`th line (or the end).
fn nth_line_end(input: &[u8], n: usize) -> usize {
    input.iter().enumerate().filter(|(_, b)| **b == b'\n').nth(n.saturating_sub(1)).map_or(input.len(), |(i, _)| i + 1)
}
