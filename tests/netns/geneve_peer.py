"""The GWLB's side of a netns test: send Geneve datagrams, report what comes back.

Runs inside the GWLB namespace (``ip netns exec NS python geneve_peer.py``), because the test
process itself stays in the root namespace. No scapy here: the test builds the datagrams and
passes them as hex. Reads one JSON job from stdin::

    {"agent": "198.18.50.2", "agent_port": 6081, "listen_port": 6081,
     "packets": [{"hex": "...", "src": "198.18.50.1", "sport": 40001}, ...],
     "interval": 0.0,          # seconds between sends (scheduled, so no drift)
     "expect": 3,              # stop once this many replies came (default: none expected)
     "timeout": 3.0,           # hard bound on the whole job after the last send
     "linger": 0.1}            # keep listening this long after ``expect`` replies

Prints ``ready`` once its sockets are bound (just before the first send), then one JSON line:
``{"sent": n, "send_errors": [...], "replies": [{"src", "dst", "sport", "dport", "checksum",
"payload"}]}``. Replies are read from a raw socket so that the test sees the real UDP header
(ports and checksum), and only those from the agent to ``listen_port`` are reported.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import threading
import time

from gwlb_fleet.geneve import GENEVE_PORT

SO_NO_CHECK = 11  # Linux: send UDP without a checksum


def main() -> int:
    job = json.loads(sys.stdin.read())
    agent = job["agent"]
    agent_port = int(job.get("agent_port", GENEVE_PORT))
    listen_port = int(job.get("listen_port", GENEVE_PORT))
    packets = job.get("packets", [])
    interval = float(job.get("interval", 0.0))
    expect = int(job.get("expect", 0))
    timeout = float(job.get("timeout", 3.0))
    linger = float(job.get("linger", 0.1))

    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    raw.settimeout(0.05)
    # A listener on the reply port, so that the kernel does not answer replies with ICMP
    # port unreachable; its copies are discarded, the raw socket's are the ones reported.
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sink.bind(("0.0.0.0", listen_port))
    sink.setblocking(False)

    senders: dict[tuple[str, int], socket.socket] = {}
    for packet in packets:
        key = (packet["src"], int(packet["sport"]))
        if key not in senders:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
            sock.bind(key)
            # A zero UDP checksum, as the GWLB sends (and the lab's emulator): the agent's XDP
            # program answers only those, and leaves the kernel to verify any other.
            sock.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
            senders[key] = sock

    replies: list[dict[str, object]] = []
    done = threading.Event()
    stop = threading.Event()

    def receive() -> None:
        agent_bytes = socket.inet_aton(agent)
        while not stop.is_set():
            try:
                data = raw.recv(65535)
            except TimeoutError:
                data = b""
            while True:
                try:
                    sink.recv(65535)
                except BlockingIOError:
                    break
            if not data:
                continue
            ihl = (data[0] & 0x0F) * 4
            if data[12:16] != agent_bytes or len(data) < ihl + 8:
                continue
            sport, dport, _length, checksum = struct.unpack_from("!HHHH", data, ihl)
            if dport != listen_port:
                continue
            replies.append({
                "src": socket.inet_ntoa(data[12:16]),
                "dst": socket.inet_ntoa(data[16:20]),
                "sport": sport,
                "dport": dport,
                "checksum": checksum,
                "payload": data[ihl + 8:].hex(),
            })
            if expect and len(replies) >= expect:
                done.set()

    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()
    print("ready", flush=True)

    sent, errors = 0, []
    start = time.perf_counter()
    for i, packet in enumerate(packets):
        if interval:
            delay = start + i * interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        sock = senders[(packet["src"], int(packet["sport"]))]
        try:
            sock.sendto(bytes.fromhex(packet["hex"]), (agent, agent_port))
            sent += 1
        except OSError as exc:
            errors.append(f"packet {i}: {exc}")

    if expect:
        done.wait(timeout)
        time.sleep(linger)
    else:
        time.sleep(min(timeout, linger))
    stop.set()
    receiver.join(1.0)
    print(json.dumps({"sent": sent, "send_errors": errors, "replies": list(replies)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
