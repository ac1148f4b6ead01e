"""template.yml's PAN-OS log intake: the function, its HTTP trigger (F-FCT-10), its settings and
what its role may do."""

from __future__ import annotations

import json
import re
from pathlib import Path

from gwlb_fleet.settings import Settings
from gwlb_fleet.sls.flowwriter import RAM_ACTIONS
from gwlb_functions.panlogs import handler
from tests import fctemplate

ROOT = Path(__file__).resolve().parents[2]


def panlogs() -> fctemplate.Function:
    return next(f for f in fctemplate.functions() if f.resource == "panlogs")


def test_the_intake_has_one_anonymous_post_only_http_trigger() -> None:
    function = panlogs()
    assert function.props["handler"] == "gwlb_functions.panlogs.handler"
    assert callable(handler)
    (trigger,) = function.triggers
    assert trigger["triggerType"] == "http"
    config = trigger["triggerConfig"]
    # anonymous at FC's layer: PAN-OS cannot sign FC's requests; the function checks the token
    assert config["authType"] == "anonymous"
    assert config["methods"] == ["POST"]
    assert "asyncInvokeConfig" not in function.props, "invoked synchronously: the sender retries"


def test_the_intake_reads_its_token_from_kms_by_name_and_writes_the_flow_logstore() -> None:
    function = panlogs()
    raw = fctemplate.raw_template()["resources"]["panlogs"]["props"]["environmentVariables"]
    assert re.fullmatch(r"\$\{vars\.[A-Za-z]+SecretName\}", raw["PANLOGS_TOKEN_SECRET"]), "a name, no value"
    variables = fctemplate.template_vars()
    resolved = function.environment
    settings = Settings.model_validate(
        {**resolved, "SCALING_GROUP_ID": "asg-1", "GWLB_SERVER_GROUP_ID": "sgp", "GWLB_LISTENER_ID": "lsn"}
    )
    assert settings.panlogs_token_secret == variables["panlogsTokenSecretName"]
    assert settings.flow_logstore == variables["flowLogstore"] == "flow-logs"
    assert settings.panlogs_auth_header == variables["panlogsAuthHeader"]
    assert settings.function_timeout_s == function.props["timeout"]


def test_its_role_may_read_the_token_and_write_the_flow_logstore_only() -> None:
    policy = json.loads((ROOT / "functions" / "ram-policy.json").read_text())
    grants = {
        action: [r for s in policy["Statement"] if action in s["Action"] for r in s["Resource"]]
        for action in ("kms:GetSecretValue", *sorted(RAM_ACTIONS))
    }
    assert "acs:kms:${region}:${accountId}:secret/${panlogsTokenSecretName}" in grants["kms:GetSecretValue"]
    assert (
        "acs:log:${region}:${accountId}:project/${logProject}/logstore/${flowLogstore}"
        in grants["log:PostLogStoreLogs"]
    )
