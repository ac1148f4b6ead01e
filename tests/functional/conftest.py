"""The fleets the workflow tests run on: either appliance kind (``world``), or VM-Series only."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.functional.world import World


@pytest.fixture(params=["vmseries", "linux"])
def world(tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> World:
    return World(tmp_path, monkeypatch, kind=request.param)


@pytest.fixture
def vmseries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    return World(tmp_path, monkeypatch, kind="vmseries")
