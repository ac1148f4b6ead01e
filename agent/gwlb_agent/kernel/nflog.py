"""nftables verdicts through NFLOG (nfnetlink_log): which rule decided a flow, and how.

The appliance's ruleset logs the packets it decides on to one NFLOG group, with a prefix that
names the action and the rule (the convention of docs/kernel-records.md)::

    tcp dport 80 ct state new log group 7 prefix "allow web" accept
    tcp dport 22 log group 7 prefix "deny ssh" drop

The agent binds that group (``NFULNL_MSG_CONFIG``: bind, copy the first ``COPY_RANGE`` bytes of
each packet) and reads ``NFULNL_MSG_PACKET`` messages: ``NFULA_PREFIX`` gives action and rule,
``NFULA_PAYLOAD`` (the packet from its IP header) the 5-tuple, ``NFULA_MARK`` the mark.
Attribute numbers and layouts: uapi ``linux/netfilter/nfnetlink_log.h`` (docs/kernel-records.md).
"""

from __future__ import annotations

import errno
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from gwlb_agent.kernel import nfnetlink as nl
from gwlb_agent.kernel.records import FlowKey, flow_key

NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1
# enum nfulnl_attr_type
NFULA_MARK, NFULA_TIMESTAMP, NFULA_PAYLOAD, NFULA_PREFIX = 2, 3, 9, 10
# enum nfulnl_attr_config, nfulnl_msg_config_cmds, copy modes
NFULA_CFG_CMD, NFULA_CFG_MODE, NFULA_CFG_TIMEOUT, NFULA_CFG_QTHRESH = 1, 2, 4, 5
NFULNL_CFG_CMD_BIND, NFULNL_CFG_CMD_UNBIND = 1, 2
NFULNL_COPY_PACKET = 0x02
# An IPv4 header with options (60) and the 8 bytes of ports or ICMP header after it.
COPY_RANGE = 68

Action = Literal["allow", "deny"]
ACTION_WORDS: dict[str, Action] = {
    "allow": "allow", "accept": "allow", "deny": "deny", "drop": "deny", "reject": "deny",
}  # fmt: skip


