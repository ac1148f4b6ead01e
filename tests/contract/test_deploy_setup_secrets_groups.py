"""gwlb-fleet setup's second half, through the real SDKs against the lab's local endpoints: the
dead-letter queue and the function logstore the functions' config names, the KMS secret entries
(created only from set-up's environment, the value never shown), and the CloudMonitor application
group the scaling rules address; teardown's order and what it keeps."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from gwlb_fleet import cli
from gwlb_fleet.alibaba import cms, kms
from gwlb_fleet.alibaba.fakes.cloud import FakeCloud
from gwlb_fleet.alibaba.tea import RetryPolicy
from gwlb_fleet.deadline import Deadline
from gwlb_fleet.deploy import cloud as deploy_cloud
from gwlb_fleet.deploy import plan, run
from gwlb_fleet.errors import FleetError
from gwlb_fleet.settings import Settings
from gwlb_lab.api import LocalOpenApi
from gwlb_lab.sls import LocalSls
from gwlb_lab.sls.client import set_up, sls_config
from tests.contract import fleet

pytestmark = pytest.mark.contract
DEPLOY = fleet.FleetIds("asg-deploy", "sgp-deploy", "lsn-deploy")  # conftest's fleet_ids
NO_RETRY = RetryPolicy(attempts=1, sleep=lambda s: None)
API_KEY_SECRET = "gwlb-fleet/panorama-api-key"
VARIABLE = "GWLB_SETUP_SECRET_PANORAMA_API_KEY"
VALUE = "LUFRPT1-very-secret-api-key-0123456789=="  # what must never be shown


def environment(api: LocalOpenApi, **more: str) -> dict[str, str]:
    return fleet.environment(
        api,
        DEPLOY,
        ALARM_CONTACT_GROUP=fleet.CONTACT_GROUP,
        PANORAMA_API_KEY_SECRET=API_KEY_SECRET,
        **more,
    )


@pytest.fixture
def settings(api: LocalOpenApi) -> Settings:
    return Settings.from_environ(environment(api))


def executor(settings: Settings, **environ: str) -> run.Executor:
    return deploy_cloud.executor(settings, planning=False, environ=environ)


def shown(x: run.Executor) -> str:
    """Everything set-up shows: its report, and its calls as --plan prints them."""
    return "\n".join([*x.report, *(str(call) for call in x.calls)])


# --- the dead-letter queue and the application group ------------------------------------------------


def test_setup_makes_the_dead_letter_queue_and_the_group_the_scaling_rules_address(
    cloud: FakeCloud, api: LocalOpenApi, settings: Settings
) -> None:
    x = executor(settings, **{VARIABLE: VALUE})
    run.setup(settings, x)
    dead_letter = cloud.mns.queues[settings.dead_letter_queue]
    assert dead_letter.attributes["MessageRetentionPeriod"] == plan.DEAD_LETTER_RETENTION_S  # F-MNS-1
    [(group_id, group)] = cloud.cms.monitor_groups.items()
    assert group == {"GroupName": settings.monitor_group_name, "ContactGroups": "gwlb-ops"}
    assert x.outputs["monitor_group_id"] == str(group_id)
    for rule_id in ("gwlb-fleet-scale-out-flows", "gwlb-fleet-scale-in-flows"):
        params = cloud.cms.rules[rule_id]
        assert params["GroupId"] == str(group_id)  # F-CMS-4, F-CMS-11
        assert json.loads(params["Resources"]) == [{"groupId": group_id, "dimension": "groupId=asg-deploy"}]
    assert any(
        f"monitor group {settings.monitor_group_name}: created ({group_id})" in line for line in x.report
    )
    # read back by name before and after the create
    actions = [r.action for r in api.requests if "MonitorGroup" in r.action]
    assert actions == ["DescribeMonitorGroups", "CreateMonitorGroup", "DescribeMonitorGroups"]


def test_a_second_setup_creates_no_group_queue_or_secret(
    cloud: FakeCloud, api: LocalOpenApi, settings: Settings
) -> None:
    run.setup(settings, executor(settings, **{VARIABLE: VALUE}))
    groups, queues = dict(cloud.cms.monitor_groups), set(cloud.mns.queues)
    api.clear()
    x = executor(settings, **{VARIABLE: VALUE})
    run.setup(settings, x)
    assert cloud.cms.monitor_groups == groups and set(cloud.mns.queues) == queues
    assert not {r.action for r in api.requests} & {"CreateMonitorGroup", "CreateQueue", "CreateSecret"}
    assert x.outputs["monitor_group_id"] == str(next(iter(groups)))


def test_a_group_of_a_similar_name_is_not_ours_and_two_of_ours_fail(
    cloud: FakeCloud, settings: Settings
) -> None:
    cloud.cms.api_create_monitor_group({"GroupName": f"{settings.monitor_group_name}-old"})
    x = executor(settings, **{VARIABLE: VALUE})
    run.setup(settings, x)
    ours = [
        gid for gid, g in cloud.cms.monitor_groups.items() if g["GroupName"] == settings.monitor_group_name
    ]
    assert len(ours) == 1 and x.outputs["monitor_group_id"] == str(ours[0])
    cloud.cms.api_create_monitor_group({"GroupName": settings.monitor_group_name})
    with pytest.raises(run.SetupFailed, match="2 CloudMonitor application groups"):
        run.setup(settings, executor(settings, **{VARIABLE: VALUE}))


def test_teardown_deletes_the_group_after_its_rules_and_keeps_the_dead_letter_queue_and_secrets(
    cloud: FakeCloud, api: LocalOpenApi, settings: Settings
) -> None:
    run.setup(settings, executor(settings, **{VARIABLE: VALUE}))
    cloud.mns.send(settings.dead_letter_queue, '{"failed": "event"}')
    api.clear()
    x = executor(settings)
    run.teardown(settings, x)
    actions = [r.action for r in api.requests]
    assert actions.index("DeleteMetricRules") < actions.index("DeleteMonitorGroup")  # F-CMS-11
    assert not cloud.cms.monitor_groups and not cloud.cms.rules
    assert set(cloud.mns.queues) == {settings.dead_letter_queue}
    assert [r.params["QueueName"] for r in api.recorded("DeleteQueue")] == [
        settings.health_alarm_queue,
        settings.scale_alarm_queue,
    ]
    assert API_KEY_SECRET in cloud.kms.secrets
    assert "CreateSecret" not in actions and not any("Secret" in a for a in actions)
    assert f"kept: dead-letter queue {settings.dead_letter_queue} (1 message; delete it by hand)" in x.report
    assert f"kept: KMS secret {API_KEY_SECRET} (teardown never deletes secrets)" in x.report
    again = executor(settings)
    run.teardown(settings, again)  # the group is gone: nothing to delete, nothing failed
    assert f"monitor group {settings.monitor_group_name}: not there" in again.report


def test_the_agents_group_id_reaches_the_rules_group(cloud: FakeCloud, settings: Settings) -> None:
    """What the rule addresses (GroupId) is what a point published with the output's id carries."""
    x = executor(settings, **{VARIABLE: VALUE})
    run.setup(settings, x)
    rule = cloud.cms.rules["gwlb-fleet-scale-out-flows"]
    assert int(rule["GroupId"]) == int(x.outputs["monitor_group_id"]) in cloud.cms.monitor_groups


