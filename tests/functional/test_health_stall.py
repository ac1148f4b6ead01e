"""The health check reports the data plane, not the process: a stalled or dead packet loop
turns /health to 503 within a second, and the supervisor sees a dead loop.

The agent runs in this process (on loopback, free ports) so that one thread of it can be
stalled: its packet processing or its receive call is replaced by one that blocks on an event.
Its reply socket is a raw socket, so these tests need root (CAP_NET_RAW).
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from gwlb_agent.config import AgentConfig, load_config
from gwlb_agent.service import Agent, wait_for_health

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="the agent's reply socket is a raw socket: needs root (CAP_NET_RAW)"
)

STALL_BOUND = 1.0  # the health check must notice within this many seconds


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def config(tmp_path: Path) -> AgentConfig:
    (tmp_path / "agent.toml").write_text("")
    (tmp_path / "policy.toml").write_text('default_action = "allow"\n')
    return load_config(
        tmp_path / "agent.toml",
        {
            "listen": f"127.0.0.1:{_free_port(socket.SOCK_DGRAM)}",
            "health": f"127.0.0.1:{_free_port(socket.SOCK_STREAM)}",
            "gwlb_cidrs": ["127.0.0.0/8"],
            "policy": str(tmp_path / "policy.toml"),
            "flow_log": {"path": str(tmp_path / "flows.jsonl")},
            "appliance_id": "stall-test",
        },
        environ={},
    )


def health(config: AgentConfig) -> tuple[int, str]:
    host, port = config.health_address
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=1) as response:
            return response.status, response.read().decode().strip()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode().strip()
    except OSError as exc:  # not listening (yet, or any more)
        return 0, str(exc)


def wait_health(config: AgentConfig, status: int, timeout: float) -> tuple[float, str]:
    """Seconds until /health answers ``status``, and its body; fails after ``timeout``."""
    start = time.monotonic()
    last = (0, "")
    while time.monotonic() - start < timeout:
        last = health(config)
        if last[0] == status:
            return time.monotonic() - start, last[1]
        time.sleep(0.02)
    raise AssertionError(f"/health not {status} within {timeout}s; last {last}")


def send_one(config: AgentConfig) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"\x00" * 8, config.listen_address)


@pytest.fixture
def agent(config: AgentConfig) -> Iterator[Agent]:
    agent = Agent(config)
    try:
        agent.start()
        assert wait_for_health(agent, timeout=5)
        assert wait_health(config, 200, timeout=5)[1] == "forwarding"
        yield agent
    finally:
        agent.stop()


def test_health_turns_503_within_a_second_when_processing_stalls(agent: Agent, config: AgentConfig) -> None:
    entered, release = threading.Event(), threading.Event()
    original = agent.processor.process

    def stuck(*args: object) -> bool:
        entered.set()
        release.wait(10)
        return False

    agent.processor.process = stuck  # type: ignore[method-assign]
    try:
        send_one(config)
        assert entered.wait(2), "the packet loop never picked up the datagram"
        took, body = wait_health(config, 503, timeout=3)
        assert took <= STALL_BOUND, f"stall noticed after {took:.2f}s"
        assert "stalled" in body
    finally:
        agent.processor.process = original  # type: ignore[method-assign]
        release.set()
    took, body = wait_health(config, 200, timeout=2)
    assert body == "forwarding"


def test_health_turns_503_within_a_second_when_receive_blocks(agent: Agent, config: AgentConfig) -> None:
    assert agent.io is not None
    io = agent.io
    entered, release = threading.Event(), threading.Event()
    original = io.receive

    def blocked() -> int:
        entered.set()
        release.wait(10)
        return 0

    io.receive = blocked  # type: ignore[method-assign]
    try:
        assert entered.wait(2), "the packet loop never called receive"
        took, body = wait_health(config, 503, timeout=3)
        assert took <= STALL_BOUND, f"stall noticed after {took:.2f}s"
        assert "stalled" in body
    finally:
        io.receive = original  # type: ignore[method-assign]
        release.set()
    assert wait_health(config, 200, timeout=2)[1] == "forwarding"


def test_health_turns_503_when_the_loop_dies(agent: Agent, config: AgentConfig) -> None:
    def explode(*args: object) -> bool:
        raise RuntimeError("boom in the packet path")

    agent.processor.process = explode  # type: ignore[method-assign]
    send_one(config)
    took, body = wait_health(config, 503, timeout=3)
    assert took <= STALL_BOUND, f"dead loop noticed after {took:.2f}s"
    assert body == "packet loop not running"
    assert agent.dataplane is not None
    assert isinstance(agent.dataplane.failure, RuntimeError)
    assert agent._loop_thread is not None
    agent._loop_thread.join(1)
    assert not agent._loop_thread.is_alive()
    # Stays unhealthy: nothing restarts a dead loop behind the supervisor's back.
    time.sleep(0.6)
    assert health(config) == (503, "packet loop not running")


@pytest.mark.timeout(60)
def test_supervisor_exits_1_when_the_loop_dies(config: AgentConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    agent = Agent(config)
    signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
    saved = {signum: signal.getsignal(signum) for signum in signals}
    returned = threading.Event()
    failed_at: list[float] = []

    def explode(*args: object) -> bool:
        raise RuntimeError("boom in the packet path")

    def kill_the_loop() -> None:
        try:
            wait_health(config, 200, timeout=5)
            agent.processor.process = explode  # type: ignore[method-assign]
            failed_at.append(time.monotonic())
            send_one(config)
        finally:
            # Bound the test whatever happened: stop the supervisor as SIGTERM would.
            if not returned.wait(10):
                agent._signal_handler("stop")(signal.SIGTERM, None)

    helper = threading.Thread(target=kill_the_loop, daemon=True)
    helper.start()
    try:
        exit_code = agent.run_until_signalled()
        noticed = time.monotonic()
    finally:
        returned.set()
        for signum, handler in saved.items():
            signal.signal(signum, handler)
        helper.join(5)
    assert failed_at, "the agent never became healthy"
    assert exit_code == 1
    assert noticed - failed_at[0] < 3.0
    assert agent.dataplane is not None and isinstance(agent.dataplane.failure, RuntimeError)
