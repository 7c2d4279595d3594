// SPDX-License-Identifier: GPL-2.0-only
/* The kernel half of enforcement, attached to the cgroup that holds every
 * agent. Every socket an agent creates is held to three rules:
 *   - only TCP and UDP sockets of the inet families exist (sock_create);
 *   - every TCP connect goes to the agent's proxy listener, and TCP or UDP to
 *     port 53 goes to its DNS stub; any other UDP is refused (connect4/6,
 *     sendmsg4/6);
 *   - the agent sees the peer it dialed (getpeername4/6, recvmsg4/6).
 * What the agent dialed is kept in socket-local storage, and copied by the
 * sock_ops program to tf_origins when the connection is established, keyed
 * by the agent's end as the proxy sees it; the entry is removed when the
 * socket closes. Returning 0 from a sock_addr or sock_create program makes
 * the system call fail with EPERM. */
#include "vmlinux.h"

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "tameflare.h"

#define AF_INET 2
#define AF_INET6 10
#define DNS_PORT 53

char LICENSE[] SEC("license") = "GPL";

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, TF_MAX_AGENTS);
    __type(key, __u64);
    __type(value, struct tf_agent);
} tf_agents SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_SK_STORAGE);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, int);
    __type(value, struct tf_origin);
} tf_sk_origin SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, TF_MAX_ORIGINS);
    __type(key, struct tf_origin_key);
    __type(value, struct tf_origin);
} tf_origins SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, TF_COUNTER_MAX);
    __type(key, __u32);
    __type(value, __u64);
} tf_counters SEC(".maps");

static __always_inline void count(__u32 which) {
    __u64* value = bpf_map_lookup_elem(&tf_counters, &which);
    if (value) *value += 1;
}

static __always_inline int refuse(__u32 why) {
    count(why);
    return 0;
}

/* The registration of the deepest registered ancestor (or the cgroup itself)
 * of the calling task. */
static __always_inline const struct tf_agent* find_agent(void) {
    const struct tf_agent* agent = 0;
    for (int level = 1; level < TF_MAX_CGROUP_DEPTH; level++) {
        __u64 id = bpf_get_current_ancestor_cgroup_id(level);
        if (id == 0) break;
        const struct tf_agent* found = bpf_map_lookup_elem(&tf_agents, &id);
        if (found) agent = found;
    }
    return agent;
}

static __always_inline void set_mapped(struct tf_addr* addr, __u32 ip4) {
    __builtin_memset(addr, 0, sizeof(*addr));
    addr->bytes[10] = 0xff;
    addr->bytes[11] = 0xff;
    __builtin_memcpy(&addr->bytes[12], &ip4, 4);
}

static __always_inline int is_mapped(const __u32 words[4]) {
    return words[0] == 0 && words[1] == 0 && words[2] == bpf_htonl(0xffff);
}

/* Where a connect or datagram of this type and port goes; 0: refused. */
static __always_inline __u16 target_port(const struct tf_agent* agent, __u32 type, __u16 port, __u32* refused) {
    if (type == SOCK_STREAM) {
        count(port == DNS_PORT ? TF_COUNT_DNS_REDIRECTED : TF_COUNT_TCP_REDIRECTED);
        return port == DNS_PORT ? agent->dns_tcp_port : agent->proxy_port;
    }
    if (type == SOCK_DGRAM) {
        if (port == DNS_PORT) {
            count(TF_COUNT_DNS_REDIRECTED);
            return agent->dns_udp_port;
        }
        *refused = TF_COUNT_REFUSED_UDP;
        return 0;
    }
    *refused = TF_COUNT_REFUSED_TYPE;
    return 0;
}

