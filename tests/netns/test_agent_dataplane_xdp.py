"""test_agent_dataplane.py's end-to-end tests again, with the agents in ``dataplane = "auto"`` and
generic XDP (see test_agent_xdp.py for why generic): the shared agent on 6081 holds the
interface's XDP program, so the packets of the flows it decided are answered in the kernel;
agents a test starts beside it find the interface taken and run without XDP, saying why.
Every assertion on replies, drops, records and health holds in both modes.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from tests.netns.conftest import AgentFactory, AgentProcess
from tests.netns.test_agent_dataplane import *  # noqa: F403 - the same tests, collected again here
from tests.netns.test_agent_dataplane import GENEVE_PORT, MAIN_POLICY

XDP_ENV = {"GWLB_AGENT_DATAPLANE": "auto", "GWLB_AGENT_XDP_ATTACH": "generic"}


@pytest.fixture(scope="module")
def agent_factory(agent_factory: AgentFactory) -> AgentFactory:
    """The conftest's factory, every agent with the fast path asked for."""

    def start(
        policy: str, *, env: dict[str, str] | None = None, **options: Sequence[str] | int | None
    ) -> AgentProcess:
        return agent_factory(policy, env={**XDP_ENV, **(env or {})}, **options)

    return start


@pytest.fixture(scope="module")
def agent(agent_factory: AgentFactory) -> AgentProcess:
    shared = agent_factory(MAIN_POLICY, listen_port=GENEVE_PORT)
    assert "XDP fast path attached" in shared.log_text(), shared.log_text()
    return shared


def test_the_shared_agent_answered_in_the_kernel(agent: AgentProcess) -> None:
    """Run last in this module: the tests above sent flows of more than one packet through it."""
    assert agent.metrics()["gwlb_agent_xdp_packets_out_total"] > 0
