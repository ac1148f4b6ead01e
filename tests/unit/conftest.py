"""Unit tests run without network access (tests/network_block.py); ``@pytest.mark.network`` lifts
the block for one test. The block wraps each phase, so fixtures of any scope are covered."""

from __future__ import annotations

from collections.abc import Generator

import pytest

from tests.network_block import MARKER, network_blocked


def _guarded(item: pytest.Item) -> Generator[None, object, object]:
    if item.get_closest_marker(MARKER) is not None:
        return (yield)
    with network_blocked(item.nodeid):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _guarded(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _guarded(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    return (yield from _guarded(item))
