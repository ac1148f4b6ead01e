// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The agent's XDP fast path: Geneve from the GWLB, for a flow whose verdict the agent has put in
 * flow_verdicts, is answered here (allow: XDP_TX with the reply the agent itself would send) or
 * dropped (deny: XDP_DROP). Everything else goes to the agent unchanged (XDP_PASS): the first
 * packet of a flow, TCP SYN/FIN/RST (the agent's flow table opens and closes flows on them),
 * ICMP errors (counted with the flow they quote), fragments, IP options, a non-zero outer UDP
 * checksum that is wrong or in a multi-buffer frame (the kernel drops the wrong ones, as it would
 * for the agent's socket; a right one is verified here), the O bit, the C bit when the agent honours it, option
 * TLVs that do not tile the option area, a verdict whose counters slot is not in flow_slots (an
 * agent bug), anything it cannot parse and anything not Geneve to the agent from the GWLB's
 * networks. Passing is always correct: the agent decides as it does without
 * this program.
 *
 * The reply is the agent's (agent/gwlb_agent/batchio.py): the datagram byte for byte, the outer
 * IPv4 addresses swapped, UDP ports unchanged (from the GWLB's source port to 6081), UDP checksum
 * 0, and an IPv4 header as the kernel completes the agent's raw-socket template: TOS 0, id 0 (DF
 * set and no connected socket: ip_select_ident_segs), DF, TTL 64. The Ethernet addresses are
 * swapped so the frame goes back to the router it came from.
 *
 * Only UAPI headers: compiled ahead of time (clang -target bpf), no kernel headers or compiler
 * where the agent runs. Multi-buffer aware (xdp.frags) so that jumbo frames stay on the fast
 * path: every header it reads sits in the first buffer, lengths come from bpf_xdp_get_buff_len.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include "geneve_common.h"

#define GENEVE_PROTO_ETHERNET 0x6558
#define GENEVE_OPTIONS_MAX 252 /* 6-bit length in 4-byte words */
#define INNER_VLAN_TAGS_MAX 2
#define IP_DF 0x4000
#define REPLY_TTL 64
#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04

#define VERDICT_ALLOW 1
#define VERDICT_DENY 2

/* Indices of the per-CPU stats array; agent/gwlb_agent/xdp/maps.py names them. */
enum stat {
	STAT_TX_PACKETS,
	STAT_TX_BYTES,
	STAT_DENY_PACKETS,
	STAT_DENY_BYTES,
	STAT_PASS_NO_VERDICT, /* Geneve from the GWLB the agent has no verdict for (yet) */
	STAT_PASS_UNHANDLED, /* Geneve from the GWLB this program leaves to the agent */
	STAT_PASS_OTHER, /* not Geneve to the agent from the GWLB */
	STAT_COUNT,
};

/* The agent's flow key (flowtable.py): inner addresses and ports as on the wire, by protocol. */
struct flow_key {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 protocol;
	__u8 pad[3];
};

struct flow_counters {
	__u64 packets;
	__u64 bytes; /* inner IPv4 total length, as the agent counts */
	__u64 last_seen_ns; /* CLOCK_MONOTONIC as of the last tick (bpf_ktime_get_coarse_ns) */
	__u64 tcp_flags; /* OR of every packet's */
};

struct xdp_config {
	__u32 local_addr; /* the agent's listen address, network order; 0: any */
	__u32 max_inner; /* the agent's max_inner: larger inner packets go to it */
	__u32 honour_critical; /* the agent drops C-bit packets: leave them to it */
	__u16 port; /* the agent's listen port, network order (6081) */
	__u16 pad;
	__u32 generation; /* the agent's policy generation: verdicts of another one are stale */
	struct gwlb_prefixes gwlb; /* the GWLB's networks; more than GWLB_PREFIXES_INLINE: the trie */
};

/* A flow direction's verdict, valid while its generation is the configuration's: a policy reload
 * is one write of the configuration, not a walk over a million entries. slot: the direction's
 * counters in flow_slots, which the agent allocates with the verdict (a pair a flow). */
struct flow_verdict {
	__u32 action;
	__u32 generation;
	__u32 slot;
	/* A fingerprint of the entry's own key (key_fingerprint), checked after the fields above are
	 * read: a preallocated hash element that the agent deletes goes back to the free list at
	 * once, and an insert may reuse it for another flow while a run on another CPU still reads
	 * it. A fingerprint that is not the packet's says so, and the packet goes to the agent
	 * instead of taking another flow's verdict. Not a copy of the whole key: with 16 bytes more
	 * in every entry the fast path's rate fell by half on the bench (scripts/bench/README.md). */
	__u32 key_check;
};

/* maps.py key_fingerprint computes the same: the key's four words, each multiplied by an odd
 * constant (so that swapped addresses or ports differ), xored. */
static __always_inline __u32 key_fingerprint(const struct flow_key *key)
{
	const __u32 *word = (const __u32 *)key;

	return (word[0] * 0x9E3779B1u) ^ (word[1] * 0x85EBCA77u) ^ (word[2] * 0xC2B2AE3Du) ^
	       (word[3] * 0x27D4EB2Fu);
}

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 20);
	__type(key, struct flow_key);
	__type(value, struct flow_verdict);
} flow_verdicts SEC(".maps");

