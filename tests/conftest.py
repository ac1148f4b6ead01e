"""Test levels by folder: tests/unit, tests/functional, tests/contract, tests/netns.

Each test gets its level's marker from its folder, so `pytest -m unit` selects by level.
netns tests need root and iproute2; elsewhere they are skipped with the reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest

LEVELS = ("unit", "functional", "contract", "netns")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from gwlb_lab.netns import has_netns_privileges

    can_netns, why_not = has_netns_privileges()
    for item in items:
        parts = Path(str(item.fspath)).parts
        level = next((part for part in parts if part in LEVELS), None)
        if level is not None:
            item.add_marker(getattr(pytest.mark, level))
        if level == "netns" and not can_netns:
            item.add_marker(pytest.mark.skip(reason=why_not))


@pytest.fixture(scope="session", autouse=True)
def _sweep_stale_namespaces() -> None:
    """Namespaces left by a crashed earlier run would collide with ours: remove them first."""
    from gwlb_lab.netns import has_netns_privileges, sweep_stale

    if has_netns_privileges()[0]:
        sweep_stale()
