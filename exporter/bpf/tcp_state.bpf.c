// SPDX-License-Identifier: BSD-2-Clause OR GPL-2.0-only
/* nodesleuth: TCP state accounting per network namespace, fed by the kernel's state-change tracepoint.
 *
 * Build (exporter/bpf/build.sh; exporter/tests/tcp_ebpf.rs checks the committed object against it):
 *   clang -O2 -g -target bpf -mcpu=v3 -c tcp_state.bpf.c -o tcp_state.bpf.o   (in this directory)
 *
 * Accounting. Every TCP socket that is counted carries, in BPF socket-local storage, the state it is counted in
 * and the generation of the namespace entry it is counted in. So each socket is counted at most once, whoever
 * counts it first: the tracepoint (`on_state`, on every state change) or the seeding/resync iterator (`seed`,
 * run by the exporter once per namespace over that namespace's sockets, and again periodically). Both run with
 * the socket locked (the tracepoint under the lock its caller holds to change the state, the iterator under
 * lock_sock_fast), so for one socket they are serialised and there is no window in which a socket is counted
 * twice or not at all: that is why the seeding is exact although the program runs while the walk happens.
 *
 * A namespace entry deleted by the exporter (its namespace vanished) and created again gets a new generation:
 * sockets still carrying the old one count as not counted, so the next `seed` run rebuilds that entry exactly.
 *
 * TIME_WAIT and SYN_RECV request sockets are not full sockets (no state events, no storage) and are not counted
 * here: the exporter takes TIME_WAIT from the namespace's counter.
 */
#include "kernel_types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#define BPF_MAP_TYPE_HASH 1
#define BPF_MAP_TYPE_ARRAY 2
#define BPF_MAP_TYPE_SK_STORAGE 24
#define BPF_F_NO_PREALLOC 1
#define BPF_NOEXIST 1
#define BPF_SK_STORAGE_GET_F_CREATE 1
#define IPPROTO_TCP 6
#define TCP_CLOSE_WAIT 8
#define TCP_CLOSE 7
#define STATES 16
#define NOT_COUNTED 0xff

/* Per network namespace (key: namespace inode number). Keep the layout in sync with exporter/src/bpf.rs. */
struct ns_counts {
	__u64 gen;          /* generation: when the entry was created (ns clock) */
	__s64 count[STATES]; /* sockets per TCP state (index = kernel state number) */
	__u64 events;       /* state changes seen */
	__u64 seeded;       /* sockets counted by the iterator because no event had counted them */
	__u64 corrected;    /* sockets the iterator found in a state other than the one they were counted in */
	__u64 lost;         /* sockets that could not get their storage: the entry is no longer exact */
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
	if (state < STATES)
		__sync_fetch_and_add(&c->count[state], n);
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
	__sync_fetch_and_add(&c->events, 1);
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
	m = bpf_sk_storage_get(&sk_marks, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!m) {
		__sync_fetch_and_add(&c->lost, 1);
		count_full(2);
		return 0;
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
	if (state == TCP_CLOSE_WAIT)
		close_wait_enter(sk, netns);
	return 0;
}

/* GPL-compatible for the kernel (tracing helpers are GPL-only), BSD for the Apache-2.0 project around it. */
char LICENSE[] SEC("license") = "Dual BSD/GPL";
