"""Throttling with ``x-acs-retry-after`` (F-API-1), end to end on loopback: the real Tea SDK client
(the ESS adapter) against the lab's local OpenAPI endpoint, which answers ``Throttling`` with the
header set. Time is a FakeClock: the adapter's sleeps are recorded and advance it, nothing waits."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gwlb_fleet.alibaba.ess import EssAdapter
from gwlb_fleet.alibaba.fakes.cloud import FakeCloud
from gwlb_fleet.alibaba.tea import RetryPolicy
from gwlb_fleet.clock import FakeClock
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.errors import TransientError
from gwlb_fleet.settings import Settings
from gwlb_lab.api import LocalOpenApi

GROUP, SERVER_GROUP, LISTENER, REGION = "asg-fleet", "sgp-fleet", "lsn-fleet", "cn-hangzhou"


class SleepRecorder:
    """The adapter's sleep: remembers each wait and moves the fake clock by it."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.sleep(seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(0.0)


@pytest.fixture
def cloud() -> FakeCloud:
    cloud = FakeCloud(clock=FakeClock())
    cloud.seed_fleet(GROUP, SERVER_GROUP, LISTENER, min_size=0, max_size=4, desired=2)
    return cloud


def ess_adapter(api: LocalOpenApi, sleep: SleepRecorder) -> EssAdapter:
    settings = Settings.model_validate(
        {
            "FLEET_REGION": REGION,
            "SCALING_GROUP_ID": GROUP,
            "GWLB_SERVER_GROUP_ID": SERVER_GROUP,
            "GWLB_LISTENER_ID": LISTENER,
            "ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI-lab",
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "lab-secret",
            "API_TIMEOUT_S": "5",
            **api.env(),
        }
    )
    # a backoff far shorter than any retry-after below: a wait of that length is the service's
    return EssAdapter.from_settings(
        settings, RetryPolicy(attempts=5, first_wait=0.01, max_wait=0.05, sleep=sleep)
    )


@pytest.fixture
def throttling_api(cloud: FakeCloud, request: pytest.FixtureRequest) -> Iterator[LocalOpenApi]:
    with LocalOpenApi(cloud, retry_after_s=request.param) as api:
        yield api


@pytest.mark.parametrize("throttling_api", [2.5], indirect=True)
def test_the_adapter_waits_the_retry_after_then_succeeds(
    throttling_api: LocalOpenApi, clock: FakeClock
) -> None:
    throttling_api.cloud.ess.fail_next = ["Throttling"]
    sleep = SleepRecorder(clock)

    group = ess_adapter(throttling_api, sleep).describe_group(
        GROUP, Deadline.after(60.0, margin=0.0, clock=clock)
    )

    assert group.group_id == GROUP
    assert sleep.waits == [2.5]  # x-acs-retry-after: 2500 (ms)
    assert [r.code for r in throttling_api.recorded("DescribeScalingGroups")] == ["Throttling", ""]


@pytest.mark.parametrize("throttling_api", [30.0], indirect=True)
def test_a_retry_after_beyond_the_deadline_is_a_transient_error_without_waiting(
    throttling_api: LocalOpenApi, clock: FakeClock
) -> None:
    throttling_api.cloud.ess.fail_next = ["Throttling"]
    sleep = SleepRecorder(clock)

    with pytest.raises(TransientError) as err:
        ess_adapter(throttling_api, sleep).describe_group(
            GROUP, Deadline.after(10.0, margin=0.0, clock=clock)
        )

    assert err.value.code == "Throttling" and err.value.service == "ess"
    assert "retry after 30.000 s" in str(err.value)
    assert sleep.waits == [] and clock.now == 0.0
    assert [r.code for r in throttling_api.recorded("DescribeScalingGroups")] == ["Throttling"]
