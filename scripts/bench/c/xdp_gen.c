/*
 * xdp_gen: offer Geneve to a target as XDP frames, at a paced rate, and count the replies.
 *
 *   xdp_gen INTERFACE TARGET_MAC SOURCE TARGET FLOWS SIZE OBJECT
 *
 * then one trial per line read from stdin, "RATE SECONDS", answered with one line
 * "sent=N received=N elapsed=S send_errors=N" (geneve_gen's format); exits at end of input.
 *
 * INTERFACE   the generator's end of the target's veth pair
 * TARGET_MAC  the MAC address of the target's end, aa:bb:cc:dd:ee:ff
 * SOURCE      the generator's IPv4 address; TARGET the target's (UDP 6081 to 6081)
 * FLOWS       distinct inner UDP flows, sent round robin; SIZE the inner IPv4 packet's length
 * OBJECT      xdp_gen.bpf.o
 *
 * Why frames: a datagram sent from a socket reaches the target's veth end as an skb, which the
 * veth copies into a page before an XDP program can run on it, a cost no NIC imposes; a frame
 * handed over with BPF_PROG_RUN in live-frames mode (BPF_F_TEST_XDP_LIVE_FRAMES, Linux 5.18)
 * arrives as an XDP frame, as from a NIC's driver. An XDP target runs its program on it
 * natively; a user-space target's veth end turns it into an skb in its NAPI poll, as a driver
 * does. The target's end needs NAPI for that (an XDP program), or the veth drops the frame.
 *
 * The datagrams are geneve_gen's: Geneve with 32 bytes of options in the AWS layout, inner
 * UDP to 198.18.2.2:80 from 198.19.x.y, a flow cookie per flow, outer UDP checksum 0 (as the
 * GWLB sends, F-GWLB-10). The program xdp_gen_send writes them and paces them, in bursts as a
 * NIC's interrupt moderation delivers frames (see xdp_gen.bpf.c).
 *
 * Replies are counted by xdp_gen_count, attached (native) to INTERFACE for the process's life:
 * it counts and drops every UDP datagram to port 6081. As in geneve_gen, a trial waits for the
 * count to stop moving before it starts and after it ends.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "gen_common.h"

#define HEADER_LEN 110
#define MIN_SIZE 28
#define MAX_FRAME 3000       /* what fits in one page beside the kernel's headroom and tail */
#define BATCH 64             /* frames per flush to the veth, as geneve_gen's sendmmsg batch */

struct template {
    uint8_t header[HEADER_LEN];
    uint16_t pad;
    uint32_t flows;
};

struct pace { /* xdp_gen.bpf.c's */
    uint64_t start_ns, stop_ns, rate, due, sent, skipped;
    uint32_t flow, bursting;
};

static int replies_fd, pace_fd, send_fd, ifindex, possible_cpus;

static void on_alarm(int signal) { (void)signal; }

static void fail(const char *what, int err) {
    fprintf(stderr, "xdp_gen: %s: %s\n", what, strerror(err < 0 ? -err : err));
    exit(1);
}

static long replies(void) {
    uint64_t per_cpu[possible_cpus];
    uint32_t zero = 0;
    if (bpf_map_lookup_elem(replies_fd, &zero, per_cpu) != 0)
        fail("read the reply count", errno);
    long total = 0;
    for (int i = 0; i < possible_cpus; i++)
        total += (long)per_cpu[i];
    return total;
}

static void own_mac(const char *interface, uint8_t *mac) {
    struct ifreq request;
    int sock = socket(AF_INET, SOCK_DGRAM, 0);
    memset(&request, 0, sizeof request);
    snprintf(request.ifr_name, sizeof request.ifr_name, "%s", interface);
    if (sock < 0 || ioctl(sock, SIOCGIFHWADDR, &request) < 0)
        fail(interface, errno);
    memcpy(mac, request.ifr_hwaddr.sa_data, 6);
    close(sock);
}

/* The frame into h, a zeroed buffer of its length: Ethernet, outer IPv4 and UDP, the Geneve
 * datagram. The flow's fields (cookie, inner source, inner IP checksum) are xdp_gen_send's. */
