"""Unit tests run with the network blocked (tests/network_block.py, installed by tests/unit/conftest.py).

These tests are themselves unit tests, so they see the real block as every other unit test does.
"""

from __future__ import annotations

import re
import socket

import pytest

from tests.network_block import NetworkBlocked


def blocked_for(request: pytest.FixtureRequest) -> str:
    """The start of the error a unit test gets: it names the test."""
    return re.escape(f"{request.node.nodeid}: unit tests run without network access")


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_opening_an_ip_socket_fails_naming_the_test_and_the_marker(
    request: pytest.FixtureRequest, family: socket.AddressFamily
) -> None:
    with pytest.raises(NetworkBlocked, match=blocked_for(request)) as raised:
        socket.socket(family, socket.SOCK_DGRAM)
    assert f"({family.name})" in str(raised.value)
    assert "@pytest.mark.network" in str(raised.value)


def test_the_default_family_is_ip_and_blocked(request: pytest.FixtureRequest) -> None:
    with pytest.raises(NetworkBlocked, match=blocked_for(request)):
        socket.socket()


def test_connecting_to_a_local_port_is_blocked(request: pytest.FixtureRequest) -> None:
    with pytest.raises(NetworkBlocked, match=blocked_for(request)):
        socket.create_connection(("127.0.0.1", 9), timeout=0.1)


@pytest.mark.parametrize("lookup", ["getaddrinfo", "gethostbyname", "gethostbyname_ex"])
def test_name_lookups_are_blocked(request: pytest.FixtureRequest, lookup: str) -> None:
    with pytest.raises(NetworkBlocked, match=blocked_for(request)) as raised:
        getattr(socket, lookup)("gwlb.cn-hangzhou.aliyuncs.com", *((443,) if lookup == "getaddrinfo" else ()))
    assert "'gwlb.cn-hangzhou.aliyuncs.com'" in str(raised.value)


def test_numeric_addresses_need_no_lookup_and_are_allowed() -> None:
    ((_, _, _, _, address),) = socket.getaddrinfo("198.18.1.2", 80, type=socket.SOCK_STREAM)
    assert address == ("198.18.1.2", 80)


def test_unix_socketpairs_are_allowed() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with left, right:
        left.send(b"READY=1")
        assert right.recv(16) == b"READY=1"


@pytest.fixture(scope="module")
def module_fixture_attempt() -> Exception | None:
    """A module-scoped fixture is set up inside the block too (the block wraps the set-up phase)."""
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
    except NetworkBlocked as blocked:
        return blocked
    return None


def test_fixtures_of_wider_scope_are_blocked_too(module_fixture_attempt: Exception | None) -> None:
    assert isinstance(module_fixture_attempt, NetworkBlocked)


@pytest.mark.network
def test_a_test_marked_network_may_open_sockets() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(2)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"ping", receiver.getsockname())
        assert receiver.recv(16) == b"ping"
