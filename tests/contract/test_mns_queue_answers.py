"""Simple Message Queue (mns-open 2022-01-19) through the real SDK against the lab's local endpoint:
the answers' documented shape (``Code`` 200, ``Status``, ``Message``, ``Success``, ``Data``), a 200
answer whose body says it failed taken as the error it is (F-MNS-4), and the queue-name rule the lab
enforces (a letter first, letters/digits/``-``, at most 120: F-MNS-1, F-MNS-4)."""

from __future__ import annotations

from typing import Any

import pytest

from gwlb_fleet.alibaba import mns
from gwlb_fleet.alibaba.fakes.cloud import FakeCloud
from gwlb_fleet.alibaba.tea import RetryPolicy, SetupApi
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.deploy import cloud as deploy_cloud
from gwlb_fleet.deploy import run
from gwlb_fleet.errors import FleetError, NotFound, PermanentError, TransientError
from gwlb_fleet.settings import Settings
from gwlb_lab.api import LocalOpenApi
from tests.contract.fleet import FleetIds, environment

pytestmark = pytest.mark.contract
NO_RETRY = RetryPolicy(attempts=1, sleep=lambda s: None)


@pytest.fixture
def cloud() -> FakeCloud:
    return FakeCloud()


@pytest.fixture
def fleet_ids() -> FleetIds:
    return FleetIds("asg-mns", "sgp-mns", "lsn-mns")


@pytest.fixture
def settings(api: LocalOpenApi, fleet_ids: FleetIds) -> Settings:
    return Settings.from_environ(environment(api, fleet_ids))  # no contact group: queues only


@pytest.fixture
def queues(settings: Settings) -> SetupApi:
    return mns.setup_api(settings, NO_RETRY)


def invoke(api_of: SetupApi, action: str, params: dict[str, Any]) -> dict[str, Any]:
    return api_of.invoke(action, params, Deadline.after(10))


def refused(api_of: SetupApi, action: str, params: dict[str, Any]) -> FleetError:
    with pytest.raises(FleetError) as caught:
        invoke(api_of, action, params)
    return caught.value


def test_answers_have_the_documented_shape(queues: SetupApi) -> None:
    created = invoke(queues, "CreateQueue", {"QueueName": "alarms-1", "VisibilityTimeout": 60})
    read = invoke(queues, "GetQueueAttributes", {"QueueName": "alarms-1"})
    deleted = invoke(queues, "DeleteQueue", {"QueueName": "alarms-1"})
    for body in (created, read, deleted):  # the GetQueueAttributes sample (F-MNS-4)
        assert body["Code"] == 200 and body["Success"] is True
        assert body["Status"] == "Success" and body["Message"] and body["RequestId"]
    assert read["Data"]["QueueName"] == "alarms-1" and read["Data"]["VisibilityTimeout"] == 60


def test_queue_codes(queues: SetupApi) -> None:
    invoke(queues, "CreateQueue", {"QueueName": "alarms-1"})
    assert refused(queues, "CreateQueue", {"QueueName": "alarms-1"}).code == "QueueAlreadyExist"
    gone = refused(queues, "GetQueueAttributes", {"QueueName": "alarms-2"})
    assert isinstance(gone, NotFound) and gone.code == "QueueNotExist"
    assert isinstance(refused(queues, "DeleteQueue", {"QueueName": "alarms-2"}), NotFound)
    assert refused(queues, "CreateQueue", {}).code == "MissingParameter"
    bad = refused(queues, "CreateQueue", {"QueueName": "alarms-3", "VisibilityTimeout": 0})
    assert bad.code == "InvalidArgument"  # 1-43200 (F-MNS-1)


@pytest.mark.parametrize(
    "name",
    ["1alarms", "-alarms", "alarms_1", "alarms.1", "alarms 1", "alärms", "a" * 121],
)
def test_the_lab_refuses_names_the_rule_refuses(queues: SetupApi, cloud: FakeCloud, name: str) -> None:
    error = refused(queues, "CreateQueue", {"QueueName": name})
    assert error.code == ("QueueNameLengthError" if len(name) > 120 else "InvalidQueueName")  # F-MNS-4
    assert not cloud.mns.queues


@pytest.mark.parametrize("name", ["a", "A-1", "gwlb-fleet-scale-alarms", "a" + "-9" * 59 + "z"])
def test_the_lab_takes_names_the_rule_takes(queues: SetupApi, cloud: FakeCloud, name: str) -> None:
    invoke(queues, "CreateQueue", {"QueueName": name})
    assert set(cloud.mns.queues) == {name} and len(name) <= 120


@pytest.mark.parametrize(
    ("body", "kind", "code"),
    [
        ({"Code": 200, "Success": False, "Message": "no"}, PermanentError, "Success.False"),
        ({"Code": 404, "Success": False, "Message": "no such queue"}, NotFound, "404"),
        ({"Code": 500, "Success": False}, TransientError, "500"),
        ({"Code": 403, "Success": True}, PermanentError, "403"),
        ({"Status": "Success", "Data": {"QueueName": "alarms-1"}}, PermanentError, "Success.False"),
    ],
)
def test_a_200_whose_body_says_it_failed_is_that_failure(
    queues: SetupApi,
    cloud: FakeCloud,
    monkeypatch: pytest.MonkeyPatch,
    body: dict[str, Any],
    kind: type,
    code: str,
) -> None:
    invoke(queues, "CreateQueue", {"QueueName": "alarms-1"})
    monkeypatch.setattr(cloud.mns, "api_get_queue_attributes", lambda name: dict(body))
    error = refused(queues, "GetQueueAttributes", {"QueueName": "alarms-1"})
    assert type(error) is kind and error.code == code


def test_an_answer_about_another_queue_is_refused(
    queues: SetupApi, cloud: FakeCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    invoke(queues, "CreateQueue", {"QueueName": "alarms-1"})
    real = cloud.mns.api_get_queue_attributes
    monkeypatch.setattr(cloud.mns, "api_get_queue_attributes", lambda name: real("alarms-1"))
    invoke(queues, "CreateQueue", {"QueueName": "alarms-2"})
    assert refused(queues, "GetQueueAttributes", {"QueueName": "alarms-2"}).code == "UnexpectedAnswer"


def test_setup_does_not_take_a_failed_read_for_a_present_queue(
    settings: Settings, cloud: FakeCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    failed = {"Code": 200, "Success": False, "Message": "failed"}
    monkeypatch.setattr(cloud.mns, "api_get_queue_attributes", lambda name: dict(failed))
    with pytest.raises(FleetError):
        run.ensure_queue(settings, deploy_cloud.executor(settings, planning=False), "alarms-1")
