"""Batched datagram I/O: recvmmsg on the Geneve socket, sendmmsg on a raw socket.

Why raw: the reply must leave from the GWLB's own source port to 6081 (seed 002's capture:
``gwlb.56736 > nva.6081`` is answered by ``nva.56736 > gwlb.6081``), which a UDP socket bound to
6081 cannot do. Because the ports, the payload and (by symmetry of the pseudo-header sum) the
checksum input are those received, the reply is the received datagram with the IP addresses
swapped; we send it with a zero UDP checksum, which RFC 8926 allows over IPv4 and which is
what the Linux geneve driver does by default.

Why batched: Python pays per system call, not per byte. Each slot of one buffer holds a 28-byte
IP+UDP header template followed by the received datagram, so a reply is sent in place without
copying; one recvmmsg and one sendmmsg serve up to ``batch`` packets.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import socket
import struct

from gwlb_fleet.geneve import GENEVE_PORT

log = logging.getLogger("gwlb_agent.batchio")
SO_RCVBUFFORCE = 33
MSG_WAITFORONE = 0x10000
MSG_TRUNC = 0x20
IP_UDP_HEADER = 28
_libc = ctypes.CDLL(None, use_errno=True)

# The kernel's struct iovec, msghdr and mmsghdr, and libc's sendmmsg: the tun path
# (gwlb_agent.kernel.tun) sends its batches with them too.


class IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class MsgHdr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.POINTER(IoVec)),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    ]


class MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", MsgHdr), ("len", ctypes.c_uint)]


_recvmmsg = _libc.recvmmsg
_recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
_recvmmsg.restype = ctypes.c_int
sendmmsg = _libc.sendmmsg
sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
sendmmsg.restype = ctypes.c_int


def send_batch(fd: int, msgs_ptr: int, count: int) -> tuple[int, int, int]:
    """sendmmsg until all ``count`` mmsghdrs at ``msgs_ptr`` are sent or refused: (sent,
    refused, the last refusal's errno). A refused datagram is skipped (EMSGSIZE: never
    fragment; ENOBUFS...), an interrupted call repeated."""
    start = sent_ok = refused = last_errno = 0
    while start < count:
        sent = sendmmsg(fd, msgs_ptr + start * ctypes.sizeof(MMsgHdr), count - start, 0)
        if sent > 0:
            start += sent
            sent_ok += sent
            continue
        err = ctypes.get_errno()
        if err == errno.EINTR:
            continue
        refused += 1
        last_errno = err
        start += 1
    return sent_ok, refused, last_errno


MMSG_WORDS = ctypes.sizeof(MMsgHdr) // 4
LEN_WORD = MMsgHdr.len.offset // 4
FLAGS_WORD = (MMsgHdr.hdr.offset + MsgHdr.flags.offset) // 4
_MMSG_QWORDS = ctypes.sizeof(MMsgHdr) // 8
_NAME_QWORD = (MMsgHdr.hdr.offset + MsgHdr.name.offset) // 8

# IPv4 header: version/IHL, TOS, total length and checksum and id (the kernel fills them for
# IPPROTO_RAW), don't-fragment, TTL 64, UDP, source 0 (the kernel picks the route's), dest set
# per packet. UDP: source port set per packet, destination 6081, length per packet, checksum 0.
_HEADER_TEMPLATE = struct.pack(
    "!BBHHHBBH4s4sHHHH", 0x45, 0, 0, 0, 0x4000, 64, 17, 0, b"\0\0\0\0", b"\0\0\0\0", 0, GENEVE_PORT, 0, 0
)


def _set_receive_buffer(sock: socket.socket, wanted: int) -> int:
    """Ask for ``wanted`` bytes of receive buffer; return what the kernel granted.

    SO_RCVBUF is capped at net.core.rmem_max (4 MiB on many systems: 65 ms at 60 kpps, too little
    to ride out a burst of flow expiry). SO_RCVBUFFORCE goes past the cap where the agent has
    CAP_NET_ADMIN; otherwise the operator is told how to raise it.
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, wanted)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, wanted)
    granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2  # Linux reports double
    if granted < wanted:
        log.warning(
            "receive buffer smaller than configured; raise net.core.rmem_max",
            extra={"wanted_bytes": wanted, "granted_bytes": granted},
        )
    return granted


