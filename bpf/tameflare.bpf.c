// SPDX-License-Identifier: GPL-2.0-only
/* The kernel half of enforcement, attached to the cgroup that holds every
 * agent. Every socket an agent creates is held to three rules:
 *   - only TCP and UDP sockets of the inet families exist (sock_create);
 *   - every TCP connect goes to the agent's proxy listener, and TCP or UDP to
 *     port 53 goes to its DNS stub; any other UDP is refused (connect4/6,
 *     sendmsg4/6);
 *   - the agent sees the peer it dialed (getpeername4/6, recvmsg4/6);
 *   - it binds loopback only: the any-address becomes loopback, any other
 *     address is refused (bind4/6);
 *   - it connects or sends to the unix sockets of its allow-list only
 *     (connect_unix, sendmsg_unix; kernel 6.7+, loaded only where the
 *     kernel has them);
 *   - its sockets receive packets from loopback only (cgroup_skb ingress),
 *     whatever address they ended up bound to.
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
    __uint(type, BPF_MAP_TYPE_LPM_TRIE);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __uint(max_entries, TF_MAX_UNIX_RULES);
    __type(key, struct tf_unix_key);
    __type(value, __u32);
} tf_unix_allow SEC(".maps");

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

/* Loopback only. 0.0.0.0 and :: (and ::ffff:0.0.0.0) become loopback, so a
 * server that binds the any-address keeps working but is reachable from this
 * host only; any other address is refused. The port is left alone. */
#define LOOPBACK4 0x7f000001

static __always_inline int is_loopback4(__u32 ip4 /* network order */) {
    return (bpf_ntohl(ip4) >> 24) == 127;
}

SEC("cgroup/bind4")
int tf_bind4(struct bpf_sock_addr* ctx) {
    if (!find_agent()) return refuse(TF_COUNT_REFUSED_NO_AGENT);
    __u32 ip4 = ctx->user_ip4;
    if (is_loopback4(ip4)) return 1;
    if (ip4 == 0) {
        ctx->user_ip4 = bpf_htonl(LOOPBACK4);
        return 1;
    }
    return refuse(TF_COUNT_REFUSED_BIND);
}

SEC("cgroup/bind6")
int tf_bind6(struct bpf_sock_addr* ctx) {
    if (!find_agent()) return refuse(TF_COUNT_REFUSED_NO_AGENT);
    __u32 words[4] = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]};
    if (words[0] == 0 && words[1] == 0 && words[2] == 0) {
        if (words[3] == bpf_htonl(1)) return 1; /* ::1 */
        if (words[3] == 0) {                    /* :: */
            ctx->user_ip6[3] = bpf_htonl(1);
            return 1;
        }
        return refuse(TF_COUNT_REFUSED_BIND);
    }
    if (is_mapped(words)) {
        if (is_loopback4(words[3])) return 1;
        if (words[3] == 0) { /* ::ffff:0.0.0.0 */
            ctx->user_ip6[3] = bpf_htonl(LOOPBACK4);
            return 1;
        }
    }
    return refuse(TF_COUNT_REFUSED_BIND);
}

/* Unix sockets (kernel 6.7+). The address is not in struct bpf_sock_addr:
 * it is read from the kernel's context (struct bpf_sock_addr_kern). Its
 * type, the field uaddrlen and the kfunc are declared here, not taken from
 * vmlinux.h, so that the object still builds against the BTF of kernels
 * without them (6.1); CO-RE places the fields on the running kernel, and the
 * loader does not load these programs where the kernel lacks the hooks. */
struct bpf_sock_addr_kern___tf {
    struct sockaddr* uaddr;
    __u32 uaddrlen;
} __attribute__((preserve_access_index));

extern void* bpf_cast_to_kern_ctx(void* obj) __ksym __weak;

#define SUN_PATH_OFFSET 2 /* offsetof(struct sockaddr_un, sun_path) */
#define SCAN_MAX (TF_UNIX_NAME_MAX + 4)

/* A path the trie can be trusted with: absolute, no "//", and no "." or
 * ".." component, which would let "/allowed/dir/../x" pass as a path below
 * "/allowed/dir/". `p` holds the path, zeroed after its end. */
static __always_inline int canonical_path(const __u8 p[SCAN_MAX]) {
    if (p[0] != '/') return 0;
    for (int i = 0; i < TF_UNIX_NAME_MAX; i++) {
        if (p[i] != '/') continue;
        __u8 a = p[i + 1], b = p[i + 2], c = p[i + 3];
        if (a == '/') return 0;
        if (a == '.' && (b == '/' || b == 0)) return 0;
        if (a == '.' && b == '.' && (c == '/' || c == 0)) return 0;
    }
    return 1;
}