/* Per-CPU counters by slot, two a flow (one a direction): an array lookup (inlined by the
 * verifier), never an insert: a packet this program answers or drops is always counted. The
 * agent reuses a slot only after zeroing it, and not before a packet that read the old verdict
 * can have counted. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1 << 20);
	__type(key, __u32);
	__type(value, struct flow_counters);
} flow_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 256);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct gwlb_prefix);
	__type(value, __u8);
} gwlb_networks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xdp_config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void count(__u32 index, __u64 amount)
{
	__u64 *value = bpf_map_lookup_elem(&stats, &index);

	if (value)
		*value += amount;
}

static __always_inline int pass(__u32 reason)
{
	count(reason, 1);
	return XDP_PASS;
}

/* Add the checksum of n bytes at *p (a multiple of 4) when they lie before data_end. */
#define CSUM_CHUNK(n)                                                                   \
	if ((const void *)(p + (n)) <= data_end) {                                       \
		__s64 partial = bpf_csum_diff(0, 0, (__be32 *)p, (n), seed);             \
		if (partial < 0)                                                         \
			return 0;                                                        \
		seed = (__u32)partial;                                                   \
		p += (n);                                                                \
	}

/* Whether a UDP checksum the sender filled is right (RFC 768: over the pseudo-header, the UDP
 * header and the payload), for a datagram that ends at data_end in one buffer. The kernel would
 * verify it before the agent's socket saw the datagram: a wrong one must not be answered here. */
static __always_inline int udp_checksum_ok(const struct iphdr *ip, const struct udphdr *udp,
					   const void *data_end)
{
	const __u8 *p = (const __u8 *)udp;
	__u32 seed = 0;

	/* 512 bytes is the most bpf_csum_diff takes at once; 8 of them cover any one-buffer frame. */
	for (int i = 0; i < 8; i++) {
		if ((const void *)(p + 512) > data_end)
			break;
		CSUM_CHUNK(512)
	}
	CSUM_CHUNK(256)
	CSUM_CHUNK(128)
	CSUM_CHUNK(64)
	CSUM_CHUNK(32)
	CSUM_CHUNK(16)
	CSUM_CHUNK(8)
	CSUM_CHUNK(4)
	if ((const void *)(p + 4) <= data_end)
		return 0; /* longer than the loop covers: left to the kernel */
	/* 0-3 bytes left, at an even offset: summed as the 16-bit words they start, zero padded. */
	__u64 sum = seed;

	if ((const void *)(p + 1) <= data_end)
		sum += p[0];
	if ((const void *)(p + 2) <= data_end)
		sum += (__u32)p[1] << 8;
	if ((const void *)(p + 3) <= data_end)
		sum += p[2];
	/* The pseudo-header, summed in the same (memory) order as the words above. */
	sum += (__u64)ip->saddr + ip->daddr + bpf_htons(IPPROTO_UDP) + udp->len;
	sum = (sum & 0xFFFFFFFF) + (sum >> 32);
	sum = (sum & 0xFFFF) + (sum >> 16);
	sum = (sum & 0xFFFF) + (sum >> 16);
	sum = (sum & 0xFFFF) + (sum >> 16);
	return sum == 0xFFFF;
}

