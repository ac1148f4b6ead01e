// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Tun mode's Geneve offload: two TC programs that take the Geneve header off and put it back in
 * the kernel for flows whose header the agent has learned, while every packet still enters the
 * kernel through the tun device and so goes through the appliance's own ruleset and conntrack.
 *
 * tun_decap (TC ingress, the data interface): Geneve to the agent's address and port from the
 * GWLB's networks whose flow is in tun_flows with the very header that arrives (GWLB node, its
 * source port, the Geneve header and options byte for byte) loses its outer IPv4+UDP+Geneve
 * headers and is redirected to the tun's ingress (bpf_redirect, BPF_F_INGRESS): the kernel takes
 * it as the agent's write() gives it, the bare inner IPv4 packet arriving on the tun (iif tun,
 * PACKET_HOST, no conntrack entry attached, no checksum state: skb_scrub_packet and the
 * adjust_room checksum reset), so the agent's `iif <tun>` rule routes it the same way.
 *
 * tun_encap (TC egress, the tun, an L3 device: the skb starts at the IPv4 header): a forwarded
 * packet whose flow is in tun_flows gets the stored header in front (outer IPv4+UDP to the GWLB
 * node, then the Geneve header as received) with its lengths and IPv4 checksum filled in, and is
 * redirected out of the data interface with bpf_redirect_neigh (route and neighbour lookup fill
 * in L2, as for the agent's raw socket). The datagram is the agent's byte for byte: TOS 0, id 0
 * (DF set: ip_select_ident leaves it 0 on a raw socket), DF, TTL 64, UDP checksum 0, the source
 * address the route to the GWLB node picks (the agent stores it so).
 *
 * Everything else is passed on (TC_ACT_UNSPEC: to the next filter on the hook, then up the stack),
 * and the agent's socket, or its read of the tun, gets it as without this program: a flow not
 * (yet) in the map, a changed header (the agent must see it and learn it
 * again), the Ethernet protocol type, the O bit, the C bit when the agent honours it, option TLVs
 * that do not tile, IP options or fragments (outer or inner), a non-zero outer UDP checksum (the
 * GWLB sends 0; a sender that fills it in gets the kernel's check on the agent's socket instead of
 * a sum over the whole datagram here), GSO packets, inner packets larger than max_inner, ICMP
 * errors (the agent keys them by the flow they quote) and anything not TCP, UDP, SCTP or an
 * ICMP query. Passing is always correct.
 *
 * Only UAPI headers and libbpf's bpf_helpers.h/bpf_endian.h, like geneve_xdp.c: built ahead of
 * time, loaded by agent/gwlb_agent/kernel/offload.py.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include "geneve_common.h"

#define GENEVE_LEN_MAX (8 + 252) /* base header and a 6-bit length in 4-byte words of options */
#define OUTER_LEN (sizeof(struct iphdr) + sizeof(struct udphdr)) /* 28 */
#define HEADER_MAX (OUTER_LEN + GENEVE_LEN_MAX) /* 288 */
#define HEADER_MIN (OUTER_LEN + 8)
#define LAST_USED_STEP_NS 1000000000ULL /* last_used is written at most once a second */
/* "Not mine": the next filter on the hook runs (another agent's, the operator's), and after the
 * last one the packet goes on as if none had run. TC_ACT_OK would end the hook's filters here. */
#define PASS TC_ACT_UNSPEC

/* Indices of the per-CPU stats array; agent/gwlb_agent/kernel/offload.py names them. */
enum stat {
	STAT_DECAP, /* decapsulated and redirected into the tun */
	STAT_ENCAP, /* encapsulated and redirected out of the data interface */
	STAT_DECAP_PASS_OTHER, /* not Geneve to the agent from the GWLB */
	STAT_DECAP_PASS_UNHANDLED, /* Geneve of a kind this program leaves to the agent */
	STAT_DECAP_PASS_UNKNOWN, /* a flow not in tun_flows */
	STAT_DECAP_PASS_CHANGED, /* in tun_flows with another header: the agent learns the new one */
	STAT_DECAP_PASS_FAILED, /* a helper refused (adjust_room): the agent has it */
	STAT_ENCAP_PASS_UNHANDLED, /* not a packet this program keys (fragment, ICMP error, ...) */
	STAT_ENCAP_PASS_UNKNOWN, /* a flow not in tun_flows: the agent reads it from the tun */
	STAT_ENCAP_FAILED, /* a helper refused after the head was grown: dropped */
	STAT_ENCAP_PASS_FAILED, /* change_head refused: the agent reads it from the tun */
	STAT_DECAP_BYTES, /* of STAT_DECAP: the UDP payload (Geneve header and inner packet), the
			   * agent's bytes_in for a datagram */
	STAT_ENCAP_BYTES, /* of STAT_ENCAP: the UDP payload sent, the agent's bytes_out */
	STAT_COUNT,
};

/* tun.py's directed key (_flow_key): protocol, addresses and ports as on the wire; an ICMP
 * query's identifier twice. */
struct tun_key {
	__u8 protocol;
	__u8 pad[3];
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
};

/* The header that goes back in front of the flow's packets: outer IPv4 (lengths and checksum 0:
 * filled in per packet) and UDP addressed to the GWLB node, then the Geneve header and options as
 * received. The arriving header must equal header[OUTER_LEN:length] for the flow to be decapsulated
 * here. */
struct tun_flow {
	__u64 last_used; /* CLOCK_MONOTONIC, at most a second old while packets arrive */
	__u32 length; /* of header: OUTER_LEN + the Geneve header with its options */
	__u32 pad;
	/* The entry's own key. A preallocated hash element the agent deletes or replaces goes back
	 * to the free list at once, and its next insert may reuse it for another flow while a run
	 * still reads it: tun_encap copies the entry first and checks the copy's key, so that a
	 * packet never leaves with another flow's header (tun_decap needs no check: a header that
	 * is not the packet's own does not match, and what it takes off is the packet's own). */
	struct tun_key key;
	__u8 header[HEADER_MAX];
};

struct tun_config {
	__u32 local_addr; /* the agent's listen address, network order; 0: any */
	__u32 max_inner; /* the agent's max_inner_size: larger inner packets go to it */
	__u32 tun_ifindex; /* where decapsulated packets enter the kernel */
	__u32 data_ifindex; /* where encapsulated packets leave */
	__u32 honour_critical; /* the agent drops C-bit packets: leave them to it */
	__u16 port; /* the agent's listen port, network order */
	__u16 l3_offset; /* bytes before the IPv4 header at tun_encap: 0 on a tun; BPF_PROG_TEST_RUN
			  * always hands in an Ethernet frame (14) */
	struct gwlb_prefixes gwlb; /* the GWLB's networks; more than GWLB_PREFIXES_INLINE: the trie */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 131072);
	__type(key, struct tun_key);
	__type(value, struct tun_flow);
} tun_flows SEC(".maps");