static __always_inline int allow_unix(struct bpf_sock_addr* ctx) {
    const struct tf_agent* agent = find_agent();
    if (!agent) return refuse(TF_COUNT_REFUSED_NO_AGENT);
    struct bpf_sock_addr_kern___tf* kern = bpf_cast_to_kern_ctx(ctx);
    if (!kern) return refuse(TF_COUNT_REFUSED_UNIX);
    __u32 length = kern->uaddrlen;
    const struct sockaddr* uaddr = kern->uaddr;
    /* The kernel has checked the family and that at least one byte of
     * sun_path is there; an unnamed address never reaches this hook. */
    if (length <= SUN_PATH_OFFSET) return refuse(TF_COUNT_REFUSED_UNIX);
    length -= SUN_PATH_OFFSET;
    if (length > TF_UNIX_NAME_MAX) length = TF_UNIX_NAME_MAX;

    __u8 name[SCAN_MAX] = {};
    if (bpf_probe_read_kernel(name, TF_UNIX_NAME_MAX, (const char*)uaddr + SUN_PATH_OFFSET) != 0) {
        return refuse(TF_COUNT_REFUSED_UNIX);
    }
    /* A path ends at its first NUL or at the address's end; an abstract name
     * (leading NUL) at the address's end only. The rest is zeroed: it is
     * whatever the kernel's buffer held. */
    const int abstract = name[0] == 0;
    int ended = 0;
    for (__u32 i = 0; i < TF_UNIX_NAME_MAX; i++) {
        if (i >= length || (!abstract && name[i] == 0)) ended = 1;
        if (ended) name[i] = 0;
    }

    struct tf_unix_key key = {};
    key.prefixlen = (sizeof(key) - sizeof(key.prefixlen)) * 8;
    __u64 agent_be = bpf_cpu_to_be64(agent->key);
    __builtin_memcpy(key.agent, &agent_be, sizeof(agent_be));
    if (abstract) {
        key.kind = TF_UNIX_ABSTRACT;
        name[0] = (__u8)(length - 1); /* the name's length, in place of its leading NUL */
    } else {
        key.kind = TF_UNIX_PATH;
        if (!canonical_path(name)) return refuse(TF_COUNT_REFUSED_UNIX);
    }
    __builtin_memcpy(key.name, name, TF_UNIX_NAME_MAX);
    if (!bpf_map_lookup_elem(&tf_unix_allow, &key)) return refuse(TF_COUNT_REFUSED_UNIX);
    return 1;
}

SEC("cgroup/connect_unix")
int tf_connect_unix(struct bpf_sock_addr* ctx) {
    return allow_unix(ctx);
}

/* A datagram with an address; one without goes to the connected peer, which
 * connect_unix checked. */
SEC("cgroup/sendmsg_unix")
int tf_sendmsg_unix(struct bpf_sock_addr* ctx) {
    return allow_unix(ctx);
}

/* Packets reach the subtree's sockets from loopback only. The bind hooks
 * see bind(2) alone: listen() on an unbound TCP socket and sendto() on an
 * unbound UDP socket bind the any-address with no hook in the way, which in
 * `cgroup` isolation (the host's network namespace) listens on every
 * interface of the host, and whoever connects in could fetch data.
 *
 * The program runs as a packet is delivered to a socket created in the
 * subtree (TCP: before the listener or connection sees it, so a dropped SYN
 * makes no connection; UDP: before the datagram is queued). It goes by the
 * socket's cgroup, not the current task's (in softirq that is whatever
 * ran), so it cannot look up a registration, and need not: no socket of the
 * subtree, registered or not, is to be reached from outside.
 *
 * skb->ifindex is the device the packet arrived on (skb->dev; 0 without
 * one, which is dropped too). Traffic between local sockets arrives on
 * loopback even when addressed to another of the host's addresses (local
 * routes deliver through lo), so the proxy's connections, the DNS stub's
 * replies and local clients pass; packets from any other interface (and
 * multicast looped back from one) do not. Loopback is ifindex 1 in every
 * network namespace (LOOPBACK_IFINDEX, a kernel constant not in the BTF). */
#define TF_LOOPBACK_IFINDEX 1

SEC("cgroup_skb/ingress")
int tf_ingress(struct __sk_buff* skb) {
    if (skb->ifindex == TF_LOOPBACK_IFINDEX) return 1;
    return refuse(TF_COUNT_REFUSED_INGRESS);
}