/* Offset of the inner IPv4 header from the start of the Geneve header, or -1. */
static __always_inline int inner_ipv4_offset(const __u8 *geneve, const void *data_end, __u32 inner,
					     __u16 protocol_type)
{
	if (protocol_type == GENEVE_PROTO_IPV4)
		return inner;
	if (protocol_type != GENEVE_PROTO_ETHERNET)
		return -1;
	__u32 offset = inner + 12;

#pragma unroll
	for (int i = 0; i <= INNER_VLAN_TAGS_MAX; i++) {
		const __u8 *type = geneve + (offset & 0x1FF);

		if ((const void *)(type + 2) > data_end)
			return -1;
		__u16 ethertype = ((__u16)type[0] << 8) | type[1];

		if (ethertype == ETH_P_IP)
			return offset + 2;
		if (ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD)
			return -1;
		offset += 4;
	}
	return -1;
}

/* The inner flow key; 0 when the packet is one this program leaves to the agent. */
static __always_inline int inner_flow_key(const struct iphdr *inner, const void *data_end,
					  struct flow_key *key, __u8 *tcp_flags)
{
	const __u8 *l4 = (const __u8 *)(inner + 1);
	__u32 l4_len = bpf_ntohs(inner->tot_len) - sizeof(*inner);

	key->saddr = inner->saddr;
	key->daddr = inner->daddr;
	key->protocol = inner->protocol;
	*tcp_flags = 0;
	switch (inner->protocol) {
	case IPPROTO_TCP:
		if (l4_len < 20 || (const void *)(l4 + 20) > data_end)
			return 0;
		*tcp_flags = l4[13];
		if (*tcp_flags & (TCP_SYN | TCP_FIN | TCP_RST))
			return 0;
		break;
	case IPPROTO_UDP:
	case IPPROTO_SCTP_:
		if (l4_len < 4 || (const void *)(l4 + 4) > data_end)
			return 0;
		break;
	case IPPROTO_ICMP:
		if (l4_len < 8 || (const void *)(l4 + 8) > data_end)
			return 0;
		switch (l4[0]) {
		case 0: case 8: case 13: case 14: case 15: case 16: case 17: case 18:
			/* queries: the identifier, twice, as the agent keys them */
			__builtin_memcpy(&key->sport, l4 + 4, 2);
			__builtin_memcpy(&key->dport, l4 + 4, 2);
			return 1;
		case 3: case 4: case 5: case 11: case 12:
			return 0; /* errors: counted with the flow they quote, by the agent */
		default:
			((__u8 *)&key->sport)[0] = l4[0];
			((__u8 *)&key->sport)[1] = l4[1];
			key->dport = 0;
			return 1;
		}
	default:
		return 0;
	}
	__builtin_memcpy(&key->sport, l4, 2);
	__builtin_memcpy(&key->dport, l4 + 2, 2);
	return 1;
}

/* Count the packet in its flow direction's slot (this CPU's copy). Last seen to a tick (1-10 ms):
 * the agent compares it with idle timeouts of seconds, and the exact clock reads the TSC on every
 * packet, a sixth of this program's own cost in a profile. */
static __always_inline void count_flow(struct flow_counters *counters, __u32 bytes, __u8 tcp_flags)
{
	counters->packets += 1;
	counters->bytes += bytes;
	counters->last_seen_ns = bpf_ktime_get_coarse_ns();
	counters->tcp_flags |= tcp_flags;
}

static __always_inline void make_reply(struct ethhdr *eth, struct iphdr *ip, struct udphdr *udp)
{
	__u8 mac[ETH_ALEN];
	__u32 address = ip->saddr;

	__builtin_memcpy(mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, mac, ETH_ALEN);
	ip->saddr = ip->daddr;
	ip->daddr = address;
	ip->tos = 0;
	ip->id = 0;
	ip->frag_off = bpf_htons(IP_DF);
	ip->ttl = REPLY_TTL;
	ip->check = 0;
	ip->check = ipv4_checksum(ip);
	udp->check = 0;
}

