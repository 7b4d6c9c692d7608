// SPDX-License-Identifier: BSD-2-Clause OR GPL-2.0-only
/* nodesleuth: TCP state accounting per network namespace, fed by the kernel's state-change tracepoint.
 *
 * Build (exporter/bpf/build.sh; exporter/tests/tcp_ebpf.rs checks the committed object against it):
 *   clang -O2 -g -target bpf -mcpu=v3 -c tcp_state.bpf.c -o tcp_state.bpf.o   (in this directory)
 *
 * Accounting. A namespace entry is built in two phases.
 *
 * Seeding (the entry is not "steady"): every TCP socket that is counted carries, in BPF socket-local storage, the
 * state it is counted in and the generation of the namespace entry it is counted in. So each socket is counted at
 * most once, whoever counts it first: the tracepoint (`on_state`, on every state change) or the seeding iterator
 * (`seed`, run by the exporter over that namespace's sockets). Both run with the socket locked (the tracepoint
 * under the lock its caller holds to change the state, the iterator under lock_sock_fast), so for one socket they
 * are serialised and there is no window in which a socket is counted twice or not at all: that is why the seeding
 * is exact although the program runs while the walk happens.
 *
 * Steady: once an iterator run has walked the whole namespace and found no socket it could not mark (`lost` 0),
 * the exporter sets `steady` = `gen` (program `mark_steady`, run through BPF_PROG_TEST_RUN, which writes that one
 * field, so no user-space write races the atomic counters). From then on every socket of the namespace either
 * carries a mark of this generation (it was counted by the seeding, or its first event came before `steady` was
 * set) or carries none because it was born after that: it was in TCP_CLOSE (not counted) or is a child still
 * being cloned from its listener, and every state change since has been an event (TCP changes state through
 * tcp_set_state / inet_sk_state_store / inet_sk_set_state, which all fire the tracepoint, listen() included: the
 * tests count thousands of such sockets in every state against `ss`). For such a socket the tracepoint's old state IS the state it is
 * counted in, so plain deltas are exact (count[old]--, count[new]++) and it needs no storage: socket storage
 * creation (an allocation per socket, and its free at socket destruction) was most of the program's cost. Births:
 * CLOSE -> SYN_SENT (connect) and CLOSE -> LISTEN (listen) count nothing down; a child is cloned from its
 * listener (inet_csk_clone_lock: state copied, then set to SYN_RECV), so its first event is LISTEN -> SYN_RECV,
 * which a listener itself never makes: nothing is counted down for it either. Storage is not cloned with the
 * socket (the map has no BPF_F_CLONE), so a child never inherits its listener's mark. Marked sockets keep the
 * mark-based logic for their whole life, so the two kinds never mix.
 *
 * Lost events. The kernel skips a tracing program that would nest in itself on one CPU (an interrupt's state
 * change while the program runs): bpf_prog_info.recursion_misses. A missed event of a marked socket is repaired
 * by its next event (it counts down the state of its mark), except its last one; an unmarked socket's is not. So
 * the exporter re-seeds every steady namespace (new entry, new generation, iterator, steady again) when that
 * counter grew since the namespace's seeding, and otherwise its periodic resync runs the iterator in place: a
 * steady namespace's marked sockets are checked and corrected as before, unmarked ones are left to the events.
 *
 * A namespace entry deleted by the exporter (its namespace vanished, or a re-seed) and created again gets a new
 * generation: sockets still carrying the old one count as not counted, so the next `seed` run rebuilds that entry
 * exactly. The new entry is not steady, so no socket is counted by deltas in it before it is seeded again.
 *
 * TIME_WAIT and SYN_RECV request sockets are not full sockets (no state events, no storage) and are not counted
 * here: the exporter takes TIME_WAIT from the namespace's counter.
 */
#include "kernel_types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

#define BPF_MAP_TYPE_HASH 1
#define BPF_MAP_TYPE_ARRAY 2
#define BPF_MAP_TYPE_SK_STORAGE 24
#define BPF_F_NO_PREALLOC 1
#define BPF_NOEXIST 1
#define BPF_SK_STORAGE_GET_F_CREATE 1
#define IPPROTO_TCP 6
#define TCP_CLOSE_WAIT 8
#define TCP_CLOSE 7
#define TCP_SYN_RECV 3
#define TCP_LISTEN 10
#define STATES 16
#define NOT_COUNTED 0xff

