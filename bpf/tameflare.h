/* Structures shared by the BPF programs (tameflare.bpf.c) and their loader
 * (enforcer.cpp). Plain C with fixed-width kernel types, so both sides lay
 * them out the same way. Changing one changes the maps' layout: bump
 * TF_MAPS_VERSION so a restarted daemon replaces the pinned maps instead of
 * misreading them. */
#ifndef TAMEFLARE_BPF_TAMEFLARE_H
#define TAMEFLARE_BPF_TAMEFLARE_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define TF_MAPS_VERSION 3
#define TF_MAX_AGENTS 65536
#define TF_MAX_ORIGINS 262144
#define TF_MAX_CGROUP_DEPTH 32
#define TF_MAX_UNIX_RULES 65536
#define TF_UNIX_NAME_MAX 108 /* sizeof(sockaddr_un.sun_path) */

/* Attach types of kernel 6.7+ (enum bpf_attach_type, stable UAPI values),
 * defined here because older headers and kernel BTF lack them. */
#define TF_ATTACH_CGROUP_UNIX_CONNECT 49
#define TF_ATTACH_CGROUP_UNIX_SENDMSG 50

/* tf_agents: cgroup id -> where that cgroup's connections go. The programs
 * use the deepest registered ancestor of the calling task's cgroup. */
struct tf_agent {
    __u64 key;          /* the daemon's id of the registration (the cgroup id) */
    __u32 proxy_ip4;    /* network order; every TCP connect goes here */
    __u16 proxy_port;   /* host order */
    __u16 dns_udp_port; /* host order: UDP to port 53 goes here */
    __u16 dns_tcp_port; /* host order: TCP to port 53 goes here */
    __u16 flags;
    __u32 pad;
};

/* An address in the 16-byte form: IPv4 as ::ffff:a.b.c.d. */
struct tf_addr {
    __u8 bytes[16];
};

/* What the agent dialed: kept per socket (socket-local storage) from the
 * connect or sendmsg hook on, and per established TCP connection in
 * tf_origins for the proxy. */
struct tf_origin {
    struct tf_addr addr;
    __u16 port;   /* host order */
    __u16 family; /* AF_INET or AF_INET6: what the agent asked for */
    __u32 pad;
    __u64 agent; /* tf_agent.key */
};

/* tf_origins key: the agent's end of a redirected connection, as the proxy
 * sees the peer of the connection it accepted. */
struct tf_origin_key {
    __u64 netns_cookie;
    struct tf_addr addr;
    __u16 port; /* host order */
    __u16 pad1;
    __u32 pad2;
};

/* tf_unix_allow: the unix socket addresses a registration may connect or
 * send to, as a longest-prefix-match trie. Every entry covers the whole
 * registration key and kind, then:
 *   TF_UNIX_PATH exact "/run/x.sock": the path and its terminating NUL;
 *   TF_UNIX_PATH directory "/run/dir/": the path without a NUL, so it
 *     covers every path below;
 *   TF_UNIX_ABSTRACT "@name": the name's length byte and the name (abstract
 *     names may hold NULs, so the length, not a terminator, ends them);
 *   TF_UNIX_ABSTRACT with nothing after the kind: every abstract name (the
 *     agent has its own network namespace, where those names are private).
 * The programs look up the full key with the bytes after the name zeroed. */
#define TF_UNIX_PATH 0
#define TF_UNIX_ABSTRACT 1
struct tf_unix_key {
    __u32 prefixlen; /* in bits, of what follows */
    __u8 agent[8];   /* tf_agent.key, big-endian: the trie compares bytes in order */
    __u8 kind;
    __u8 name[TF_UNIX_NAME_MAX]; /* path bytes; abstract: length byte, then the name */
    __u8 pad[3];                 /* zero */
};

/* tf_unix_allow values: what kind of entry (for listing). */
#define TF_UNIX_ENTRY_EXACT 1
#define TF_UNIX_ENTRY_DIRECTORY 2
#define TF_UNIX_ENTRY_ANY_ABSTRACT 3

/* tf_counters: per-CPU counters, indexed by this enum. */
enum tf_counter {
    TF_COUNT_TCP_REDIRECTED = 0,
    TF_COUNT_DNS_REDIRECTED,
    TF_COUNT_REFUSED_NO_AGENT, /* a socket of the subtree, no registration */
    TF_COUNT_REFUSED_UDP,      /* UDP to a port other than 53 */
    TF_COUNT_REFUSED_SOCKET,   /* raw, ICMP, SCTP, ... sockets */
    TF_COUNT_REFUSED_TYPE,     /* connect on a socket type other than stream/datagram */
    TF_COUNT_ORIGIN_FULL,      /* tf_origins full: the connection is refused by the proxy */
    TF_COUNT_REFUSED_BIND,     /* bind to an address other than loopback or the any-address */
    TF_COUNT_REFUSED_UNIX,     /* unix socket connect or sendmsg to an address not allowed */
    TF_COUNT_REFUSED_INGRESS,  /* a packet for a socket of the subtree that did not arrive on loopback */
    TF_COUNTER_MAX,
};

#endif