# --- KMS secrets --------------------------------------------------------------------------------------


def test_a_missing_secret_without_its_variable_fails_with_the_fix(
    cloud: FakeCloud, settings: Settings
) -> None:
    with pytest.raises(run.SetupFailed) as failed:
        run.setup(settings, executor(settings))
    assert VARIABLE in str(failed.value) and API_KEY_SECRET in str(failed.value)
    assert "KMS Secrets Manager" in str(failed.value)
    assert failed.value.code == "SecretNotFound"
    assert not cloud.kms.secrets and not cloud.mns.queues  # failed before making anything


def test_a_missing_secret_is_created_from_its_variable_and_read_back(
    cloud: FakeCloud, api: LocalOpenApi, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    x = executor(settings, **{VARIABLE: VALUE})
    run.setup(settings, x)
    secret = cloud.kms.secrets[API_KEY_SECRET]
    assert secret.versions == {plan.SECRET_VERSION: VALUE} and secret.data_type == "text"
    assert secret.stages == {"ACSCurrent": plan.SECRET_VERSION}
    [created] = api.recorded("CreateSecret")
    assert created.params["SecretName"] == API_KEY_SECRET
    assert created.params["VersionId"] == "v1" and created.params["SecretDataType"] == "text"
    assert "EncryptionKeyId" not in created.params  # the default key: no kms:Decrypt (F-KMS-1)
    kms_calls = [r.action for r in api.requests if r.action in ("DescribeSecret", "CreateSecret")]
    assert kms_calls == ["DescribeSecret", "CreateSecret", "DescribeSecret"]
    assert f"secret {API_KEY_SECRET}: created from ${VARIABLE}" in x.report
    assert VALUE not in shown(x)
    assert VALUE not in caplog.text
    assert f"<from ${VARIABLE}>" in str(next(c for c in x.calls if c.action == "CreateSecret"))


def test_an_existing_secret_is_never_written(cloud: FakeCloud, api: LocalOpenApi, settings: Settings) -> None:
    cloud.kms.put_secret(API_KEY_SECRET, "the-operators-own-key")
    x = executor(settings, **{VARIABLE: VALUE})
    run.setup(settings, x)
    assert not api.recorded("CreateSecret")
    assert list(cloud.kms.secrets[API_KEY_SECRET].versions.values()) == ["the-operators-own-key"]
    assert f"secret {API_KEY_SECRET}: present" in x.report


def test_a_refused_create_secret_shows_no_value(
    cloud: FakeCloud, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    cloud.kms.denied.add(API_KEY_SECRET)
    x = deploy_cloud.executor(settings, planning=False, environ={VARIABLE: VALUE})
    x.apis = {**(x.apis or {}), "kms": kms.setup_api(settings, NO_RETRY)}
    with pytest.raises(FleetError) as refused:
        run.setup(settings, x)
    assert refused.value.code == "Forbidden.NoPermission"
    assert VALUE not in str(refused.value) and VALUE not in repr(refused.value)
    assert VALUE not in shown(x) and VALUE not in caplog.text


def test_another_run_creating_the_secret_first_is_success(cloud: FakeCloud, settings: Settings) -> None:
    """Rejected.ResourceExist (F-KMS-5) on CreateSecret: done; read back all the same."""
    x = executor(settings, **{VARIABLE: VALUE})
    real = x.apis["kms"]  # type: ignore[index]

    class RaceFirst:
        def invoke(self, action: str, params: dict[str, object], deadline: Deadline) -> dict[str, object]:
            if action == "CreateSecret":
                cloud.kms.put_secret(API_KEY_SECRET, "made-by-the-other-run")
            return real.invoke(action, params, deadline)  # type: ignore[no-any-return]

    x.apis = {**x.apis, "kms": RaceFirst()}  # type: ignore[dict-item]
    run.setup(settings, x)
    assert any("already so (Rejected.ResourceExist)" in line for line in x.report)
    assert list(cloud.kms.secrets[API_KEY_SECRET].versions.values()) == ["made-by-the-other-run"]


def test_plan_shows_the_variable_never_the_value(
    api: LocalOpenApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env_file = tmp_path / "settings.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in environment(api).items()))
    monkeypatch.setenv(VARIABLE, VALUE)
    assert cli.main(["setup", "--plan", "--env-file", str(env_file)]) == 0
    out = capsys.readouterr()
    assert VALUE not in out.out + out.err
    [line] = [line for line in out.out.splitlines() if "CreateSecret" in line]
    assert f'"SecretData": "<from ${VARIABLE}>"' in line and '"VersionId": "v1"' in line
    assert "CreateMonitorGroup" in out.out and "DeleteMonitorGroup" not in out.out
    assert not api.requests  # --plan makes no call


def test_a_setup_failure_on_the_command_line_shows_no_value(
    cloud: FakeCloud,
    api: LocalOpenApi,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env_file = tmp_path / "settings.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in environment(api).items()))
    monkeypatch.setenv(VARIABLE, VALUE)
    cloud.cms.contact_groups.clear()  # fails after the secret was created
    assert cli.main(["setup", "--env-file", str(env_file)]) != 0
    out = capsys.readouterr()
    assert "contact group" in out.err and VALUE not in out.out + out.err


def test_teardown_plan_says_secrets_are_kept(api: LocalOpenApi, settings: Settings) -> None:
    x = deploy_cloud.executor(settings, planning=True, environ={VARIABLE: VALUE})
    run.teardown(settings, x)
    assert f"kept: KMS secret {API_KEY_SECRET} (teardown never deletes secrets)" in x.report
    assert not any(call.service == "kms" for call in x.calls) and not api.requests


def test_teardown_plan_on_the_command_line_prints_what_it_keeps(
    api: LocalOpenApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env_file = tmp_path / "settings.env"
    stores = {
        "SLS_ENDPOINT": "cn-hangzhou.log.aliyuncs.com",
        "SLS_PROJECT": "gwlb-logs",
        "STATE_STORE": "tablestore",
        "TABLESTORE_ENDPOINT": "https://fleet.cn-hangzhou.ots.aliyuncs.com",
        "TABLESTORE_INSTANCE": "fleet",
    }
    env_file.write_text("".join(f"{k}={v}\n" for k, v in environment(api, **stores).items()))
    assert cli.main(["teardown", "--plan", "--env-file", str(env_file)]) == 0
    kept = [line for line in capsys.readouterr().out.splitlines() if line.startswith("kept:")]
    assert any(f"KMS secret {API_KEY_SECRET}" in line for line in kept), kept
    assert any("dead-letter queue" in line for line in kept), kept
    assert any("SLS project" in line for line in kept) and any("Tablestore" in line for line in kept), kept
    assert not api.requests  # --plan makes no call


def test_only_the_secret_variables_are_taken_from_the_environment(settings: Settings) -> None:
    x = deploy_cloud.executor(
        settings, planning=True, environ={VARIABLE: VALUE, "HOME": "/root", "OTHER": "x"}
    )
    assert dict(x.environ) == {VARIABLE: VALUE}
    assert VALUE not in repr(x)


# --- the endpoint refuses what KMS and CloudMonitor refuse ---------------------------------------------


def invoke(service_api: object, action: str, params: dict[str, object]) -> dict[str, object]:
    return service_api.invoke(action, params, Deadline.after(10))  # type: ignore[attr-defined,no-any-return]


def test_create_secret_checks_its_parameters_and_answers_kms_codes(
    cloud: FakeCloud, settings: Settings
) -> None:
    secrets = kms.setup_api(settings, NO_RETRY)
    good = {"SecretName": "a/b", "SecretData": VALUE, "VersionId": "v1", "SecretDataType": "text"}
    invoke(secrets, "CreateSecret", good)
    cases = [
        (good, "Rejected.ResourceExist"),  # F-KMS-5
        ({**good, "SecretName": "c", "VersionId": ""}, "MissingParameter"),
        ({**good, "SecretName": "c", "SecretData": ""}, "MissingParameter"),
        ({**good, "SecretName": "acs/c"}, "InvalidParameter"),  # F-KMS-2: not acs/ for Generic
        ({**good, "SecretName": "c d"}, "InvalidParameter"),
        ({**good, "SecretName": "c", "VersionId": "v" * 65}, "InvalidParameter"),
        ({**good, "SecretName": "c", "SecretDataType": "json"}, "InvalidParameter"),
        ({**good, "SecretName": "c", "SecretData": "x" * 30721}, "InvalidParameter"),
    ]
    for params, code in cases:
        with pytest.raises(FleetError) as refused:
            invoke(secrets, "CreateSecret", params)
        assert refused.value.code == code, params["SecretName"]
        assert VALUE not in str(refused.value)
    assert set(cloud.kms.secrets) == {"a/b"}


def test_monitor_group_calls_check_their_parameters(cloud: FakeCloud, settings: Settings) -> None:
    groups = cms.setup_api(settings, NO_RETRY)
    with pytest.raises(FleetError) as missing:
        invoke(groups, "CreateMonitorGroup", {"ContactGroups": "gwlb-ops"})
    assert missing.value.code == "MissingParameter"
    created = invoke(groups, "CreateMonitorGroup", {"GroupName": "g"})
    group_id = created["GroupId"]
    assert isinstance(group_id, int)
    listed = invoke(groups, "DescribeMonitorGroups", {"GroupName": "g", "PageNumber": 1, "PageSize": 10})
    assert [r["GroupId"] for r in listed["Resources"]["Resource"]] == [group_id]  # type: ignore[index]
    rule = dict(plan.scale_rules(settings, "999")[0].params)
    with pytest.raises(FleetError) as unknown_group:
        invoke(groups, "PutCustomMetricRule", rule)
    assert unknown_group.value.code == "InvalidParameter"
    invoke(groups, "DeleteMonitorGroup", {"GroupId": group_id})
    with pytest.raises(FleetError) as gone:
        invoke(groups, "DeleteMonitorGroup", {"GroupId": group_id})
    assert gone.value.code == "InvalidQueryParameter"  # F-CMS-11: the documented 400


# --- the function logstore ----------------------------------------------------------------------------


def test_sls_setup_makes_the_function_logstore(api: LocalOpenApi) -> None:
    from gwlb_fleet.sls.client import Sls

    with LocalSls(keys={"sls-id": "sls-secret"}) as local:
        set_up(local, "gwlb-deploy")  # the project, as set_up_sls leaves it
        sls = Sls(sls_config(local, "gwlb-deploy"))
        settings = Settings.from_environ(environment(api, FUNCTION_LOGSTORE="fn-logs"))
        lines = deploy_cloud.set_up_function_logstore(sls, settings)
        assert [line.split()[1:4] for line in lines] == [
            ["logstore", "fn-logs", "created"],
            ["index", "fn-logs", "created"],
        ]
        assert sls.call("get_logstore", "gwlb-deploy", "fn-logs").ttl == plan.FUNCTION_LOG_RETENTION_DAYS
        again = deploy_cloud.set_up_function_logstore(sls, settings)
        assert [line.split()[3] for line in again] == ["unchanged", "unchanged"]
