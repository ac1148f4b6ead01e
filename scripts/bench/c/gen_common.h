/*
 * gen_common.h: what the two generators (geneve_gen.c, xdp_gen.c) share: the datagram they send,
 * the clock, and waiting for the reply count to settle.
 */
#ifndef GEN_COMMON_H
#define GEN_COMMON_H

#include <stdint.h>
#include <string.h>
#include <time.h>

#define GENEVE_LEN 40        /* 8-byte base header + 32 bytes of options */
#define FLOWS_PER_ADDRESS 60000
#define SETTLE_POLL_NS 20000000L /* 20 ms between counter reads while waiting for quiet */

static double now_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void sleep_ns(long ns) {
    struct timespec t = {ns / 1000000000L, ns % 1000000000L};
    nanosleep(&t, NULL);
}

static uint16_t ip_checksum(const uint8_t *header) {
    uint32_t sum = 0;
    for (int i = 0; i < 20; i += 2)
        sum += (uint32_t)(header[i] << 8 | header[i + 1]);
    while (sum >> 16)
        sum = (sum & 0xFFFF) + (sum >> 16);
    return (uint16_t)~sum;
}

static void put16(uint8_t *p, unsigned v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static void put32(uint8_t *p, uint32_t v) { put16(p, v >> 16); put16(p + 2, v & 0xFFFF); }

/* The Geneve datagram at p, as a GWLB sends it, but for the flow's own fields (see the
 * generators' set_flow): the parts that are the same for every flow. */
static void build_geneve(uint8_t *p, int size) {
    memset(p, 0, GENEVE_LEN + size);
    p[0] = (GENEVE_LEN - 8) / 4; /* version 0, options length in 4-byte words */
    put16(p + 2, 0x0800);        /* inner protocol IPv4; VNI 0 */
    uint8_t *o = p + 8;
    /* class 0x0108, type 1 endpoint id, 2 words */
    put16(o, 0x0108); o[2] = 1; o[3] = 2; put32(o + 4, 0x00000001); put32(o + 8, 0xBE4C0001); o += 12;
    /* class 0x0108, type 2 attachment id, 2 words */
    put16(o, 0x0108); o[2] = 2; o[3] = 2; put32(o + 4, 0x00000002); put32(o + 8, 0xA77AC002); o += 12;
    /* class 0x0108, type 3 flow cookie, 1 word: set per flow */
    put16(o, 0x0108); o[2] = 3; o[3] = 1;
    uint8_t *ip = p + GENEVE_LEN;
    ip[0] = 0x45;
    put16(ip + 2, (unsigned)size);
    ip[8] = 64;
    ip[9] = 17; /* UDP */
    put32(ip + 16, 0xC6120202); /* 198.18.2.2, the "application server" */
    uint8_t *udp = ip + 20;
    put16(udp + 2, 80);
    put16(udp + 4, (unsigned)size - 20);
    /* UDP checksum 0: none, which IPv4 allows; nothing on the path verifies it. */
}

/*
 * Wait until the reply counter stops moving (unchanged over `quiet_ns`), at most `limit_s`.
 * Before a trial: replies still draining from the previous trial's backlog must not be counted
 * in this one. After a trial: replies of datagrams queued at the target arrive late but count.
 */
static long settle(long (*replies)(void), long quiet_ns, double limit_s) {
    double deadline = now_seconds() + limit_s;
    long last = replies();
    long still = 0;
    while (still < quiet_ns && now_seconds() < deadline) {
        sleep_ns(SETTLE_POLL_NS);
        long current = replies();
        still = current == last ? still + SETTLE_POLL_NS : 0;
        last = current;
    }
    return last;
}

#endif