static void build_frame(uint8_t *h, const uint8_t *target_mac, const uint8_t *own,
                         uint32_t source, uint32_t target, int size) {
    memcpy(h, target_mac, 6);
    memcpy(h + 6, own, 6);
    put16(h + 12, 0x0800);
    uint8_t *ip = h + 14;
    ip[0] = 0x45;
    put16(ip + 2, (unsigned)(20 + 8 + GENEVE_LEN + size));
    ip[6] = 0x40; /* DF */
    ip[8] = 64;
    ip[9] = 17;
    put32(ip + 12, source);
    put32(ip + 16, target);
    put16(ip + 10, ip_checksum(ip));
    uint8_t *udp = ip + 20;
    put16(udp, 6081);
    put16(udp + 2, 6081);
    put16(udp + 4, (unsigned)(8 + GENEVE_LEN + size)); /* checksum 0 */
    build_geneve(udp + 8, size);
}

/* Run xdp_gen_send `repeat` times in live-frames mode; errno 0 if the run ended by itself. */
static void run_live(uint8_t *frame, int length, uint32_t repeat) {
    struct xdp_md context = {.data_end = (uint32_t)length, .ingress_ifindex = (uint32_t)ifindex};
    LIBBPF_OPTS(bpf_test_run_opts, options, .data_in = frame, .data_size_in = (uint32_t)length,
                .ctx_in = &context, .ctx_size_in = sizeof context,
                .flags = BPF_F_TEST_XDP_LIVE_FRAMES, .repeat = repeat, .batch_size = BATCH);
    if (bpf_prog_test_run_opts(send_fd, &options) == 0)
        errno = 0;
}

/*
 * One run of xdp_gen_send for the trial: it paces itself by the clock from `trial_pace` and
 * sends nothing after stop_ns; an alarm just after that interrupts the run (BPF_PROG_RUN
 * checks for a pending signal between batches and returns EINTR). The flow counter carries on
 * from trial to trial (geneve_gen, a process a trial, starts it again each time).
 */
static void trial(uint8_t *frame, int length, double rate, double duration) {
    long before = settle(replies, 100000000L, 3.0);
    struct pace pace;
    uint32_t zero = 0;
    if (bpf_map_lookup_elem(pace_fd, &zero, &pace) != 0)
        fail("read the pace", errno);
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    uint64_t start = (uint64_t)t.tv_sec * 1000000000ULL + (uint64_t)t.tv_nsec + 1000000ULL; /* 1 ms to set up */
    pace = (struct pace){.start_ns = start, .stop_ns = start + (uint64_t)(duration * 1e9),
                         .rate = (uint64_t)rate, .flow = pace.flow};
    if (bpf_map_update_elem(pace_fd, &zero, &pace, BPF_ANY) != 0)
        fail("write the pace", errno);

    long alarm_us = (long)((duration + 0.003) * 1e6); /* the start is 1 ms ahead, see above */
    struct itimerval alarm_at = {.it_value = {.tv_sec = alarm_us / 1000000, .tv_usec = alarm_us % 1000000}};
    double began = now_seconds();
    setitimer(ITIMER_REAL, &alarm_at, NULL);
    run_live(frame, length, UINT32_MAX);
    if (errno == 0)
        fail("BPF_PROG_RUN (live frames) ended before the alarm", ETIME);
    if (errno != EINTR)
        fail("BPF_PROG_RUN (live frames)", errno);
    double elapsed = now_seconds() - began;
    if (bpf_map_lookup_elem(pace_fd, &zero, &pace) != 0)
        fail("read the pace", errno);
    long after = settle(replies, 200000000L, 2.0);
    /* send_errors: here the frames due that could not go out in time (after a preemption). */
    printf("sent=%ld received=%ld elapsed=%.6f send_errors=%ld\n", (long)pace.sent,
           after - before, elapsed < duration ? elapsed : duration, (long)pace.skipped);
    fflush(stdout);
}

