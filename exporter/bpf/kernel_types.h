/* The few kernel types tcp_state.bpf.c reads, declared by hand instead of a generated vmlinux.h.
 *
 * Only the members the program touches are declared, and their order and offsets here do not matter: every
 * struct carries preserve_access_index, so clang records each member access as a CO-RE relocation (type and
 * member *name*), and the loader (libbpf) rewrites the offset from the running kernel's BTF
 * (/sys/kernel/btf/vmlinux). Members the kernel keeps inside anonymous structs or unions (skc_num) are found by
 * name there too (skc_daddr, skc_dport). */
#ifndef NODESLEUTH_KERNEL_TYPES_H
#define NODESLEUTH_KERNEL_TYPES_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed long long __s64;
typedef int __s32;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef __u32 uid_t;

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct ns_common {
	unsigned int inum;
};

struct net {
	struct ns_common ns;
};

typedef struct {
	struct net *net;
} possible_net_t;

struct in6_addr {
	__u8 bytes[16]; /* only its address is taken (copied with bpf_probe_read_kernel): no member relocation */
};

struct sock_common {
	unsigned short skc_family;
	volatile unsigned char skc_state;
	__u16 skc_num;
	possible_net_t skc_net;
	__be32 skc_daddr;     /* IPv4 remote address (network order) */
	__be32 skc_rcv_saddr; /* IPv4 local address */
	__be16 skc_dport;     /* remote port (network order) */
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
};

struct inode {
	unsigned long i_ino;
};

struct file {
	struct inode *f_inode;
};

struct socket {
	struct file *file;
};

struct sock {
	struct sock_common __sk_common;
	__u16 sk_protocol;
	struct socket *sk_socket;
};

struct inet_sock {
	struct sock sk;
};

struct inet_connection_sock {
	struct inet_sock icsk_inet;
};

struct tcp_sock {
	struct inet_connection_sock inet_conn;
};

struct bpf_iter_meta {
	void *seq;
	__u64 session_id;
	__u64 seq_num;
};

struct bpf_iter__tcp {
	struct bpf_iter_meta *meta;
	struct sock_common *sk_common;
	uid_t uid;
};

#pragma clang attribute pop

#endif