class PrefixError(ValueError):
    """An NFLOG prefix that does not follow the "<action> <rule>" convention."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """One logged packet: what the ruleset did with it and which rule did it."""

    action: Action
    rule: str
    key: FlowKey
    packet_bytes: int  # the IP total length: the packet's size, not what was copied
    icmp_type: int | None
    icmp_code: int | None
    mark: int
    time: float  # epoch seconds: the kernel's timestamp when it gave one, else our clock


def parse_prefix(prefix: str) -> tuple[Action, str]:
    """``"allow web"`` -> ("allow", "web"); ``"deny: ssh"`` too. The rule must not be empty."""
    word, _, rule = prefix.strip().partition(" ")
    word = word.rstrip(":").lower()
    action = ACTION_WORDS.get(word)
    rule = rule.strip().rstrip(":").strip()
    if action is None or not rule:
        raise PrefixError(f"NFLOG prefix {prefix!r} is not '<allow|deny> <rule>'")
    return action, rule


def parse_verdicts(
    buf: bytes | bytearray | memoryview, clock: Callable[[], float] = time.time
) -> tuple[list[Verdict], list[str]]:
    """The verdicts of one datagram, and a note for each message we could not use (its prefix
    breaks the convention, or its packet is not IPv4 with a readable 5-tuple)."""
    verdicts: list[Verdict] = []
    problems: list[str] = []
    for message in nl.messages(buf):
        if message.subsystem != NFNL_SUBSYS_ULOG or message.operation != NFULNL_MSG_PACKET:
            continue
        view = message.view
        attrs = nl.attribute_map(view, message.attrs_start, message.attrs_end)
        if NFULA_PREFIX not in attrs or NFULA_PAYLOAD not in attrs:
            problems.append(f"group {message.res_id}: a logged packet without prefix or payload")
            continue
        start, end = attrs[NFULA_PREFIX]
        prefix = view[start:end].tobytes().split(b"\x00", 1)[0].decode("utf-8", "replace")
        try:
            action, rule = parse_prefix(prefix)
        except PrefixError as exc:
            problems.append(str(exc))
            continue
        payload = view[attrs[NFULA_PAYLOAD][0] : attrs[NFULA_PAYLOAD][1]]
        key = flow_key(payload)
        if key is None:
            problems.append(f"{prefix!r}: logged packet is not IPv4 with a readable 5-tuple")
            continue
        icmp_type = icmp_code = None
        if key[0] == 1:
            header_len = (payload[0] & 0x0F) * 4
            icmp_type, icmp_code = payload[header_len], payload[header_len + 1]
        verdicts.append(Verdict(
            action=action,
            rule=rule,
            key=key,
            packet_bytes=(payload[2] << 8) | payload[3],
            icmp_type=icmp_type,
            icmp_code=icmp_code,
            mark=nl.be32(view, attrs[NFULA_MARK], "NFULA_MARK") if NFULA_MARK in attrs else 0,
            time=_timestamp(view, attrs.get(NFULA_TIMESTAMP)) or clock(),
        ))  # fmt: skip
    return verdicts, problems


def _timestamp(view: memoryview, span: tuple[int, int] | None) -> float | None:
    if span is None:
        return None
    if span[1] - span[0] < 16:
        raise nl.NetlinkError("NFULA_TIMESTAMP shorter than 16 bytes")
    seconds, micros = struct.unpack_from("!QQ", view, span[0])
    return float(seconds) + float(micros) / 1e6


class NflogGroup:
    """A socket bound to one NFLOG group of this network namespace."""

    # 64 MiB: verdicts queue while the flow-log thread parses a dump of the conntrack table.
    def __init__(self, group: int, receive_buffer: int = 64 << 20, flush_centis: int = 10) -> None:
        if not 0 <= group <= 0xFFFF:
            raise ValueError(f"NFLOG group must be 0..65535, got {group}")
        self.group = group
        self.sock = nl.netfilter_socket(receive_buffer=receive_buffer)
        self.lost_bursts = 0
        try:
            self._configure(
                nl.attribute(NFULA_CFG_CMD, bytes((NFULNL_CFG_CMD_BIND,)))
                + nl.attribute(NFULA_CFG_MODE, struct.pack("!IBB", COPY_RANGE, NFULNL_COPY_PACKET, 0))
                # Each logged packet is sent at once (a queue threshold of 1; the kernel's default
                # batches 100 for up to the flush timeout): a flow's verdict must reach us before
                # conntrack's DESTROY of it does, or its record would have no rule. Only a flow's
                # first packet and denied packets are logged.
                + nl.attribute(NFULA_CFG_QTHRESH, struct.pack("!I", 1))
                + nl.attribute(NFULA_CFG_TIMEOUT, struct.pack("!I", flush_centis))
            )
        except BaseException:
            self.sock.close()
            raise

    def _configure(self, attrs: bytes) -> None:
        self.sock.send(
            nl.request(
                NFNL_SUBSYS_ULOG,
                NFULNL_MSG_CONFIG,
                nl.NLM_F_REQUEST | nl.NLM_F_ACK,
                socket.AF_UNSPEC,
                self.group,
                attrs,
            )
        )
        self.sock.settimeout(5.0)
        try:
            answer = self.sock.recv(1 << 16)
        except TimeoutError:
            raise nl.NetlinkError(f"NFLOG group {self.group}: no answer to the bind") from None
        try:
            list(nl.messages(answer))
        except nl.NetlinkError as exc:
            raise nl.NetlinkError(
                f"NFLOG group {self.group}: bind refused: {exc} (another process bound it?)"
            ) from exc

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self, timeout: float | None = None) -> tuple[list[Verdict], list[str]]:
        """The verdicts of one datagram; ([], []) on timeout. ENOBUFS is counted and raised."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 17)
        except (TimeoutError, BlockingIOError):
            return [], []
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                self.lost_bursts += 1
            raise
        return parse_verdicts(data)

    def close(self) -> None:
        self.sock.close()