/* tun_encap's copy of the entry it is putting on a packet (a per-CPU scratch: 320 bytes are too
 * many for the stack beside the rest). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tun_flow);
} encap_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 256);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct gwlb_prefix);
	__type(value, __u8);
} tun_gwlb_networks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tun_config);
} tun_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} tun_stats SEC(".maps");

static __always_inline int count(__u32 index, int action)
{
	__u64 *value = bpf_map_lookup_elem(&tun_stats, &index);

	if (value)
		*value += 1;
	return action;
}

/* A packet carried (index) and its bytes (bytes_index). */
static __always_inline int count_carried(__u32 index, __u32 bytes_index, __u32 bytes, int action)
{
	__u64 *value = bpf_map_lookup_elem(&tun_stats, &bytes_index);

	if (value)
		*value += bytes;
	return count(index, action);
}

/* The key of an inner IPv4 packet without options and not a fragment; 0 when it is not one of a
 * TCP/UDP/SCTP flow or an ICMP query (the packets tun.py keys by _flow_key). */
static __always_inline int inner_key(const struct iphdr *ip, const void *data_end, struct tun_key *key)
{
	const __u8 *l4 = (const __u8 *)(ip + 1);
	__u32 l4_len = bpf_ntohs(ip->tot_len) - sizeof(*ip);

	key->protocol = ip->protocol;
	key->saddr = ip->saddr;
	key->daddr = ip->daddr;
	switch (ip->protocol) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case IPPROTO_SCTP_:
		if (l4_len < 4 || (const void *)(l4 + 4) > data_end)
			return 0;
		__builtin_memcpy(&key->sport, l4, 2);
		__builtin_memcpy(&key->dport, l4 + 2, 2);
		return 1;
	case IPPROTO_ICMP:
		if (l4_len < 8 || (const void *)(l4 + 8) > data_end)
			return 0;
		switch (l4[0]) {
		case 0: case 8: case 13: case 14: case 15: case 16: case 17: case 18:
			__builtin_memcpy(&key->sport, l4 + 4, 2);
			__builtin_memcpy(&key->dport, l4 + 4, 2);
			return 1;
		default:
			return 0; /* errors quote another flow; other types are rare: the agent's */
		}
	default:
		return 0;
	}
}