/* Per network namespace (key: namespace inode number). Keep the layout in sync with exporter/src/bpf.rs. */
struct ns_counts {
	__u64 gen;          /* generation: when the entry was created (ns clock) */
	__s64 count[STATES]; /* sockets per TCP state (index = kernel state number) */
	__u64 seeded;       /* sockets counted by the iterator because no event had counted them */
	__u64 corrected;    /* sockets the iterator found in a state other than the one they were counted in */
	__u64 lost;         /* sockets that could not get their storage: the entry is no longer exact */
	__u64 steady;       /* == gen once seeded: sockets born since are counted by deltas, unmarked */
};

struct sk_mark {
	__u64 gen;
	__u32 counted; /* state counted in, or NOT_COUNTED */
	__u32 pad;
};

/* A CLOSE_WAIT socket (key: its kernel address, never exported). */
struct close_wait {
	__u64 inode;
	__u32 netns;
	__u16 port;
	__u16 pad;
};

struct globals {
	__u64 ns_full;        /* a namespace entry could not be created: NS_MAX reached */
	__u64 close_wait_full; /* a CLOSE_WAIT entry could not be created: CLOSE_WAIT_MAX reached */
	__u64 storage_fail;   /* a socket's storage could not be allocated (memory cgroup limit): socket not counted */
};

/* Bounds documented in README.md ("eBPF source"): keep in sync with exporter/src/bpf.rs. */
#define NS_MAX 8192
#define CLOSE_WAIT_MAX 131072

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, NS_MAX);
	__type(key, __u32);
	__type(value, struct ns_counts);
} ns_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sk_mark);
} sk_marks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, CLOSE_WAIT_MAX);
	__type(key, __u64);
	__type(value, struct close_wait);
} close_waits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct globals);
} globals SEC(".maps");

static __always_inline void count_full(int which)
{
	__u32 zero = 0;
	struct globals *g = bpf_map_lookup_elem(&globals, &zero);

	if (g) {
		if (which == 2)
			__sync_fetch_and_add(&g->storage_fail, 1);
		else if (which)
			__sync_fetch_and_add(&g->close_wait_full, 1);
		else
			__sync_fetch_and_add(&g->ns_full, 1);
	}
}

static __always_inline struct ns_counts *ns_entry(__u32 netns)
{
	struct ns_counts *c = bpf_map_lookup_elem(&ns_counts, &netns);
	struct ns_counts fresh = {};
	long err;

	if (c)
		return c;
	fresh.gen = bpf_ktime_get_ns() | 1;
	err = bpf_map_update_elem(&ns_counts, &netns, &fresh, BPF_NOEXIST);
	if (err && err != -17 /* EEXIST: created meanwhile on another CPU */) {
		count_full(0);
		return 0;
	}
	return bpf_map_lookup_elem(&ns_counts, &netns);
}

static __always_inline void add(struct ns_counts *c, __u32 state, __s64 n)
{
	if (state >= STATES)
		return;
	/* The mask changes nothing after the check, but gives the verifier its bound where clang checked a copy of
	 * the register (the empty asm keeps clang from dropping the mask as redundant). */
	asm volatile("" : "+r"(state));
	__sync_fetch_and_add(&c->count[state & (STATES - 1)], n);
}

static __always_inline void close_wait_enter(struct sock *sk, __u32 netns)
{
	__u64 key = (__u64)sk;
	struct close_wait cw = {};
	struct socket *so = sk->sk_socket;

	cw.netns = netns;
	cw.port = sk->__sk_common.skc_num;
	/* No socket yet: the connection still waits in a listener's accept queue; the resync fills the inode in. */
	if (so && so->file && so->file->f_inode)
		cw.inode = so->file->f_inode->i_ino;
	if (bpf_map_update_elem(&close_waits, &key, &cw, 0))
		count_full(1);
}

static __always_inline void close_wait_leave(struct sock *sk)
{
	__u64 key = (__u64)sk;

	bpf_map_delete_elem(&close_waits, &key);
}