static void parse_mac(const char *text, uint8_t *mac) {
    unsigned b[6];
    if (sscanf(text, "%x:%x:%x:%x:%x:%x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]) != 6) {
        fprintf(stderr, "xdp_gen: not a MAC address: %s\n", text);
        exit(2);
    }
    for (int i = 0; i < 6; i++)
        mac[i] = (uint8_t)b[i];
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: xdp_gen INTERFACE TARGET_MAC SOURCE TARGET FLOWS SIZE OBJECT\n");
        return 2;
    }
    const char *interface = argv[1];
    uint8_t target_mac[6], mac[6];
    struct in_addr source, target;
    parse_mac(argv[2], target_mac);
    long flows = atol(argv[5]);
    int size = atoi(argv[6]);
    if (inet_pton(AF_INET, argv[3], &source) != 1 || inet_pton(AF_INET, argv[4], &target) != 1 ||
        flows < 1 || flows > 100000000L || size < MIN_SIZE ||
        14 + 20 + 8 + GENEVE_LEN + size > MAX_FRAME) {
        fprintf(stderr, "xdp_gen: bad address, FLOWS (1..1e8) or SIZE (%d..%d)\n", MIN_SIZE,
                MAX_FRAME - 14 - 20 - 8 - GENEVE_LEN);
        return 2;
    }
    ifindex = (int)if_nametoindex(interface);
    if (!ifindex)
        fail(interface, errno);
    own_mac(interface, mac);
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);

    struct bpf_object *object = bpf_object__open_file(argv[7], NULL);
    int err = libbpf_get_error(object);
    if (err)
        fail(argv[7], err);
    if ((err = bpf_object__load(object)))
        fail("load xdp_gen.bpf.o", err);
    struct bpf_program *count = bpf_object__find_program_by_name(object, "xdp_gen_count");
    struct bpf_program *send = bpf_object__find_program_by_name(object, "xdp_gen_send");
    if (!count || !send)
        fail("xdp_gen.bpf.o lacks a program", ENOENT);
    send_fd = bpf_program__fd(send);
    replies_fd = bpf_map__fd(bpf_object__find_map_by_name(object, "replies"));
    pace_fd = bpf_map__fd(bpf_object__find_map_by_name(object, "trial_pace"));
    possible_cpus = libbpf_num_possible_cpus();

    static uint8_t frame[MAX_FRAME];
    int length = 14 + 20 + 8 + GENEVE_LEN + size;
    build_frame(frame, target_mac, mac, ntohl(source.s_addr), ntohl(target.s_addr), size);
    struct template t = {.flows = (uint32_t)flows};
    memcpy(t.header, frame, HEADER_LEN);
    uint32_t zero = 0;
    if (bpf_map_update_elem(bpf_map__fd(bpf_object__find_map_by_name(object, "template")), &zero,
                            &t, BPF_ANY))
        fail("write the template", errno);

    if ((err = bpf_xdp_attach(ifindex, bpf_program__fd(count), XDP_FLAGS_DRV_MODE, NULL)))
        fail("attach xdp_gen_count", err);
    struct sigaction action = {.sa_handler = on_alarm}; /* no SA_RESTART: the run must end */
    sigaction(SIGALRM, &action, NULL);
    /* One turn of the program now (it sends nothing: no trial is set), so that a kernel without
     * live frames (before 5.18) says so here rather than in the first trial. */
    run_live(frame, length, 1);
    if (errno)
        fail("BPF_PROG_RUN in live-frames mode (Linux 5.18 or later; --generator socket "
             "measures without it)", errno);
    printf("ready\n");
    fflush(stdout);
    double rate, duration;
    char line[128];
    while (fgets(line, sizeof line, stdin)) {
        /* At most a minute: one run takes at most 2^32 - 1 turns of the program. */
        if (sscanf(line, "%lf %lf", &rate, &duration) != 2 || rate <= 0 || duration <= 0 ||
            duration > 60) {
            fprintf(stderr, "xdp_gen: expected \"RATE SECONDS\", got %s", line);
            break;
        }
        trial(frame, length, rate, duration);
    }
    bpf_xdp_detach(ifindex, XDP_FLAGS_DRV_MODE, NULL);
    bpf_object__close(object);
    return 0;
}
