"""The data interface: the one the XDP fast path and the tun offload attach their programs to."""

from __future__ import annotations

import fcntl
import socket
import struct

from gwlb_agent.bpf.libbpf import XdpError
from gwlb_agent.config import AgentConfig

SIOCGIFADDR = 0x8915


def data_interface(config: AgentConfig) -> str:
    """The interface holding the listen address, or (listening on any) the address the kernel
    would answer the GWLB from."""
    address = config.listen_address[0]
    if address in ("", "0.0.0.0"):
        gwlb = config.gwlb_cidrs[0]
        probe = gwlb.network_address + 1 if gwlb.num_addresses > 2 else gwlb.network_address
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.connect((str(probe), 9))  # no packet: it only picks the route and source
            except OSError as exc:
                raise XdpError(f"no route to the GWLB ({probe}): {exc.strerror}; set xdp_interface") from exc
            address = udp.getsockname()[0]
    for _, name in socket.if_nameindex():
        if ipv4_address(name) == address:
            return name
    raise XdpError(f"no interface holds {address} as its address; set xdp_interface")


def ipv4_address(name: str) -> str | None:
    """The interface's IPv4 address (its primary one), None when it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            reply = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()))
        except OSError:
            return None  # no IPv4 address on it
    return socket.inet_ntoa(reply[20:24])
