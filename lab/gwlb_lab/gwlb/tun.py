"""The tun device the intercepted traffic leaves the kernel through, and re-enters it by.

The lab's topology creates the device (persistent, so that routes to it exist before the
emulator starts and survive a restart of it); the emulator attaches to it by name. Reading gives
one IPv4 packet (no packet-information prefix); writing one injects it as if received on the
device, and the kernel routes it on by its main table.
"""

from __future__ import annotations

import fcntl
import os
import struct
from pathlib import Path

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


class TunDevice:
    def __init__(self, name: str) -> None:
        if not Path("/sys/class/net", name).exists():
            raise FileNotFoundError(
                f"tun device {name} does not exist in this namespace (the lab topology creates it)")
        self.name = name
        self.fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.ioctl(self.fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
        except OSError:
            os.close(self.fd)
            raise
        os.set_blocking(self.fd, False)

    def read(self) -> bytes | None:
        """One packet, or None when none is waiting."""
        try:
            return os.read(self.fd, 65535)
        except BlockingIOError:
            return None

    def write(self, packet: bytes | memoryview) -> None:
        os.write(self.fd, packet)

    def close(self) -> None:
        os.close(self.fd)
