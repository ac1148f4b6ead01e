"""The agent's side of the XDP reply check: answer one Geneve datagram with the agent's real
reply path (batchio.BatchSocket: recvmmsg, the raw-socket header template, sendmmsg) and report
both frames as they crossed the interface, read from a packet socket.

Runs inside the agent's namespace (``ip netns exec NS python agent_reply_capture.py IFNAME``).
Prints ``ready`` once its sockets are bound, then one JSON line ``{"received": hex, "sent": hex}``
or ``{"error": ...}``; gives up after 5 s.
"""

from __future__ import annotations

import json
import socket
import sys
import time

from gwlb_agent.batchio import BatchSocket
from gwlb_fleet.geneve import GENEVE_PORT

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
DEADLINE = 5.0


def geneve_frame(frame: bytes) -> bool:
    """An IPv4/UDP frame to port 6081: the GWLB's datagram, and the agent's reply to it."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
        return False
    return int.from_bytes(frame[36:38], "big") == GENEVE_PORT


def main() -> int:
    capture = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    capture.bind((sys.argv[1], 0))
    capture.settimeout(0.1)
    io = BatchSocket(("0.0.0.0", GENEVE_PORT), batch=1, poll_interval=0.1)
    print("ready", flush=True)
    deadline = time.monotonic() + DEADLINE
    while not io.receive():
        if time.monotonic() > deadline:
            print(json.dumps({"error": "no datagram arrived"}), flush=True)
            return 1
    io.queue_replies([0])
    if io.flush() != 1:
        print(json.dumps({"error": f"the reply was not sent: errno {io.last_send_errno}"}), flush=True)
        return 1
    frames: dict[str, str] = {}
    while len(frames) < 2 and time.monotonic() < deadline:
        try:
            frame, address = capture.recvfrom(65536)
        except TimeoutError:
            continue
        outgoing = address[2] == PACKET_OUTGOING
        name = "sent" if outgoing else "received"
        if name not in frames and geneve_frame(frame):
            frames[name] = frame.hex()
    print(
        json.dumps(frames if len(frames) == 2 else {"error": f"captured only {sorted(frames)}"}), flush=True
    )
    return 0 if len(frames) == 2 else 1


if __name__ == "__main__":
    sys.exit(main())
