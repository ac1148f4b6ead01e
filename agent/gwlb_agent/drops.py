"""Why a packet was not returned to the GWLB.

Small ints on the hot path (an index into a counter list), names in metrics and logs.
"""

from __future__ import annotations

from enum import IntEnum


class Drop(IntEnum):
    SOURCE_NOT_ALLOWED = 0  # outer source outside the configured GWLB CIDRs
    GENEVE_TRUNCATED = 1
    GENEVE_BAD_VERSION = 2
    GENEVE_OPTIONS_OVERRUN = 3  # option lengths running past the header or the packet
    GENEVE_CONTROL = 4  # O bit: a control message, never forwarded as data
    GENEVE_CRITICAL_OPTION = 5  # only when configured to honour the C bit
    NON_IPV4 = 6
    INNER_TRUNCATED = 7
    INNER_BAD_HEADER = 8
    OVERSIZE = 9
    POLICY_DENY = 10
    FRAGMENT_ORPHAN = 11  # a non-first fragment whose first fragment never came
    FRAGMENT_INVALID = 12  # tiny or overlapping TCP fragments (RFC 1858)
    FLOW_TABLE_FULL = 13
    SEND_ERROR = 14


DROP_NAMES = tuple(reason.name.lower() for reason in Drop)
