// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * xdp_gen.bpf.c: the two XDP programs of the frames generator (c/xdp_gen.c).
 *
 * xdp_gen_send is never attached: xdp_gen runs it with BPF_PROG_RUN in live-frames mode
 * (BPF_F_TEST_XDP_LIVE_FRAMES), where its XDP_TX transmits the frame out of the generator's
 * veth, once per trial for as long as the trial lasts. It paces itself: frames go out when
 * the clock says they are due (rate x time since the start), every other run returns XDP_DROP,
 * which sends nothing (setting up a run costs milliseconds, so one run per burst cannot pace).
 * Due frames go out together, as a NIC's interrupt moderation delivers them: once BURST are
 * due, or once the oldest has waited COALESCE_NS (at 100,000 pps, bursts of 5). Sent one by
 * one, each frame would wake the target's NAPI thread on its own, a context switch a frame
 * that no NIC costs. A deficit beyond BURST (after a preemption) is skipped and counted (where
 * geneve_gen would catch up in one long burst), so the offered rate shows it. A frame
 * gets the whole header (Ethernet, outer IPv4 and UDP, Geneve with options, inner IPv4 and UDP)
 * from the `template` map every time, because the kernel hands the program recycled pages
 * that may hold an earlier frame (a reply the target swapped), and then the next flow's stamp.
 *
 * xdp_gen_count is attached to the generator's end of the pair: it counts every Geneve reply
 * (UDP to port 6081) in `replies` and drops it; anything else (ARP above all) goes to the
 * kernel.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define HEADER_LEN 110 /* Ethernet 14, IPv4 20, UDP 8, Geneve 8 + 32 of options, IPv4 20, UDP 8 */
#define INNER_IP 82
#define COOKIE 78     /* the flow cookie option's value: the last 4 bytes of the options */
#define FLOWS_PER_ADDRESS 60000
#define BURST 64               /* frames; as the kernel's batch (xdp_gen.c), flushed together */
#define COALESCE_NS 50000ULL   /* the longest a due frame waits for others */

struct template {
	__u8 header[HEADER_LEN];
	__u16 pad;
	__u32 flows;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct template);
} template SEC(".maps");

/* One trial, written by xdp_gen before the run (CLOCK_MONOTONIC, as bpf_ktime_get_ns). One run
 * at a time uses it, on whichever CPU (BPF_PROG_RUN may migrate between batches): not per CPU. */
struct pace {
	__u64 start_ns;
	__u64 stop_ns;
	__u64 rate;     /* frames per second */
	__u64 due;      /* frames scheduled so far: sent + skipped */
	__u64 sent;
	__u64 skipped;  /* due while the program could not run, beyond BURST */
	__u32 flow;     /* the next frame's flow */
	__u32 bursting; /* sending what is due */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pace);
} trial_pace SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} replies SEC(".maps");

static __always_inline __u16 ip_checksum(const __u16 *header)
{
	__u32 sum = 0;

#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += header[i];
	sum = (sum & 0xFFFF) + (sum >> 16);
	sum = (sum & 0xFFFF) + (sum >> 16);
	return (__u16)~sum;
}

SEC("xdp")
int xdp_gen_send(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct template *t = bpf_map_lookup_elem(&template, &zero);
	struct pace *pace = bpf_map_lookup_elem(&trial_pace, &zero);
	__u8 *p = data;
	__u64 now, due;

	if (!t || !pace || data + HEADER_LEN > data_end)
		return XDP_ABORTED;
	now = bpf_ktime_get_ns();
	if (now >= pace->stop_ns || now < pace->start_ns)
		return XDP_DROP;
	due = (now - pace->start_ns) * pace->rate / 1000000000ULL;
	if (due <= pace->due) {
		pace->bursting = 0;
		return XDP_DROP;
	}
	if (!pace->bursting) {
		/* When the oldest frame not yet sent became due. */
		__u64 oldest_ns = pace->start_ns + (pace->due + 1) * 1000000000ULL / pace->rate;

		if (due - pace->due < BURST && now < oldest_ns + COALESCE_NS)
			return XDP_DROP;
		pace->bursting = 1;
	}
	if (due > pace->due + BURST) {
		pace->skipped += due - pace->due - BURST;
		pace->due = due - BURST;
	}
	pace->due++;
	pace->sent++;
	__builtin_memcpy(p, t->header, HEADER_LEN);

	__u32 flow = pace->flow;
	pace->flow = flow + 1 >= t->flows ? 0 : flow + 1;
	__u8 *ip = p + INNER_IP;
	*(__u32 *)(p + COOKIE) = bpf_htonl(flow);
	*(__u32 *)(ip + 12) = bpf_htonl(0xC6130000u + 1 + flow / FLOWS_PER_ADDRESS); /* 198.19.x.y */
	*(__u16 *)(ip + 20) = bpf_htons(1024 + flow % FLOWS_PER_ADDRESS);
	*(__u16 *)(ip + 10) = 0;
	*(__u16 *)(ip + 10) = ip_checksum((const __u16 *)ip);
	return XDP_TX;
}

SEC("xdp.frags") /* the veth has an MTU of 9000 */
int xdp_gen_count(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (struct iphdr *)(eth + 1);
	struct udphdr *udp = (struct udphdr *)(ip + 1);
	__u32 zero = 0;
	__u64 *count;

	if ((void *)(udp + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5 ||
	    ip->protocol != IPPROTO_UDP || udp->dest != bpf_htons(6081))
		return XDP_PASS;
	count = bpf_map_lookup_elem(&replies, &zero);
	if (count)
		*count += 1;
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