class BatchSocket:
    """The agent's data-path sockets and their shared slot buffer."""

    def __init__(
        self,
        listen: tuple[str, int],
        batch: int = 64,
        max_datagram: int = 9216,
        rcvbuf: int = 32 << 20,
        sndbuf: int = 8 << 20,
        poll_interval: float = 0.1,
    ) -> None:
        self.batch = batch
        self.slot = (IP_UDP_HEADER + max_datagram + 7) & ~7
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rcvbuf = _set_receive_buffer(self.rx, rcvbuf)
        self.rx.bind(listen)
        # A timeout makes recvmmsg return now and then, so that the loop can beat its heart.
        self.rx.settimeout(None)
        self.rx.setsockopt(
            socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, int(poll_interval * 1e6))
        )
        self.tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        if listen[0] not in ("", "0.0.0.0"):
            self.tx.bind((listen[0], 0))
        self._rx_fd = self.rx.fileno()
        self._tx_fd = self.tx.fileno()
        self._allocate(batch, max_datagram)

    def _allocate(self, batch: int, max_datagram: int) -> None:
        slot = self.slot
        self._buffer = (ctypes.c_char * (slot * batch))()
        self._names = (ctypes.c_char * (16 * batch))()
        self._rx_iov = (IoVec * batch)()
        self._rx_msgs = (MMsgHdr * batch)()
        self._tx_iov = (IoVec * batch)()
        self._tx_msgs = (MMsgHdr * batch)()
        base = ctypes.addressof(self._buffer)
        names = ctypes.addressof(self._names)
        for i in range(batch):
            self._rx_iov[i].base = base + i * slot + IP_UDP_HEADER
            self._rx_iov[i].len = max_datagram
            hdr = self._rx_msgs[i].hdr
            hdr.iov = ctypes.pointer(self._rx_iov[i])
            hdr.iovlen = 1
            hdr.name = names + 16 * i
            hdr.namelen = 16
            self._tx_msgs[i].hdr.iov = ctypes.pointer(self._tx_iov[i])
            self._tx_msgs[i].hdr.iovlen = 1
            self._tx_msgs[i].hdr.namelen = 16
            ctypes.memmove(base + i * slot, _HEADER_TEMPLATE, IP_UDP_HEADER)
        self._base = base
        self._names_base = names
        # Typed views: reading a length or writing a pointer is an index, not a ctypes call.
        self.view = memoryview(self._buffer).cast("B")
        self._u16 = self.view.cast("H")
        self._u32 = self.view.cast("I")
        names_view = memoryview(self._names).cast("B")
        self.name_u16 = names_view.cast("H")
        self.name_u32 = names_view.cast("I")
        self.rx_u32 = memoryview(self._rx_msgs).cast("B").cast("I")
        self._tx_q = memoryview(self._tx_msgs).cast("B").cast("Q")
        self._tx_iov_q = memoryview(self._tx_iov).cast("B").cast("Q")
        self._rx_msgs_ptr = ctypes.addressof(self._rx_msgs)
        self._tx_msgs_ptr = ctypes.addressof(self._tx_msgs)
        self.pending = 0
        self.replies: list[int] = []  # slots to reply from, filled by the packet loop
        self.send_errors = 0
        self.last_send_errno = 0

    # --- receive ---------------------------------------------------------------------------------

    def receive(self) -> int:
        """Block up to the poll interval for datagrams; return how many arrived (0 on timeout)."""
        count: int = _recvmmsg(self._rx_fd, self._rx_msgs_ptr, self.batch, MSG_WAITFORONE, None)
        if count >= 0:
            return count
        err = ctypes.get_errno()
        if err in (errno.EAGAIN, errno.EINTR):
            return 0
        raise OSError(err, f"recvmmsg: {errno.errorcode.get(err, err)}")

    def datagram(self, i: int) -> tuple[int, int, bool]:
        """(offset in ``view``, length, truncated) of datagram ``i``."""
        word = i * MMSG_WORDS
        truncated = bool(self.rx_u32[word + FLAGS_WORD] & MSG_TRUNC)
        return i * self.slot + IP_UDP_HEADER, self.rx_u32[word + LEN_WORD], truncated

    def source(self, i: int) -> tuple[int, int]:
        """(address, port) of datagram ``i``'s sender, both raw from the sockaddr (network order)."""
        return self.name_u32[i * 4 + 1], self.name_u16[i * 8 + 1]

    # --- reply -------------------------------------------------------------------------------------

    def queue_replies(self, slots: list[int]) -> int:
        """Queue the datagrams in ``slots`` to go back to their senders, each from its sender's
        port to 6081: fill in the header template in front of it and point a send at it."""
        u16, u32, names_u16, names_u32 = self._u16, self._u32, self.name_u16, self.name_u32
        rx_u32, tx_q, tx_iov_q, slot = self.rx_u32, self._tx_q, self._tx_iov_q, self.slot
        base, names_base = self._base, self._names_base
        n = self.pending
        for i in slots:
            length = rx_u32[i * MMSG_WORDS + LEN_WORD]
            header = i * slot
            u32[(header >> 2) + 4] = names_u32[i * 4 + 1]  # IP destination: the sender
            u16[(header >> 1) + 10] = names_u16[i * 8 + 1]  # UDP source port: the sender's
            udp_len = length + 8
            u16[(header >> 1) + 12] = ((udp_len & 0xFF) << 8) | (udp_len >> 8)
            tx_iov_q[n * 2] = base + header
            tx_iov_q[n * 2 + 1] = length + IP_UDP_HEADER
            tx_q[n * _MMSG_QWORDS + _NAME_QWORD] = names_base + 16 * i
            n += 1
        self.pending = n
        return n

    def flush(self) -> int:
        """Send the queued replies. A datagram the kernel refuses is counted and skipped."""
        sent_ok, errors, last_errno = send_batch(self._tx_fd, self._tx_msgs_ptr, self.pending)
        if errors:
            self.send_errors += errors
            self.last_send_errno = last_errno
        self.pending = 0
        return sent_ok

    def send_datagram(self, datagram: bytes, address: int, port: int) -> bool:
        """Send one datagram outside the batch (fragments held back for their first)."""
        header = bytearray(_HEADER_TEMPLATE)
        struct.pack_into("<I", header, 16, address)
        struct.pack_into("<H", header, 20, port)
        struct.pack_into("!H", header, 24, len(datagram) + 8)
        destination = socket.inet_ntoa(address.to_bytes(4, "little"))
        try:
            self.tx.sendto(bytes(header) + datagram, (destination, 0))
        except OSError as exc:
            self.send_errors += 1
            self.last_send_errno = exc.errno or 0
            return False
        return True

    def close(self) -> None:
        self.rx.close()
        self.tx.close()
