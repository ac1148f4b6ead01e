"""test_gwlb_emulator.py's failover and draining tests again, with both agents answering through
the XDP fast path (``dataplane = "xdp"``: an agent without it does not start; the default attach,
which takes generic mode on the appliances' veths, see test_agent_xdp.py). A killed agent takes its
program with it (the BPF link dies with the process), so the failover the emulator measures is the
same as without XDP.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from gwlb_lab.topology import HEALTH_PORT, Appliance
from tests.netns.test_gwlb_emulator import *  # noqa: F403 - the same tests, collected again here
from tests.netns.test_gwlb_emulator import GwlbLab, running_lab

XDP_SETTINGS = 'dataplane = "xdp"'


@pytest.fixture(scope="module")
def glab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GwlbLab]:
    yield from running_lab(tmp_path_factory, XDP_SETTINGS)


def _metric(glab: GwlbLab, appliance: Appliance, name: str) -> float:
    """From the agent's /metrics, asked from the GWLB's namespace (as the lab asks /status)."""
    url = f"http://{appliance.address}:{HEALTH_PORT}/metrics"
    text = glab.lab.gwlb.run("curl", "-sS", "--max-time", "2", url, timeout=10).stdout
    found = re.search(rf"^gwlb_agent_{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE)
    assert found, f"{name} not in {appliance.appliance_id}'s metrics"
    return float(found.group(1))


def test_the_appliances_answer_web_sessions_in_the_kernel(glab: GwlbLab) -> None:
    glab.ensure_agents()
    before = {a.appliance_id: _metric(glab, a, "xdp_packets_out_total") for a in glab.lab.appliances}
    with glab.emulator_running():
        for _ in range(6):
            result = glab.lab.curl(timeout=3)
            assert (result.exit_code, result.status) == (0, 200), result
    after = {a.appliance_id: _metric(glab, a, "xdp_packets_out_total") for a in glab.lab.appliances}
    assert all(_metric(glab, a, "xdp_attached") == 1 for a in glab.lab.appliances)
    assert all(_metric(glab, a, "xdp_native_mode") == 0 for a in glab.lab.appliances)  # veths: generic
    # Each session's packets after its first (handshake ACK, request, answer, FINs) go by XDP.
    assert sum(after.values()) - sum(before.values()) >= 6 * 3, (before, after)
