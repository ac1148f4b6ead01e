"""No network for unit tests: IP (and raw/netlink) sockets and name lookups raise, naming the test.

Installed around every phase (set-up, call, tear-down) of each test under tests/unit by
tests/unit/conftest.py, unless the test is marked ``network``. Wrapping the phases rather than
using a function fixture also covers module- and session-scoped fixtures that a unit test sets up.

What is blocked:

- creating a socket of any family but AF_UNIX (``socket.socket(...)``, so also
  ``socket.create_connection``, ``create_server``, asyncio, urllib, the SDKs' HTTP clients);
- resolving a name (``getaddrinfo``, ``gethostbyname``, ``gethostbyname_ex``) other than a
  numeric address, which needs no lookup.

What is allowed, and why:

- AF_UNIX sockets, ``socketpair()`` included: they cannot leave the machine, and the agent's
  systemd notification (``NOTIFY_SOCKET``) is an AF_UNIX datagram a unit test may exercise;
- wrapping an existing descriptor (``fileno=``): that is ``accept()`` on, or ``fromfd()`` of, a
  socket created elsewhere, e.g. a server started before the unit tests by a test of another
  level and still running in its thread. Its creation was checked (or not) where it happened.

The guard patches the ``socket`` module for the whole process, so a thread the unit test starts is
covered too; a subprocess is not.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

MARKER = "network"
ALLOWED_FAMILIES = frozenset({socket.AF_UNIX})


class NetworkBlocked(RuntimeError):
    """A unit test tried to use the network. Not an OSError, so that no "host unreachable"
    handler in the code under test can swallow it."""


def _message(nodeid: str, what: str) -> str:
    return (
        f"{nodeid}: unit tests run without network access, and this one tried {what}. "
        f"Make it not need the network (a fake, a socketpair), mark it "
        f"@pytest.mark.{MARKER} if it really needs a local socket, or move it to tests/functional "
        f"or tests/contract."
    )


def _is_numeric(host: object) -> bool:
    if host is None:
        return True  # getaddrinfo(None, port): the wildcard or loopback address, no lookup
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    try:
        ipaddress.ip_address(str(host).split("%", 1)[0])
    except ValueError:
        return False
    return True


def _family_name(family: int) -> str:
    try:
        return socket.AddressFamily(family).name
    except ValueError:
        return str(family)


@contextmanager
def network_blocked(nodeid: str) -> Iterator[None]:
    """While inside, the calls listed in the module's docstring raise NetworkBlocked."""
    original_init = socket.socket.__init__
    original_lookups: dict[str, Callable[..., Any]] = {
        name: getattr(socket, name) for name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex")
    }

    def guarded_init(
        self: socket.socket,
        family: int = -1,
        type: int = -1,
        proto: int = -1,
        fileno: int | None = None,
    ) -> None:
        if fileno is None:
            actual = socket.AF_INET if family == -1 else family
            if actual not in ALLOWED_FAMILIES:
                raise NetworkBlocked(_message(nodeid, f"to open a socket ({_family_name(actual)})"))
        original_init(self, family, type, proto, fileno)

    def guarded_lookup(name: str) -> Callable[..., Any]:
        lookup = original_lookups[name]

        def guarded(host: object, *args: Any, **kwargs: Any) -> Any:
            if not _is_numeric(host):
                raise NetworkBlocked(_message(nodeid, f"to resolve {host!r} ({name})"))
            return lookup(host, *args, **kwargs)

        return guarded

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "__init__", guarded_init)
        for name in original_lookups:
            patch.setattr(socket, name, guarded_lookup(name))
        yield