static __always_inline int remember(struct bpf_sock_addr* ctx, const struct tf_origin* origin) {
    struct bpf_sock* sk = ctx->sk;
    if (!sk) return 0;
    struct tf_origin* stored = bpf_sk_storage_get(&tf_sk_origin, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
    if (!stored) return 0;
    *stored = *origin;
    return 1;
}

static __always_inline int redirect4(struct bpf_sock_addr* ctx) {
    const struct tf_agent* agent = find_agent();
    if (!agent) return refuse(TF_COUNT_REFUSED_NO_AGENT);
    __u32 refused = 0;
    __u16 port = target_port(agent, ctx->type, bpf_ntohs(ctx->user_port), &refused);
    if (port == 0) return refuse(refused);
    struct tf_origin origin = {};
    set_mapped(&origin.addr, ctx->user_ip4);
    origin.port = bpf_ntohs(ctx->user_port);
    origin.family = AF_INET;
    origin.agent = agent->key;
    if (!remember(ctx, &origin)) return refuse(TF_COUNT_ORIGIN_FULL);
    ctx->user_ip4 = agent->proxy_ip4;
    ctx->user_port = bpf_htons(port);
    return 1;
}

/* IPv6 sockets are sent to the IPv4 listener through its mapped address
 * (::ffff:127.0.0.1): one listener per agent serves both families. A socket
 * with IPV6_V6ONLY cannot reach it and fails to connect: closed, not open. */
static __always_inline int redirect6(struct bpf_sock_addr* ctx) {
    const struct tf_agent* agent = find_agent();
    if (!agent) return refuse(TF_COUNT_REFUSED_NO_AGENT);
    __u32 refused = 0;
    __u16 port = target_port(agent, ctx->type, bpf_ntohs(ctx->user_port), &refused);
    if (port == 0) return refuse(refused);
    __u32 words[4] = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]};
    struct tf_origin origin = {};
    __builtin_memcpy(origin.addr.bytes, words, 16);
    origin.port = bpf_ntohs(ctx->user_port);
    origin.family = is_mapped(words) ? AF_INET : AF_INET6;
    origin.agent = agent->key;
    if (!remember(ctx, &origin)) return refuse(TF_COUNT_ORIGIN_FULL);
    ctx->user_ip6[0] = 0;
    ctx->user_ip6[1] = 0;
    ctx->user_ip6[2] = bpf_htonl(0xffff);
    ctx->user_ip6[3] = agent->proxy_ip4;
    ctx->user_port = bpf_htons(port);
    return 1;
}

SEC("cgroup/connect4")
int tf_connect4(struct bpf_sock_addr* ctx) { return redirect4(ctx); }

SEC("cgroup/connect6")
int tf_connect6(struct bpf_sock_addr* ctx) { return redirect6(ctx); }

/* Unconnected UDP: only datagrams to port 53, and those go to the stub. */
SEC("cgroup/sendmsg4")
int tf_sendmsg4(struct bpf_sock_addr* ctx) { return redirect4(ctx); }

SEC("cgroup/sendmsg6")
int tf_sendmsg6(struct bpf_sock_addr* ctx) { return redirect6(ctx); }

/* Rewrites the address a recvmsg or getpeername call returns to the one the
 * agent dialed. */
static __always_inline int show_origin4(struct bpf_sock_addr* ctx, const struct tf_origin* origin) {
    __u32 ip4;
    __builtin_memcpy(&ip4, &origin->addr.bytes[12], 4);
    ctx->user_ip4 = ip4;
    ctx->user_port = bpf_htons(origin->port);
    return 1;
}

static __always_inline int show_origin6(struct bpf_sock_addr* ctx, const struct tf_origin* origin) {
    __u32 words[4];
    __builtin_memcpy(words, origin->addr.bytes, 16);
    ctx->user_ip6[0] = words[0];
    ctx->user_ip6[1] = words[1];
    ctx->user_ip6[2] = words[2];
    ctx->user_ip6[3] = words[3];
    ctx->user_port = bpf_htons(origin->port);
    return 1;
}

/* A reply from the stub appears to come from the server the agent asked. */
static __always_inline const struct tf_origin* stub_origin(struct bpf_sock_addr* ctx, __u16 from_port) {
    struct bpf_sock* sk = ctx->sk;
    if (!sk) return 0;
    const struct tf_origin* origin = bpf_sk_storage_get(&tf_sk_origin, sk, 0, 0);
    if (!origin) return 0;
    const struct tf_agent* agent = bpf_map_lookup_elem(&tf_agents, &origin->agent);
    if (!agent || from_port != agent->dns_udp_port) return 0;
    return origin;
}

