// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * xdp_reflector: the XDP reference target. UDP to 6081 goes straight back: Ethernet and IPv4
 * addresses swapped (the IPv4 checksum is unchanged by a swap), ports and payload as they came,
 * XDP_TX. Nothing else: no parsing past UDP, no maps, no counters. What the agent's XDP fast
 * path would cost with no per-packet work of its own.
 *
 * Built twice: as is (xdp_reflector.o) and with -DPASS_ONLY (xdp_pass.o, XDP_PASS for every
 * frame), which the benchmark attaches to the generator's side of each XDP target's veth pair:
 * a veth delivers XDP_TX frames to its peer only while the peer has an XDP program.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

SEC("xdp.frags")
int xdp_reflect(struct xdp_md *ctx)
{
#ifdef PASS_ONLY
	return XDP_PASS;
#else
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (struct iphdr *)(eth + 1);
	struct udphdr *udp = (struct udphdr *)(ip + 1);
	__u8 mac[ETH_ALEN];
	__u32 address;

	if ((void *)(udp + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5 ||
	    ip->protocol != IPPROTO_UDP || udp->dest != bpf_htons(6081))
		return XDP_PASS;
	__builtin_memcpy(mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, mac, ETH_ALEN);
	address = ip->saddr;
	ip->saddr = ip->daddr;
	ip->daddr = address;
	return XDP_TX;
#endif
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
