/*
 * geneve_gen: send Geneve datagrams at a paced rate and count how many come back.
 *
 *   geneve_gen [-s] [-z] TARGET RATE SECONDS FLOWS SIZE
 *
 * TARGET   IPv4 address of the target (agent or reflector) listening on UDP 6081
 * RATE     datagrams per second to offer
 * SECONDS  how long to send
 * FLOWS    distinct inner UDP flows, sent round robin
 * SIZE     inner IPv4 packet length in bytes (the Geneve datagram is 40 bytes more)
 * -s       sleep instead of spinning while ahead of the pace (use when not pinned to a CPU
 *          of its own, so that the generator does not steal the target's CPU)
 * -z       send with an outer UDP checksum of 0, as the GWLB does (F-GWLB-10)
 *
 * Prints one line: "sent=N received=N elapsed=S send_errors=N" and exits 0.
 *
 * The datagrams look like a GWLB's: Geneve version 0, protocol type IPv4 (0x0800), VNI 0 and
 * 32 bytes of options in the AWS layout (class 0x0108: endpoint id, attachment id, flow
 * cookie), like seed 002's capture. The socket is bound to 6081 and connected to TARGET:6081,
 * because both targets answer from the port the datagram came from to 6081.
 *
 * Replies are counted without reading them: the kernel counts, per network namespace, every UDP
 * datagram it drops because the receiving socket's buffer is full (Udp InErrors, which includes
 * RcvbufErrors, in /proc/net/snmp), and every one an application reads (Udp InDatagrams: counted
 * at read time, not on arrival). Our receive buffer is deliberately tiny, so almost every reply
 * is dropped on arrival and counted; the few that fit are read at the end, which counts them too.
 * A receive thread would compete with the sender for the generator's CPU and, once it fell
 * behind, would make the generator look like the bottleneck. The benchmark runs the generator
 * alone in its own namespace, so nothing else there receives UDP.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "gen_common.h"

#define GENEVE_PORT 6081
#define BATCH 64             /* datagrams per sendmmsg, as the agent's default batch */
#define MIN_SIZE 28          /* inner IPv4 + UDP headers */
#define MAX_SIZE 8500        /* the agent's default max_inner_size */

/* Udp InDatagrams + InErrors of this namespace; columns found by name, not position. */
static long udp_delivered(void) {
    FILE *f = fopen("/proc/net/snmp", "r");
    if (!f) {
        perror("geneve_gen: /proc/net/snmp");
        exit(1);
    }
    char names[1024], values[1024];
    long total = -1;
    while (fgets(names, sizeof names, f)) {
        if (strncmp(names, "Udp:", 4) != 0 || !fgets(values, sizeof values, f))
            continue;
        char *name_save, *value_save;
        char *name = strtok_r(names, " \n", &name_save);
        char *value = strtok_r(values, " \n", &value_save);
        total = 0;
        while (name && value) {
            if (!strcmp(name, "InDatagrams") || !strcmp(name, "InErrors"))
                total += atol(value);
            name = strtok_r(NULL, " \n", &name_save);
            value = strtok_r(NULL, " \n", &value_save);
        }
        break;
    }
    fclose(f);
    if (total < 0) {
        fprintf(stderr, "geneve_gen: no Udp line in /proc/net/snmp\n");
        exit(1);
    }
    return total;
}

/* Read the replies that fitted in the receive buffer, so that the kernel counts them. */
static void drain(int sock) {
    static char scratch[9216];
    for (int i = 0; i < 1000000 && recv(sock, scratch, sizeof scratch, MSG_DONTWAIT) >= 0; i++)
        ;
}

/* Make `p` a datagram of flow `f`: its inner source address and port, and its flow cookie. */
static void set_flow(uint8_t *p, uint32_t f) {
    uint8_t *ip = p + GENEVE_LEN;
    put32(p + 8 + 24 + 4, f);
    put32(ip + 12, 0xC6130000u + 1 + f / FLOWS_PER_ADDRESS); /* 198.19.x.y */
    put16(ip + 20, 1024 + f % FLOWS_PER_ADDRESS);
    put16(ip + 10, 0);
    put16(ip + 10, ip_checksum(ip));
}

static void usage(void) {
    fprintf(stderr, "usage: geneve_gen [-s] [-z] TARGET RATE SECONDS FLOWS SIZE\n");
    exit(2);
}

