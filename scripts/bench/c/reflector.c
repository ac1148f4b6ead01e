/*
 * reflector: the reference target. Receives datagrams on UDP 6081 and sends each straight back
 * to where it came from, unchanged, in batches: recvmmsg in, sendmmsg out.
 *
 *   reflector [BIND_ADDRESS]
 *
 * It is what the agent's packet loop would cost with no per-packet work at all: the same
 * system calls, the same batch size (64) and the same receive buffer (32 MiB) as the agent's
 * defaults, so that the agent/reflector ratio measures the agent's own work. It answers from
 * 6081 to the sender's port, which is what the generator (bound to 6081) expects, so the
 * generator needs no special case for either target.
 *
 * Runs until killed; the benchmark sends SIGTERM.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#define GENEVE_PORT 6081
#define BATCH 64
#define MAX_DATAGRAM 9216
#define RCVBUF (32 << 20)

int main(int argc, char **argv) {
    int sock = socket(AF_INET, SOCK_DGRAM, 0);
    if (sock < 0) {
        perror("reflector: socket");
        return 1;
    }
    int rcvbuf = RCVBUF;
    setsockopt(sock, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in local = {.sin_family = AF_INET, .sin_port = htons(GENEVE_PORT)};
    if (argc > 1 && inet_pton(AF_INET, argv[1], &local.sin_addr) != 1) {
        fprintf(stderr, "usage: reflector [BIND_ADDRESS]\n");
        return 2;
    }
    if (bind(sock, (struct sockaddr *)&local, sizeof local) < 0) {
        perror("reflector: bind");
        return 1;
    }

    static char buffers[BATCH][MAX_DATAGRAM];
    struct sockaddr_in peers[BATCH];
    struct iovec iov[BATCH];
    struct mmsghdr msgs[BATCH];
    for (;;) {
        /* recvmmsg rewrites the lengths; reset them for every batch. */
        memset(msgs, 0, sizeof msgs);
        for (int i = 0; i < BATCH; i++) {
            iov[i].iov_base = buffers[i];
            iov[i].iov_len = MAX_DATAGRAM;
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_name = &peers[i];
            msgs[i].msg_hdr.msg_namelen = sizeof peers[i];
        }
        /* MSG_WAITFORONE: block for the first datagram, then take what is already queued. */
        int n = recvmmsg(sock, msgs, BATCH, MSG_WAITFORONE, NULL);
        if (n <= 0) {
            if (n < 0 && errno != EINTR) {
                perror("reflector: recvmmsg");
                return 1;
            }
            continue;
        }
        for (int i = 0; i < n; i++)
            iov[i].iov_len = msgs[i].msg_len; /* send back exactly what came in */
        /* A refused datagram is dropped, as the agent drops one: the generator counts it lost. */
        int start = 0;
        while (start < n) {
            int sent = sendmmsg(sock, msgs + start, (unsigned)(n - start), 0);
            start += sent > 0 ? sent : 1;
        }
    }
}