/* IPVS client sockets: ESTABLISHED sockets whose remote address and port is an IPVS TCP virtual service, so that a
 * scrape reads them here instead of dumping every namespace's established sockets (exporter/src/bpf_source.rs).
 *
 * `vips` is written by the exporter only: it keeps it equal to the IPVS TCP virtual services before it seeds or
 * reads. `ipvs_clients` (key: the socket's kernel address, never exported) gets a socket when it enters ESTABLISHED
 * towards a VIP (on_state) or is found ESTABLISHED towards one by the iterator (seed: idempotent, so connections
 * older than the program, or than the VIP's entry in `vips`, are picked up by the namespace's next iterator run;
 * until then the exporter dumps that namespace instead), and loses it when it leaves ESTABLISHED.
 *
 * Cost per connection. Both hash maps are large (their bucket arrays alone are 1 and 2 MB, so a lookup likely
 * misses the cache): when every change into or out of ESTABLISHED looked one up, the program took about 170 ns more
 * per event on average (about 1.7 us per connection; README.md, "eBPF source"). So a bitmap of the remote ports of all virtual services
 * (`vip_ports`, 8 KB, set by the exporter before it adds a VIP to `vips`; a bit is never cleared, so that a
 * connection recorded under a port is also removed under it) is tested first: a connection whose remote port is
 * no VIP's costs two bit tests (server ends, whose remote port is the client's ephemeral one, nearly always), and
 * on a node without virtual services nothing else ever runs. A connection to a VIP port costs a lookup in `vips`
 * when it becomes ESTABLISHED and one in `ipvs_clients` when it leaves, plus an insert and a delete for a client
 * of a VIP. A socket is ESTABLISHED only once, so there is nothing else.
 * Addresses: 16 bytes, IPv4 as v4-mapped IPv6 (as a dual-stack socket to an IPv4 peer holds it); ports in host
 * order. Keep the layouts in sync with exporter/src/bpf.rs. */
#define TCP_ESTABLISHED 1
#define AF_INET6 10
#define VIPS_MAX 65536
#define IPVS_CLIENTS_MAX 131072

struct vip_key {
	__u8 addr[16];
	__u16 port;
	__u16 pad;
};

struct ipvs_client {
	__u32 netns;
	__u16 lport;
	__u16 rport;
	__u8 laddr[16];
	__u8 raddr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, VIPS_MAX);
	__type(key, struct vip_key);
	__type(value, __u8);
} vips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, IPVS_CLIENTS_MAX);
	__type(key, __u64);
	__type(value, struct ipvs_client);
} ipvs_clients SEC(".maps");

struct vip_ports {
	__u64 bits[1024]; /* bit p: some virtual service has (or had) port p */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct vip_ports);
} vip_ports SEC(".maps");

static __always_inline int vip_port(__u16 port)
{
	__u32 zero = 0;
	struct vip_ports *p = bpf_map_lookup_elem(&vip_ports, &zero);

	return p && ((p->bits[(port >> 6) & 1023] >> (port & 63)) & 1);
}

