"""KernelPath.close undoes everything it set up, also when one step fails."""

from __future__ import annotations

import os

import pytest

from gwlb_agent.kernel.tun import KernelPath


class Route:
    def __init__(self) -> None:
        self.removed = False

    def remove(self) -> None:
        self.removed = True


class FailingOffload:
    def close(self) -> None:
        raise OSError("bpf_link detach: EIO")


def test_a_failed_offload_detach_still_removes_the_rule_and_closes_the_device() -> None:
    path = object.__new__(KernelPath)
    read_end, write_end = os.pipe()
    os.close(write_end)
    path.route = Route()  # type: ignore[assignment]
    path.offload = FailingOffload()  # type: ignore[assignment]
    path.fd = read_end
    with pytest.raises(OSError, match="EIO"):
        path.close()
    assert path.route.removed, "the policy rule and route were left behind"  # type: ignore[attr-defined]
    assert path.fd is None and path.offload is None
    with pytest.raises(OSError):
        os.fstat(read_end)  # closed
