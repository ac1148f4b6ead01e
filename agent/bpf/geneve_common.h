/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * What geneve_xdp.c (the inline mode's XDP fast path) and geneve_tc.c (tun mode's offload) share:
 * the GWLB's networks (an inline scan of up to GWLB_PREFIXES_INLINE in the program's
 * configuration, the LPM trie beyond), the Geneve option TLVs' tiling and the IPv4 header
 * checksum. Only UAPI headers and libbpf's bpf_helpers.h/bpf_endian.h.
 */
#ifndef GENEVE_COMMON_H
#define GENEVE_COMMON_H

#include <linux/bpf.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>

#define GENEVE_PROTO_IPV4 0x0800
#define GENEVE_OPTIONS_COUNT_MAX 63 /* each option is at least 4 bytes */
#define GWLB_PREFIXES_INLINE 8
#define IP_FRAGMENT_BITS 0x3FFF
#define IPPROTO_SCTP_ 132

/* The key of a trie of the GWLB's networks (BPF_MAP_TYPE_LPM_TRIE). */
struct gwlb_prefix {
	__u32 prefixlen;
	__u32 addr;
};

/* The GWLB's networks, when there are at most GWLB_PREFIXES_INLINE of them (one or two in
 * practice), in a program's configuration: scanning them costs a few ns, a trie lookup about
 * 10-18 (BPF_PROG_TEST_RUN). More of them: count says so and the trie holds them all. The agent
 * packs it in xdp/maps.py (configure) for the XDP program, in kernel/offload.py (gwlb_prefixes)
 * for the TC ones. */
struct gwlb_prefixes {
	__u32 count;
	struct {
		__u32 addr; /* network order, host bits zero */
		__u32 mask; /* network order */
	} prefix[GWLB_PREFIXES_INLINE];
};

/* Whether an outer source address lies in one of the GWLB's networks: the inline ones, or the
 * trie when there are more. */
static __always_inline int from_gwlb(const struct gwlb_prefixes *networks, void *trie, __u32 saddr)
{
	if (networks->count > GWLB_PREFIXES_INLINE) {
		struct gwlb_prefix source = { .prefixlen = 32, .addr = saddr };

		return bpf_map_lookup_elem(trie, &source) != NULL;
	}
#pragma unroll
	for (__u32 i = 0; i < GWLB_PREFIXES_INLINE; i++) {
		if (i >= networks->count)
			break;
		if ((saddr & networks->prefix[i].mask) == networks->prefix[i].addr)
			return 1;
	}
	return 0;
}

/* The checksum of a 20-byte IPv4 header: the value for its check field when that is 0, and 0
 * when the header's own check field is right. */
static __always_inline __u16 ipv4_checksum(const struct iphdr *ip)
{
	const __u16 *word = (const __u16 *)ip;
	__u32 sum = 0;

#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += word[i];
	sum = (sum & 0xFFFF) + (sum >> 16);
	sum = (sum & 0xFFFF) + (sum >> 16);
	return (__u16)~sum;
}

/* Option TLVs must tile [8, end) exactly, as geneve.validate_options checks. */
static __always_inline int options_tile(const __u8 *geneve, const void *data_end, __u32 end)
{
	__u32 offset = 8;

	/* A bounded loop (the verifier proves it ends), not unrolled: 63 copies would be large. */
	for (int i = 0; i < GENEVE_OPTIONS_COUNT_MAX; i++) {
		if (offset >= end)
			break;
		if (end - offset < 4)
			return 0;
		const __u8 *option = geneve + (offset & 0x1FF);

		if ((const void *)(option + 4) > data_end)
			return 0;
		offset += 4 + (option[3] & 0x1F) * 4;
	}
	return offset == end;
}

#endif /* GENEVE_COMMON_H */