/* Entries `ipvs_clients` could not take because it was full (the exporter dumps until the next iterator run). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} ipvs_full SEC(".maps");

static __always_inline void ipvs_addr(struct sock *sk, int remote, __u8 *out)
{
	struct sock_common *skc = &sk->__sk_common;
	__u32 a;

	if (skc->skc_family == AF_INET6) {
		if (remote)
			bpf_probe_read_kernel(out, 16, &skc->skc_v6_daddr);
		else
			bpf_probe_read_kernel(out, 16, &skc->skc_v6_rcv_saddr);
		return;
	}
	a = remote ? skc->skc_daddr : skc->skc_rcv_saddr;
	__builtin_memset(out, 0, 10);
	out[10] = 0xff;
	out[11] = 0xff;
	__builtin_memcpy(out + 12, &a, 4);
}

/* A state change of a TCP socket (the iterator passes oldstate -1 and the socket's current state). */
static __always_inline void ipvs_track(struct sock *sk, __u32 netns, int oldstate, int newstate)
{
	__u64 key = (__u64)sk;

	if (newstate != TCP_ESTABLISHED && oldstate != TCP_ESTABLISHED)
		return;
	if (!vip_port(bpf_ntohs(sk->__sk_common.skc_dport)))
		return;
	if (newstate == TCP_ESTABLISHED) {
		struct vip_key v = {};
		struct ipvs_client cl = {};
		__u32 zero = 0;
		__u64 *full;

		ipvs_addr(sk, 1, v.addr);
		v.port = bpf_ntohs(sk->__sk_common.skc_dport);
		if (!bpf_map_lookup_elem(&vips, &v))
			return;
		cl.netns = netns;
		cl.lport = sk->__sk_common.skc_num;
		cl.rport = v.port;
		__builtin_memcpy(cl.raddr, v.addr, 16);
		ipvs_addr(sk, 0, cl.laddr);
		if (bpf_map_update_elem(&ipvs_clients, &key, &cl, 0)) {
			full = bpf_map_lookup_elem(&ipvs_full, &zero);
			if (full)
				__sync_fetch_and_add(full, 1);
		}
	} else if (oldstate == TCP_ESTABLISHED && bpf_map_lookup_elem(&ipvs_clients, &key)) {
		bpf_map_delete_elem(&ipvs_clients, &key);
	}
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(on_state, struct sock *sk, int oldstate, int newstate)
{
	struct ns_counts *c;
	struct sk_mark *m;
	__u32 netns;

	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	netns = sk->__sk_common.skc_net.net->ns.inum;
	c = ns_entry(netns);
	if (!c)
		return 0;
	/* Without CREATE first: a socket born after the seeding has no storage, and this returns at once. */
	m = bpf_sk_storage_get(&sk_marks, sk, 0, 0);
	if (!m && c->steady == c->gen) {
		/* Born after the seeding: counted in exactly its old state, unless that was its birth. */
		if (oldstate != TCP_CLOSE && !(oldstate == TCP_LISTEN && newstate == TCP_SYN_RECV))
			add(c, oldstate, -1);
		if (newstate != TCP_CLOSE)
			add(c, newstate, 1);
	} else {
		if (!m)
			m = bpf_sk_storage_get(&sk_marks, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (!m) {
			__sync_fetch_and_add(&c->lost, 1);
			count_full(2);
			return 0;
		}
		if (m->gen == c->gen && m->counted != NOT_COUNTED)
			add(c, m->counted, -1);
		if (newstate == TCP_CLOSE || newstate < 0 || newstate >= STATES) {
			m->counted = NOT_COUNTED;
		} else {
			add(c, newstate, 1);
			m->counted = newstate;
		}
		m->gen = c->gen;
	}
	ipvs_track(sk, netns, oldstate, newstate);
	if (newstate == TCP_CLOSE_WAIT)
		close_wait_enter(sk, netns);
	else if (oldstate == TCP_CLOSE_WAIT)
		close_wait_leave(sk);
	return 0;
}

SEC("iter/tcp")
int seed(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct tcp_sock *tp;
	struct sock *sk;
	struct ns_counts *c;
	struct sk_mark *m;
	__u32 netns, state;

	if (!skc)
		return 0;
	/* NULL for TIME_WAIT and request (SYN_RECV) minisockets: not full sockets, not counted here. */
	tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0;
	sk = &tp->inet_conn.icsk_inet.sk;
	state = sk->__sk_common.skc_state;
	if (state == TCP_CLOSE || state >= STATES)
		return 0;
	netns = sk->__sk_common.skc_net.net->ns.inum;
	c = ns_entry(netns);
	if (!c)
		return 0;
	if (c->steady == c->gen) {
		/* Resync of a steady namespace: an unmarked socket was born after the seeding and is counted by the
		 * events; a marked one is checked below. */
		m = bpf_sk_storage_get(&sk_marks, sk, 0, 0);
		if (!m)
			goto close_wait;
	} else {
		m = bpf_sk_storage_get(&sk_marks, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (!m) {
			__sync_fetch_and_add(&c->lost, 1);
			count_full(2);
			return 0;
		}
	}
	if (m->gen != c->gen) {
		/* Not counted in this entry yet: it predates the program (or the entry). */
		add(c, state, 1);
		__sync_fetch_and_add(&c->seeded, 1);
	} else if (m->counted != state) {
		/* Counted, but in another state: an event was missed. */
		if (m->counted != NOT_COUNTED)
			add(c, m->counted, -1);
		add(c, state, 1);
		__sync_fetch_and_add(&c->corrected, 1);
	}
	m->gen = c->gen;
	m->counted = state;
close_wait:
	ipvs_track(sk, netns, -1, state);
	if (state == TCP_CLOSE_WAIT)
		close_wait_enter(sk, netns);
	return 0;
}

/* Run by the exporter (BPF_PROG_TEST_RUN) when an iterator run has seeded namespace `netns` under generation
 * `gen`: from now on sockets born there are counted without storage. Refused (1) when the entry is no longer that
 * generation or lost a socket (then it is seeded again). */
struct steady_args {
	__u32 netns;
	__u32 pad;
	__u64 gen;
};

SEC("syscall")
int mark_steady(struct steady_args *a)
{
	__u32 netns = a->netns;
	struct ns_counts *c = bpf_map_lookup_elem(&ns_counts, &netns);

	if (!c || c->gen != a->gen || c->lost)
		return 1;
	c->steady = c->gen;
	return 0;
}

/* GPL-compatible for the kernel (tracing helpers are GPL-only), BSD for the Apache-2.0 project around it. */
char LICENSE[] SEC("license") = "Dual BSD/GPL";
