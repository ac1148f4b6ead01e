"""Long-lived flows for the GWLB emulator's netns test, run inside a namespace of the lab.

``serve ADDRESS TCP_PORT UDP_PORT`` (server namespace): a UDP echo and a TCP line echo, until
killed.

``udp-stream ADDRESS:PORT SOURCE_PORT INTERVAL MAX_SECONDS`` (client namespace): one UDP flow:
a numbered datagram every INTERVAL seconds from SOURCE_PORT, until stdin closes or MAX_SECONDS
pass. Prints ``ready``, then at the end one JSON line: ``{"sent": n, "echoes": [[seq, sent_at,
echoed_at], ...]}`` (wall-clock times, comparable with the test's).

``tcp-session ADDRESS:PORT SOURCE_PORT TIMEOUT`` (client namespace): one TCP connection driven by
stdin lines: ``ping`` sends a line and prints ``ok SECONDS`` when it comes back (``error WHY``
otherwise); ``close`` closes it (FIN) and prints ``closed``; EOF closes too.
"""

from __future__ import annotations

import json
import select
import socket
import sys
import threading
import time


def serve(address: str, tcp_port: int, udp_port: int) -> int:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((address, udp_port))
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((address, tcp_port))
    listener.listen(16)

    def echo_udp() -> None:
        while True:
            data, peer = udp.recvfrom(2048)
            udp.sendto(data, peer)

    def echo_tcp(connection: socket.socket) -> None:
        with connection, connection.makefile("rwb") as stream:
            for line in stream:
                stream.write(line)
                stream.flush()

    threading.Thread(target=echo_udp, daemon=True).start()
    print("ready", flush=True)
    while True:
        connection, _ = listener.accept()
        threading.Thread(target=echo_tcp, args=(connection,), daemon=True).start()


def _target(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host, int(port)


def udp_stream(target: str, source_port: int, interval: float, max_seconds: float) -> int:
    server = _target(target)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", source_port))
    stop = threading.Event()

    def until_stdin_closes() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=until_stdin_closes, daemon=True).start()
    sent_at: dict[int, float] = {}
    echoes: list[list[float]] = []
    print("ready", flush=True)
    started = time.monotonic()
    next_send = started
    seq = 0
    while not stop.is_set() and time.monotonic() - started < max_seconds:
        now = time.monotonic()
        if now >= next_send:
            sent_at[seq] = time.time()
            sock.sendto(f"{seq}".encode(), server)
            seq += 1
            next_send += interval
        ready, _, _ = select.select([sock], [], [], max(0.0, next_send - time.monotonic()))
        if ready:
            data = sock.recv(2048)
            number = int(data)
            echoes.append([number, sent_at.get(number, 0.0), time.time()])
    print(json.dumps({"sent": seq, "echoes": echoes}), flush=True)
    return 0


def tcp_session(target: str, source_port: int, timeout: float) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", source_port))
    sock.settimeout(timeout)
    try:
        sock.connect(_target(target))
    except OSError as exc:
        print(f"error connect: {exc}", flush=True)
        return 1
    stream = sock.makefile("rb")
    print("ready", flush=True)
    for command in sys.stdin:
        if command.strip() == "ping":
            started = time.monotonic()
            try:
                sock.sendall(b"ping\n")
                line = stream.readline()
            except OSError as exc:
                print(f"error {exc}", flush=True)
                continue
            if line == b"ping\n":
                print(f"ok {time.monotonic() - started:.3f}", flush=True)
            else:
                print(f"error answer {line!r}", flush=True)
        elif command.strip() == "close":
            break
    sock.shutdown(socket.SHUT_WR)
    try:
        rest = stream.read()  # the server's FIN
    except OSError as exc:
        rest = f"{exc}".encode()
    sock.close()
    print(f"closed {rest!r}", flush=True)
    return 0


def main(argv: list[str]) -> int:
    command, args = argv[0], argv[1:]
    if command == "serve":
        return serve(args[0], int(args[1]), int(args[2]))
    if command == "udp-stream":
        return udp_stream(args[0], int(args[1]), float(args[2]), float(args[3]))
    if command == "tcp-session":
        return tcp_session(args[0], int(args[1]), float(args[2]))
    print(f"unknown command {command}", file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