int main(int argc, char **argv) {
    int sleepy = 0, zero_checksum = 0;
    int opt;
    while ((opt = getopt(argc, argv, "sz")) != -1) {
        if (opt == 's')
            sleepy = 1;
        else if (opt == 'z')
            zero_checksum = 1;
        else
            usage();
    }
    if (argc - optind != 5)
        usage();
    const char *target = argv[optind];
    double rate = atof(argv[optind + 1]);
    double duration = atof(argv[optind + 2]);
    long flows = atol(argv[optind + 3]);
    int size = atoi(argv[optind + 4]);
    if (rate <= 0 || duration <= 0 || flows < 1 || flows > 100000000L || size < MIN_SIZE ||
        size > MAX_SIZE)
        usage();

    /* Sleeps of a few microseconds need a timer slack below the 50 us default. */
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);

    int sock = socket(AF_INET, SOCK_DGRAM, 0);
    if (sock < 0) {
        perror("geneve_gen: socket");
        return 1;
    }
    int sndbuf = 4 << 20, rcvbuf = 4096;
    setsockopt(sock, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    setsockopt(sock, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    /* -z: outer UDP checksum 0, as the GWLB (and the lab's emulator) sends: the agent's XDP
     * program answers only those (SO_NO_CHECK, Linux). */
    int no_check = 1;
    if (zero_checksum && setsockopt(sock, SOL_SOCKET, SO_NO_CHECK, &no_check, sizeof no_check) < 0) {
        perror("geneve_gen: SO_NO_CHECK");
        return 1;
    }
    struct sockaddr_in local = {.sin_family = AF_INET, .sin_port = htons(GENEVE_PORT)};
    struct sockaddr_in remote = {.sin_family = AF_INET, .sin_port = htons(GENEVE_PORT)};
    if (inet_pton(AF_INET, target, &remote.sin_addr) != 1)
        usage();
    if (bind(sock, (struct sockaddr *)&local, sizeof local) < 0 ||
        connect(sock, (struct sockaddr *)&remote, sizeof remote) < 0) {
        perror("geneve_gen: bind/connect");
        return 1;
    }

    /* One buffer per batch slot; a slot is re-stamped with its flow just before each send. */
    static uint8_t slots[BATCH][GENEVE_LEN + MAX_SIZE];
    struct iovec iov[BATCH];
    struct mmsghdr msgs[BATCH];
    memset(msgs, 0, sizeof msgs);
    for (int i = 0; i < BATCH; i++) {
        build_geneve(slots[i], size);
        iov[i].iov_base = slots[i];
        iov[i].iov_len = (size_t)(GENEVE_LEN + size);
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }

    long before = settle(udp_delivered, 100000000L, 3.0);
    long sent = 0, send_errors = 0;
    uint32_t next_flow = 0;
    double start = now_seconds();
    double elapsed;
    /* Pace by the clock: by time t, rate*t datagrams should be out; send the deficit in batches
     * of at most BATCH, so that a late wake-up is caught up rather than lost. */
    while ((elapsed = now_seconds() - start) < duration) {
        long due = (long)(rate * elapsed) - sent;
        if (due <= 0) {
            if (sleepy)
                sleep_ns((long)(1e9 / rate) + 1);
            continue;
        }
        int n = due > BATCH ? BATCH : (int)due;
        for (int i = 0; i < n; i++) {
            set_flow(slots[i], next_flow);
            if (++next_flow == (uint32_t)flows)
                next_flow = 0;
        }
        int done = sendmmsg(sock, msgs, (unsigned)n, 0);
        if (done > 0) {
            sent += done;
        } else {
            /* ECONNREFUSED (an ICMP port unreachable: nobody listening yet) and ENOBUFS are
             * the target's or the path's loss; count the attempt and keep the pace. */
            send_errors++;
            sent += n;
            if (errno != ECONNREFUSED && errno != ENOBUFS && errno != EAGAIN && errno != EINTR) {
                perror("geneve_gen: sendmmsg");
                return 1;
            }
        }
    }
    elapsed = now_seconds() - start;
    settle(udp_delivered, 200000000L, 2.0);
    drain(sock);
    long after = udp_delivered();
    printf("sent=%ld received=%ld elapsed=%.6f send_errors=%ld\n", sent, after - before, elapsed,
           send_errors);
    return 0;
}