/* Whether the arriving Geneve header (length bytes, a multiple of 4) is the stored one. */
static __always_inline int same_geneve(const __u8 *geneve, const void *data_end, const struct tun_flow *flow,
				       __u32 length)
{
	for (__u32 i = 0; i < GENEVE_LEN_MAX / 4; i++) {
		__u32 offset = i * 4;

		if (offset >= length)
			break;
		const __u8 *word = geneve + offset;

		if ((const void *)(word + 4) > data_end)
			return 0;
		if (__builtin_memcmp(word, flow->header + OUTER_LEN + offset, 4))
			return 0;
	}
	return 1;
}

/* Headers read straight from the packet: Ethernet, outer IPv4 and UDP, the largest Geneve
 * header, inner IPv4 and 8 bytes of L4 (ICMP's identifier). */
#define DECAP_LINEAR (ETH_HLEN + OUTER_LEN + GENEVE_LEN_MAX + sizeof(struct iphdr) + 8)
#define OUTER_START (ETH_HLEN + OUTER_LEN) /* Ethernet, outer IPv4 and UDP: what other traffic is judged on */

SEC("tc")
int tun_decap(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct tun_config *cfg = bpf_map_lookup_elem(&tun_config, &zero);

	/* Only frames addressed to this host (the kernel drops the others before ip_rcv). */
	if (!cfg || skb->protocol != bpf_htons(ETH_P_IP) || skb->vlan_present || skb->pkt_type != PACKET_HOST ||
	    skb->len < OUTER_START)
		return count(STAT_DECAP_PASS_OTHER, PASS);
	/* Other traffic on the interface is judged on its outer headers, which drivers put in the
	 * linear part; only Geneve from the GWLB pays for a pull of the rest of its headers. */
	if ((long)skb->data + (long)OUTER_START > (long)skb->data_end && bpf_skb_pull_data(skb, OUTER_START))
		return count(STAT_DECAP_PASS_FAILED, PASS);
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (struct iphdr *)(eth + 1);
	struct udphdr *udp = (struct udphdr *)(ip + 1);

	if ((void *)(udp + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->version != 4 ||
	    ip->protocol != IPPROTO_UDP || udp->dest != cfg->port ||
	    (cfg->local_addr && ip->daddr != cfg->local_addr))
		return count(STAT_DECAP_PASS_OTHER, PASS);
	if (!from_gwlb(&cfg->gwlb, &tun_gwlb_networks, ip->saddr))
		return count(STAT_DECAP_PASS_OTHER, PASS);
	/* Outer: no options, a right header checksum (ip_rcv has not checked it yet: a wrong one is
	 * the kernel's to drop), not a fragment, lengths exact (no trailer), no UDP checksum, not
	 * GSO. */
	__u32 ip_len = bpf_ntohs(ip->tot_len);
	__u32 udp_len = bpf_ntohs(udp->len);

	if (ip->ihl != 5 || ipv4_checksum(ip) != 0 || ip->frag_off & bpf_htons(IP_FRAGMENT_BITS) ||
	    skb->len != ETH_HLEN + ip_len || udp_len != ip_len - sizeof(*ip) || udp->check || skb->gso_size)
		return count(STAT_DECAP_PASS_UNHANDLED, PASS);
	__u32 want = skb->len < DECAP_LINEAR ? skb->len : DECAP_LINEAR;

	if ((long)skb->data + want > (long)skb->data_end && bpf_skb_pull_data(skb, want))
		return count(STAT_DECAP_PASS_FAILED, PASS);
	/* A pull moves the data: every pointer is taken again. */
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	ip = (struct iphdr *)(data + ETH_HLEN);
	udp = (struct udphdr *)(ip + 1);
	__u8 *geneve = (__u8 *)(udp + 1);

	if ((void *)(geneve + 8) > data_end)
		return count(STAT_DECAP_PASS_UNHANDLED, PASS);
	/* Geneve: version 0, not a control message, IPv4 inside, options that tile. */
	__u32 geneve_len = 8 + (geneve[0] & 0x3F) * 4;

	if (geneve[0] & 0xC0 || geneve[1] & 0x80 || (geneve[1] & 0x40 && cfg->honour_critical) ||
	    geneve[2] != (GENEVE_PROTO_IPV4 >> 8) || geneve[3] != (GENEVE_PROTO_IPV4 & 0xFF) ||
	    !options_tile(geneve, data_end, geneve_len))
		return count(STAT_DECAP_PASS_UNHANDLED, PASS);
	struct iphdr *inner = (struct iphdr *)(geneve + (geneve_len & 0x1FF));

	if ((void *)(inner + 1) > data_end)
		return count(STAT_DECAP_PASS_UNHANDLED, PASS);
	__u32 inner_len = bpf_ntohs(inner->tot_len);

	/* Exactly the datagram's rest: the agent writes total-length bytes; nothing else may enter. */
	if (inner->version != 4 || inner->ihl != 5 || inner->frag_off & bpf_htons(IP_FRAGMENT_BITS) ||
	    inner_len != udp_len - sizeof(*udp) - geneve_len || inner_len > cfg->max_inner)
		return count(STAT_DECAP_PASS_UNHANDLED, PASS);
	struct tun_key key = {};

	if (!inner_key(inner, data_end, &key))
		return count(STAT_DECAP_PASS_UNHANDLED, PASS);
	struct tun_flow *flow = bpf_map_lookup_elem(&tun_flows, &key);

	if (!flow)
		return count(STAT_DECAP_PASS_UNKNOWN, PASS);
	const struct iphdr *stored_ip = (const struct iphdr *)flow->header;
	const struct udphdr *stored_udp = (const struct udphdr *)(flow->header + sizeof(struct iphdr));

	if (flow->length != OUTER_LEN + geneve_len || stored_ip->daddr != ip->saddr ||
	    stored_udp->source != udp->source || !same_geneve(geneve, data_end, flow, geneve_len))
		return count(STAT_DECAP_PASS_CHANGED, PASS);
	/* The agent keeps a flow's header while the kernel carries it; written once a second at most,
	 * so that the line is not bounced between CPUs by every packet. */
	__u64 now = bpf_ktime_get_ns(); /* not the coarse clock: that needs 5.11, Alibaba Cloud Linux 3 runs 5.10 */

	if (now - flow->last_used > LAST_USED_STEP_NS)
		flow->last_used = now;
	/* Off with outer IPv4, UDP and Geneve; the Ethernet header stays for the redirect to pull.
	 * adjust_room resets CHECKSUM_UNNECESSARY: the inner checksums are checked as after write(). */
	if (bpf_skb_adjust_room(skb, -(__s32)(OUTER_LEN + geneve_len), BPF_ADJ_ROOM_MAC, 0))
		return count(STAT_DECAP_PASS_FAILED, PASS);
	return count_carried(STAT_DECAP, STAT_DECAP_BYTES, udp_len - sizeof(struct udphdr),
			     bpf_redirect(cfg->tun_ifindex, BPF_F_INGRESS));
}

SEC("tc")
int tun_encap(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct tun_config *cfg = bpf_map_lookup_elem(&tun_config, &zero);

	if (!cfg || skb->protocol != bpf_htons(ETH_P_IP) || skb->gso_size)
		return count(STAT_ENCAP_PASS_UNHANDLED, PASS);
	__u32 l3 = cfg->l3_offset & 0x3F;
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = (struct iphdr *)(data + l3);

	if ((void *)(ip + 1) > data_end)
		return count(STAT_ENCAP_PASS_UNHANDLED, PASS);
	__u32 inner_len = bpf_ntohs(ip->tot_len);
	struct tun_key key = {};

	if (ip->version != 4 || ip->ihl != 5 || ip->frag_off & bpf_htons(IP_FRAGMENT_BITS) ||
	    skb->len != l3 + inner_len || !inner_key(ip, data_end, &key))
		return count(STAT_ENCAP_PASS_UNHANDLED, PASS);
	struct tun_flow *entry = bpf_map_lookup_elem(&tun_flows, &key);
	struct tun_flow *flow = bpf_map_lookup_elem(&encap_scratch, &zero);

	if (!entry || !flow)
		return count(STAT_ENCAP_PASS_UNKNOWN, PASS);
	__builtin_memcpy(flow, entry, sizeof(*flow));
	const __u64 *own = (const __u64 *)&flow->key;
	const __u64 *wanted = (const __u64 *)&key;

	if (own[0] != wanted[0] || own[1] != wanted[1])
		return count(STAT_ENCAP_PASS_UNKNOWN, PASS); /* reused for another flow under this run */
	__u32 length = flow->length;

	if (length < HEADER_MIN || length > HEADER_MAX || inner_len + length > 0xFFFF)
		return count(STAT_ENCAP_PASS_UNHANDLED, PASS);
	/* An L3 skb: change_head grows the head and makes it the MAC header. 14 bytes more than the
	 * header, a blank Ethernet header: bpf_redirect_neigh pulls one and routes by the IPv4 header
	 * after it, ours (adjust_room at MAC would leave the network header on the inner packet). */
	if (bpf_skb_change_head(skb, ETH_HLEN + length, 0))
		return count(STAT_ENCAP_PASS_FAILED, PASS);
	if (bpf_skb_store_bytes(skb, ETH_HLEN, flow->header, length, 0))
		return count(STAT_ENCAP_FAILED, TC_ACT_SHOT);
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *outer = (struct iphdr *)(eth + 1);
	struct udphdr *udp = (struct udphdr *)(outer + 1);

	if ((void *)(udp + 1) > data_end)
		return count(STAT_ENCAP_FAILED, TC_ACT_SHOT);
	eth->h_proto = bpf_htons(ETH_P_IP);
	outer->tot_len = bpf_htons(length + inner_len);
	udp->len = bpf_htons(length - sizeof(*outer) + inner_len);
	outer->check = 0;
	outer->check = ipv4_checksum(outer);
	/* The forwarded packet's mark (the ruleset's) must not steer the outer route: the agent's
	 * raw socket sends with none. */
	skb->mark = 0;
	return count_carried(STAT_ENCAP, STAT_ENCAP_BYTES, length - OUTER_LEN + inner_len,
			     bpf_redirect_neigh(cfg->data_ifindex, NULL, 0, 0));
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