SEC("cgroup/recvmsg4")
int tf_recvmsg4(struct bpf_sock_addr* ctx) {
    const struct tf_origin* origin = stub_origin(ctx, bpf_ntohs(ctx->user_port));
    if (!origin || origin->family != AF_INET) return 1;
    return show_origin4(ctx, origin);
}

SEC("cgroup/recvmsg6")
int tf_recvmsg6(struct bpf_sock_addr* ctx) {
    const struct tf_origin* origin = stub_origin(ctx, bpf_ntohs(ctx->user_port));
    if (!origin) return 1;
    return show_origin6(ctx, origin);
}

/* The agent sees the peer it dialed, not the proxy. */
SEC("cgroup/getpeername4")
int tf_getpeername4(struct bpf_sock_addr* ctx) {
    struct bpf_sock* sk = ctx->sk;
    if (!sk) return 1;
    const struct tf_origin* origin = bpf_sk_storage_get(&tf_sk_origin, sk, 0, 0);
    if (!origin || origin->family != AF_INET) return 1;
    return show_origin4(ctx, origin);
}

SEC("cgroup/getpeername6")
int tf_getpeername6(struct bpf_sock_addr* ctx) {
    struct bpf_sock* sk = ctx->sk;
    if (!sk) return 1;
    const struct tf_origin* origin = bpf_sk_storage_get(&tf_sk_origin, sk, 0, 0);
    if (!origin) return 1;
    return show_origin6(ctx, origin);
}

/* Only TCP and UDP: no raw or packet-level sockets, no ICMP (ping) sockets,
 * no SCTP, DCCP, MPTCP or UDP-Lite, whose connects the hooks above would not
 * all see. */
SEC("cgroup/sock_create")
int tf_sock_create(struct bpf_sock* sk) {
    if (sk->family != AF_INET && sk->family != AF_INET6) return refuse(TF_COUNT_REFUSED_SOCKET);
    if (sk->type == SOCK_STREAM && sk->protocol == IPPROTO_TCP) return 1;
    if (sk->type == SOCK_DGRAM && sk->protocol == IPPROTO_UDP) return 1;
    return refuse(TF_COUNT_REFUSED_SOCKET);
}

static __always_inline void origin_key(struct bpf_sock_ops* skops, struct tf_origin_key* key) {
    __builtin_memset(key, 0, sizeof(*key));
    key->netns_cookie = bpf_get_netns_cookie(skops);
    key->port = (__u16)skops->local_port;
    if (skops->family == AF_INET) {
        set_mapped(&key->addr, skops->local_ip4);
    } else {
        __u32 words[4] = {skops->local_ip6[0], skops->local_ip6[1], skops->local_ip6[2], skops->local_ip6[3]};
        __builtin_memcpy(key->addr.bytes, words, 16);
    }
}

SEC("sockops")
int tf_sockops(struct bpf_sock_ops* skops) {
    struct tf_origin_key key;
    switch (skops->op) {
    case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB: {
        struct bpf_sock* sk = skops->sk;
        if (!sk) return 1;
        struct tf_origin* origin = bpf_sk_storage_get(&tf_sk_origin, sk, 0, 0);
        if (!origin) return 1;
        origin_key(skops, &key);
        if (bpf_map_update_elem(&tf_origins, &key, origin, BPF_ANY) != 0) {
            count(TF_COUNT_ORIGIN_FULL);
            return 1;
        }
        bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
        return 1;
    }
    case BPF_SOCK_OPS_STATE_CB:
        if (skops->args[1] == BPF_TCP_CLOSE) {
            origin_key(skops, &key);
            bpf_map_delete_elem(&tf_origins, &key);
        }
        return 1;
    default:
        return 1;
    }
}