SEC("xdp.frags")
int geneve_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 frame_len = bpf_xdp_get_buff_len(ctx);
	struct ethhdr *eth = data;
	struct iphdr *ip = (struct iphdr *)(eth + 1);
	struct udphdr *udp = (struct udphdr *)(ip + 1);
	__u8 *geneve = (__u8 *)(udp + 1);
	__u32 zero = 0;

	struct xdp_config *cfg = bpf_map_lookup_elem(&config, &zero);

	if (!cfg || (void *)(geneve + 8) > data_end)
		return pass(STAT_PASS_OTHER);
	if (eth->h_proto != bpf_htons(ETH_P_IP) || ip->version != 4 || ip->protocol != IPPROTO_UDP ||
	    udp->dest != cfg->port)
		return pass(STAT_PASS_OTHER);
	if ((cfg->local_addr && ip->daddr != cfg->local_addr) || !from_gwlb(&cfg->gwlb, &gwlb_networks, ip->saddr))
		return pass(STAT_PASS_OTHER);
	/* Outer header: no options, not a fragment, lengths exact (no trailer). */
	__u32 ip_len = bpf_ntohs(ip->tot_len);
	__u32 udp_len = bpf_ntohs(udp->len);

	if (ip->ihl != 5 || ip->frag_off & bpf_htons(IP_FRAGMENT_BITS) ||
	    frame_len != sizeof(*eth) + ip_len || udp_len != ip_len - sizeof(*ip))
		return pass(STAT_PASS_UNHANDLED);
	/* Geneve: version 0, not a control message, options that tile, an IPv4 payload. */
	__u32 datagram_len = udp_len - sizeof(*udp);
	__u32 inner = 8 + (geneve[0] & 0x3F) * 4;

	if (geneve[0] & 0xC0 || geneve[1] & 0x80 || (geneve[1] & 0x40 && cfg->honour_critical) ||
	    inner > datagram_len || !options_tile(geneve, data_end, inner))
		return pass(STAT_PASS_UNHANDLED);
	int ip_offset = inner_ipv4_offset(geneve, data_end, inner, ((__u16)geneve[2] << 8) | geneve[3]);

	if (ip_offset < 0)
		return pass(STAT_PASS_UNHANDLED);
	struct iphdr *inner_ip = (struct iphdr *)(geneve + (ip_offset & 0x1FF));

	if ((void *)(inner_ip + 1) > data_end)
		return pass(STAT_PASS_UNHANDLED);
	__u32 inner_len = bpf_ntohs(inner_ip->tot_len);

	if (inner_ip->version != 4 || inner_ip->ihl != 5 || inner_len < sizeof(*inner_ip) ||
	    (__u32)ip_offset + inner_len > datagram_len || inner_len > cfg->max_inner ||
	    inner_ip->frag_off & bpf_htons(IP_FRAGMENT_BITS))
		return pass(STAT_PASS_UNHANDLED);
	struct flow_key key = {};
	__u8 tcp_flags;

	if (!inner_flow_key(inner_ip, data_end, &key, &tcp_flags))
		return pass(STAT_PASS_UNHANDLED);
	struct flow_verdict *verdict = bpf_map_lookup_elem(&flow_verdicts, &key);

	if (!verdict)
		return pass(STAT_PASS_NO_VERDICT);
	/* Read once: the agent may rewrite the entry (a reload) while this runs. */
	__u32 action = verdict->action;
	__u32 generation = verdict->generation;
	__u32 slot = verdict->slot;
	__u32 key_check = verdict->key_check;

	if (generation != cfg->generation || (action != VERDICT_ALLOW && action != VERDICT_DENY) ||
	    key_check != key_fingerprint(&key))
		return pass(STAT_PASS_NO_VERDICT);
	/* Checked last: only a packet this program would answer or drop pays for the sum. */
	if (udp->check && (frame_len != (__u32)(data_end - data) || !udp_checksum_ok(ip, udp, data_end)))
		return pass(STAT_PASS_UNHANDLED);
	struct flow_counters *counters = bpf_map_lookup_elem(&flow_slots, &slot);

	/* A slot past the array's end is an agent bug: the packet goes to the agent, which counts
	 * it, and is counted unhandled here, so that it is never answered uncounted. */
	if (!counters)
		return pass(STAT_PASS_UNHANDLED);
	count_flow(counters, inner_len, tcp_flags);
	if (action == VERDICT_DENY) {
		count(STAT_DENY_PACKETS, 1);
		count(STAT_DENY_BYTES, datagram_len);
		return XDP_DROP;
	}
	make_reply(eth, ip, udp);
	count(STAT_TX_PACKETS, 1);
	count(STAT_TX_BYTES, datagram_len);
	return XDP_TX;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
