"""template.yml is what `s deploy` accepts and what the code expects.

- each fc3 resource's props validate against the fc3 component's own schema (a vendored copy:
  /work/shared/vendor/fc3-props.schema.json), and against a closed copy of it that refuses keys the
  schema does not know (the vendor schema lets a misspelt key through silently);
- each trigger's config validates against the schema of its own trigger type;
- the environment is exactly Settings' fields: every variable is a field (by alias), every required
  field is set for every function, and the values validate;
- handlers (and the initializer) exist and are callables;
- the triggers reach the functions meant for them: every example event under tests/events goes to
  the function that accepts it, and nowhere else (alarms by their MNS queue, F-FCT-1);
- async invocation is bounded and ends in a dead letter.
"""

from __future__ import annotations

import copy
import importlib
import json
import re
import shlex
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jsonschema
import pytest

from gwlb_fleet.errors import BadEvent
from gwlb_fleet.events import (
    LIFECYCLE_SOURCE,
    LIFECYCLE_TYPE_OF,
    MNS_QUEUE_MESSAGE_TYPE,
    alarm_body,
    alarm_message,
    trigger_source,
)
from gwlb_fleet.settings import Settings
from gwlb_functions import ASYNC_RETRIES
from tests import fctemplate
from tests.fctemplate import Function, functions, source_queue, source_type, trigger_takes

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATHS = [
    ROOT / "shared" / "vendor" / "fc3-props.schema.json",  # if the repository ever carries a copy
    Path("/work/shared/vendor/fc3-props.schema.json"),
]
EVENTS = ROOT / "tests" / "events"

# The example events and the one function each must reach (None: no function at all).
ROUTES = {
    "mns-cms-alarm-scale-out-active-flows.json": "scale",
    "mns-cms-alarm-scale-in-ok.json": "scale",
    "mns-cms-alarm-base64-body.json": "scale",
    "mns-cms-alarm-batch.json": "scale",
    "mns-cms-alarm-gwlb-unhealthy.json": "health",
    "mns-cms-alarm-doc-example.json": None,  # the documented example's queue (zeus) is not ours
    "ess-lifecycle-scale-out.json": "lifecycle",
    "ess-lifecycle-scale-in-content.json": "lifecycle",
    "ess-lifecycle-pascal-case.json": "lifecycle",
    "ess-lifecycle-no-token.json": "lifecycle",
    "ess-lifecycle-test.json": None,  # a hook's test notification is not a launch
    "timer-reconcile.json": "reconcile",  # by its payload: the timer trigger's
}
TRIGGER_CONFIG_SCHEMAS = {
    "timer": "ITimerTriggerConfig",
    "eventbridge": "IEventBridge",
    "http": "IHttpTriggerConfig",
}
HOOK_TIMEOUT_MAX_S = 21600  # ESS: a lifecycle hook waits at most 6 hours


def vendor_schema() -> dict[str, Any]:
    for path in SCHEMA_PATHS:
        if path.exists():
            return json.loads(path.read_text())  # type: ignore[no-any-return]
    pytest.skip("the fc3 props schema is not on this machine (see shared/vendor/README.md)")


def closed(schema: Any) -> Any:
    """The schema with ``additionalProperties: false`` wherever it lists properties and says
    nothing about others. ``if`` clauses stay open: closing them would change what they select."""
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: (value if key == "if" else closed(value)) for key, value in schema.items()}
    if "properties" in schema and "additionalProperties" not in schema:
        result["additionalProperties"] = False
    return result


def validation_errors(schema: dict[str, Any], instance: Any) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '(props)'}: {error.message}"
        for error in validator.iter_errors(instance)
    ]


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return vendor_schema()


FUNCTIONS = functions()
IDS = [f.resource for f in FUNCTIONS]
# The functions FC invokes asynchronously (events, timers): retries and a dead letter. The HTTP
# function (panlogs) is invoked synchronously: its sender gets the answer and sends again.
ASYNC_FUNCTIONS = [f for f in FUNCTIONS if any(t["triggerType"] != "http" for t in f.triggers)]
ASYNC_IDS = [f.resource for f in ASYNC_FUNCTIONS]


def test_the_five_functions_are_there() -> None:
    assert sorted(f.resource for f in FUNCTIONS) == ["health", "lifecycle", "panlogs", "reconcile", "scale"]
    assert sorted(f.resource for f in ASYNC_FUNCTIONS) == ["health", "lifecycle", "reconcile", "scale"]
    raw = fctemplate.raw_template()
    assert raw["edition"] == "3.0.0"
    assert {r["component"] for r in raw["resources"].values()} == {"fc3"}


@pytest.mark.parametrize("function", FUNCTIONS, ids=IDS)
def test_props_validate_against_the_fc3_schema(function: Function, schema: dict[str, Any]) -> None:
    assert validation_errors(schema, function.props) == []
    assert validation_errors(closed(schema), function.props) == [], "a key the fc3 schema does not know"


@pytest.mark.parametrize("function", FUNCTIONS, ids=IDS)
def test_each_trigger_validates_against_its_own_type(function: Function, schema: dict[str, Any]) -> None:
    assert function.triggers, f"{function.resource} has no trigger"
    for trigger in function.triggers:
        definition = TRIGGER_CONFIG_SCHEMAS[trigger["triggerType"]]
        own = {**closed(schema["definitions"][definition]), "definitions": schema["definitions"]}
        assert validation_errors(own, trigger["triggerConfig"]) == [], trigger["triggerName"]


def test_closing_the_schema_catches_a_misspelt_key(schema: dict[str, Any]) -> None:
    props = copy.deepcopy(FUNCTIONS[0].props)
    props["asyncInvokeConfig"]["maxAsyncRetryAttempt"] = props["asyncInvokeConfig"].pop(
        "maxAsyncRetryAttempts"
    )
    assert validation_errors(schema, props) == []  # the vendor schema lets it through
    assert validation_errors(closed(schema), props) != []


# --- settings ----------------------------------------------------------------------------------------


def settings_aliases() -> dict[str, str]:
    """Environment variable -> field name."""
    aliases = {}
    for name, field in Settings.model_fields.items():
        assert isinstance(field.validation_alias, str), f"Settings.{name} has no environment variable"
        aliases[field.validation_alias.upper()] = name
    return aliases


def required_variables() -> set[str]:
    return {
        str(field.validation_alias).upper() for field in Settings.model_fields.values() if field.is_required()
    }


@pytest.mark.parametrize("function", FUNCTIONS, ids=IDS)
def test_every_variable_is_a_settings_field(function: Function) -> None:
    unknown = set(function.environment) - set(settings_aliases())
    assert not unknown, f"{function.resource}: not fields of gwlb_fleet.settings.Settings: {sorted(unknown)}"


@pytest.mark.parametrize("function", FUNCTIONS, ids=IDS)
def test_every_required_field_is_set(function: Function) -> None:
    missing = required_variables() - set(function.environment)
    assert not missing, f"{function.resource} lacks required settings: {sorted(missing)}"


@pytest.mark.parametrize("function", FUNCTIONS, ids=IDS)
def test_the_values_are_valid_settings(function: Function) -> None:
    settings = Settings.model_validate(function.environment)
    assert settings.function_timeout_s == function.props["timeout"], "the idempotency expiry is the timeout"


def test_the_template_names_secrets_and_holds_none() -> None:
    """F-KMS-1: secret values live in KMS Secrets Manager; the functions' environment has only the
    secrets' names. The one SecretStr settings are the STS credentials FC sets itself (F-FC-1)."""
    secret_fields = {
        str(field.validation_alias).upper()
        for field in Settings.model_fields.values()
        if "SecretStr" in str(field.annotation)
    }
    assert secret_fields, "Settings has no SecretStr field: is this test still looking at the right class?"
    assert all(name.startswith("ALIBABA_CLOUD_") for name in secret_fields), secret_fields
    names = {a for a in settings_aliases() if a.endswith("_SECRET") and not a.startswith("ALIBABA")}
    assert {"PANORAMA_API_KEY_SECRET", "BOOTSTRAP_AUTHCODES_SECRET"} <= names
    raw = fctemplate.raw_template()
    for function in raw["resources"].values():
        environment = function["props"].get("environmentVariables") or {}
        assert not secret_fields & set(environment), "FC sets the credentials; the template must not"
        for variable in names & set(environment):
            assert re.fullmatch(r"\$\{vars\.[A-Za-z]+SecretName\}", environment[variable]), variable
    assert all(default == "" for default in fctemplate.env_references().values()), "a committed default"
    secret_vars = {name for name in raw["vars"] if "key" in name.lower() or "secret" in name.lower()}
    assert all(name.endswith("SecretName") for name in secret_vars), f"a secret in vars: {secret_vars}"


# --- handlers and triggers ------------------------------------------------------------------------------


@pytest.mark.parametrize("function", FUNCTIONS, ids=IDS)
def test_handlers_exist_and_are_callables(function: Function) -> None:
    handler = function.props["handler"]
    module, name = handler.rsplit(".", 1)
    assert module == f"gwlb_functions.{function.resource}", "one module per function, named as the resource"
    assert callable(getattr(importlib.import_module(module), name)), handler
    initializer = function.props["instanceLifecycleConfig"]["initializer"]["handler"]
    module, name = initializer.rsplit(".", 1)
    assert callable(getattr(importlib.import_module(module), name)), initializer


def test_the_code_is_what_package_fc_builds() -> None:
    package_fc = fctemplate.package_fc()
    for function in FUNCTIONS:
        assert (ROOT / function.props["code"]).resolve() == package_fc.ZIP_PATH.resolve()
        assert function.props["runtime"] == package_fc.RUNTIME


class Accepted(Exception):
    """Raised where the frame would start the work: the event got past parsing and routing."""


def reaches(function: Function, event: bytes, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Does the function's real handler accept the event (parse it, and take its type)?"""

    def begin(*args: Any) -> None:
        raise Accepted

    app = SimpleNamespace(
        settings=SimpleNamespace(function_timeout_s=function.props["timeout"]),
        state=SimpleNamespace(begin=begin),
        refresh_credentials=lambda: None,
    )
    monkeypatch.setattr("gwlb_fleet.app.get_app", lambda: app)
    handler = importlib.import_module(function.module).handler
    try:
        handler(event, None)
    except Accepted:
        return True
    except BadEvent:
        return False
    raise AssertionError("the handler returned without starting the work")


def eventbridge_triggers(function: Function) -> list[dict[str, Any]]:
    return [t for t in function.triggers if t["triggerType"] == "eventbridge"]


def routed_to(event: dict[str, Any]) -> list[str]:
    """The functions one of whose eventbridge triggers takes the event."""
    return [f.resource for f in FUNCTIONS if any(trigger_takes(t, event) for t in eventbridge_triggers(f))]


def timer_payloads(function: Function) -> list[str]:
    return [t["triggerConfig"].get("payload", "") for t in function.triggers if t["triggerType"] == "timer"]


@pytest.mark.parametrize(("example", "destination"), sorted(ROUTES.items(), key=lambda kv: kv[0]))
def test_each_example_event_reaches_exactly_its_function(
    example: str, destination: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = json.loads((EVENTS / example).read_text())
    batch = loaded if isinstance(loaded, list) else [loaded]  # event streaming pushes a list (F-FCT-4)
    for event in batch:
        if "triggerTime" in event:
            routed = [f.resource for f in FUNCTIONS if event["payload"] in timer_payloads(f)]
        else:
            routed = routed_to(event)
        assert routed == ([destination] if destination else [])
    for function in FUNCTIONS:
        if function.resource == destination:
            assert reaches(function, (EVENTS / example).read_bytes(), monkeypatch), "routed, then refused"


def test_every_example_has_a_route() -> None:
    assert set(ROUTES) == {p.name for p in EVENTS.glob("*.json")}


@pytest.mark.parametrize("function", FUNCTIONS, ids=IDS)
def test_timer_triggers_reach_their_function(function: Function, monkeypatch: pytest.MonkeyPatch) -> None:
    for trigger in function.triggers:
        if trigger["triggerType"] != "timer":
            continue
        config = trigger["triggerConfig"]
        assert config["enable"] is True
        assert re.fullmatch(r"@every \d+[mh]", config["cronExpression"]), config["cronExpression"]
        event = {
            "triggerTime": "2026-11-21T09:35:00Z",
            "triggerName": trigger["triggerName"],
            "payload": config.get("payload", ""),
        }
        assert reaches(function, json.dumps(event).encode(), monkeypatch), trigger["triggerName"]


def test_trigger_names_are_unique_per_function() -> None:
    for function in FUNCTIONS:
        names = [t["triggerName"] for t in function.triggers]
        assert len(names) == len(set(names)), function.resource


def test_reconcile_runs_on_a_timer_and_health_on_both() -> None:
    kinds = {f.resource: sorted({t["triggerType"] for t in f.triggers}) for f in FUNCTIONS}
    assert kinds == {
        "lifecycle": ["eventbridge"],
        "scale": ["eventbridge"],
        "health": ["eventbridge", "timer"],
        "reconcile": ["timer"],
        "panlogs": ["http"],
    }


# --- async invocation and the dead letter -----------------------------------------------------------------


@pytest.mark.parametrize("function", ASYNC_FUNCTIONS, ids=ASYNC_IDS)
def test_async_invocation_is_bounded_and_ends_in_a_dead_letter(function: Function) -> None:
    config = function.props["asyncInvokeConfig"]
    assert 1 <= config["maxAsyncRetryAttempts"] <= 3, "a bad event must not be retried forever"
    assert config["maxAsyncRetryAttempts"] == ASYNC_RETRIES[function.resource], "the lab's and tests' FC"
    assert 60 <= config["maxAsyncEventAgeInSeconds"] <= HOOK_TIMEOUT_MAX_S
    destination = config["destinationConfig"]["onFailure"]["destination"]
    region, account = function.props["region"], fctemplate.CONFIG["AccountID"]
    queue = re.fullmatch(rf"acs:mns:{region}:{account}:/queues/([A-Za-z0-9-]+)/messages", destination)
    target = re.fullmatch(rf"acs:fc:{region}:{account}:functions/([A-Za-z0-9_-]+)", destination)
    assert queue or target, f"not a dead letter FC can deliver to: {destination}"
    if target:
        assert target.group(1) in {f.name for f in FUNCTIONS} - {function.name}
    assert "onSuccess" not in config["destinationConfig"], "only failures are dead letters"


@pytest.mark.parametrize("function", FUNCTIONS, ids=IDS)
def test_event_triggers_keep_the_default_invocation_type(function: Function) -> None:
    """F-FCT-3: the pages contradict each other on what `true` means; `false` is the default in
    every version, and the handlers are idempotent under either reading (F-FCT-5)."""
    eventbridge = [t for t in function.triggers if t["triggerType"] == "eventbridge"]
    for trigger in eventbridge:
        assert trigger["triggerConfig"]["asyncInvocationType"] is False, trigger["triggerName"]


# F-FC-5: (fc3 schema, FC API reference `PutAsyncInvokeConfigInput`) ranges, inclusive.
API_RANGES = {"maxAsyncRetryAttempts": (0, 8), "maxAsyncEventAgeInSeconds": (1, 604800)}


@pytest.mark.parametrize("function", ASYNC_FUNCTIONS, ids=ASYNC_IDS)
def test_async_settings_are_explicit_and_within_both_documented_ranges(
    function: Function, schema: dict[str, Any]
) -> None:
    config = function.props["asyncInvokeConfig"]
    documented = schema["definitions"]["IAsyncInvokeConfig"]["properties"]
    for key, (api_min, api_max) in API_RANGES.items():
        assert key in config, f"{function.resource}: {key} left to a default the sources disagree on"
        value = config[key]
        assert isinstance(value, int) and not isinstance(value, bool), key
        assert documented[key]["minimum"] <= value <= documented[key]["maximum"], f"fc3 schema: {key}"
        assert api_min <= value <= api_max, f"FC API reference: {key}={value}"
    # The schema allows ages the API refuses: the test would catch a value taken from the schema.
    assert documented["maxAsyncEventAgeInSeconds"]["maximum"] > API_RANGES["maxAsyncEventAgeInSeconds"][1]


@pytest.mark.parametrize("function", ASYNC_FUNCTIONS, ids=ASYNC_IDS)
def test_the_dead_letter_is_the_documented_mns_queue_form(function: Function) -> None:
    """F-FC-6: FC's own async-invocation pages write an MNS destination as `/queues/NAME/messages`,
    and the functions' role may send exactly there."""
    variables = fctemplate.template_vars()
    expected = (
        f"acs:mns:{variables['region']}:{fctemplate.CONFIG['AccountID']}:"
        f"/queues/{variables['deadLetterQueue']}/messages"
    )
    assert function.props["asyncInvokeConfig"]["destinationConfig"]["onFailure"]["destination"] == expected
    policy = json.loads((ROOT / "functions" / "ram-policy.json").read_text())
    granted = {
        resource.replace("${region}", variables["region"])
        .replace("${accountId}", fctemplate.CONFIG["AccountID"])
        .replace("${deadLetterQueue}", variables["deadLetterQueue"])
        for statement in policy["Statement"]
        if "mns:SendMessage" in statement["Action"]
        for resource in statement["Resource"]
    }
    assert expected in granted, "the role cannot send to its dead letter"


@pytest.mark.parametrize("function", FUNCTIONS, ids=IDS)
def test_timeouts_and_concurrency_are_what_fc3_runs(function: Function, schema: dict[str, Any]) -> None:
    """F-FC-10: timeouts within FC's 1-86400 s; no instance concurrency on a built-in runtime."""
    props = function.props
    assert 1 <= props["timeout"] <= 86400
    initializer = props["instanceLifecycleConfig"]["initializer"]["timeout"]
    assert 1 <= initializer < props["timeout"]
    assert props["runtime"].startswith("python"), "a built-in runtime: instance concurrency is 1"
    assert props["instanceConcurrency"] == 1
    assert schema["properties"]["instanceConcurrency"]["maximum"] > 1, "the schema alone would allow more"


FACT_ID = re.compile(r"F-[A-Z]+-\d+")


def test_the_contradicted_settings_cite_their_facts() -> None:
    """Each FC setting the documentation contradicts names its fact next to it in template.yml."""
    lines = fctemplate.TEMPLATE.read_text().splitlines()

    def cited_near(key: str) -> set[str]:
        found: set[str] = set()
        for number, line in enumerate(lines):
            if re.match(rf"\s*{key}:", line):
                window = lines[max(0, number - 5) : number + 1]
                found |= {fact for text in window for fact in FACT_ID.findall(text)}
        return found

    assert "F-FCT-3" in cited_near("asyncInvocationType")
    assert "F-FC-5" in cited_near("asyncInvokeConfig")
    assert "F-FC-6" in cited_near("deadLetter")
    assert "F-FC-10" in cited_near("instanceConcurrency")


def test_every_fact_the_template_cites_is_defined() -> None:
    facts = (ROOT / "docs" / "api-facts.md").read_text()
    cited = set(FACT_ID.findall(fctemplate.TEMPLATE.read_text()))
    assert cited, "template.yml cites no fact"
    missing = sorted(fact for fact in cited if f'<a id="{fact}"></a>' not in facts)
    assert not missing, f"cited in template.yml, not in docs/api-facts.md: {missing}"


@pytest.mark.parametrize("function", FUNCTIONS, ids=IDS)
def test_vpc_and_logs_are_configured(function: Function) -> None:
    assert function.props["vpcConfig"]["vSwitchIds"], "Panorama is reached inside the VPC"
    assert function.props["logConfig"]["project"] == function.environment["SLS_PROJECT"]
    assert function.props["role"].startswith("acs:ram::")


# --- alarms: one MNS queue per function ------------------------------------------------------------------


ALARM_QUEUES = {"scale": "scaleAlarmQueue", "health": "healthAlarmQueue"}  # function -> its queue's var


@pytest.mark.parametrize(("resource", "queue_var"), sorted(ALARM_QUEUES.items()))
def test_alarm_functions_read_their_own_mns_queue(resource: str, queue_var: str) -> None:
    """F-FCT-1: an ``eventbridge`` trigger of source type MNS on the queue the rules write to;
    F-FCT-2: in the function's region, messageBody not base64-decoded (F-FCT-4), one message per
    invocation (event-driven, no batch window)."""
    function = next(f for f in FUNCTIONS if f.resource == resource)
    queue = fctemplate.template_vars()[queue_var]
    (trigger,) = [t for t in eventbridge_triggers(function) if source_type(t) == "MNS"]
    assert source_queue(trigger) == queue
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9-]{0,119}", queue), "F-MNS-1: a queue name MNS takes"
    parameters = trigger["triggerConfig"]["eventSourceConfig"]["eventSourceParameters"]["sourceMNSParameters"]
    assert parameters["RegionId"] == function.props["region"], "F-FCT-6: queue and function in one region"
    assert parameters["IsBase64Decode"] is False
    run = trigger["triggerConfig"]["runOptions"]
    assert run["mode"] == "event-driven" and "batchWindow" not in run
    assert trigger["triggerConfig"]["eventSinkConfig"]["deliveryOption"]["eventSchema"] == "CloudEvents"
    assert not [t for t in eventbridge_triggers(function) if source_type(t) == "Default"], (
        "no alarm on the bus"
    )


def test_the_two_alarm_queues_differ() -> None:
    variables = fctemplate.template_vars()
    assert variables["scaleAlarmQueue"] != variables["healthAlarmQueue"]


def _alarm_event(queue_var: str, rule_name: str, source: str = "acs:mns") -> dict[str, Any]:
    """An alarm as the lab and the tests build it (gwlb_fleet.events' builders)."""
    variables = fctemplate.template_vars()
    body = alarm_body(rule_name, rule_name, "CRITICAL", metric_name="active_flows", value=1.0, time_ms=1)
    return alarm_message(
        body,
        queue=variables[queue_var],
        region=variables["region"],
        account_id=fctemplate.CONFIG["AccountID"],
        source=source,
    )


def test_every_alarm_the_flows_know_reaches_its_function(monkeypatch: pytest.MonkeyPatch) -> None:
    """The events gwlb_fleet.events builds (the lab's, the functional tests') for the template's
    queues reach the function reading that queue and are accepted there, whichever source
    spelling FC uses (F-FCT-4, F-FCT-7)."""
    scale = next(f for f in FUNCTIONS if f.resource == "scale")
    health = next(f for f in FUNCTIONS if f.resource == "health")
    settings = Settings.model_validate({**scale.environment, **health.environment})
    cases = [
        ("scaleAlarmQueue", settings.scale_out_alarm_prefix, scale),
        ("scaleAlarmQueue", settings.scale_in_alarm_prefix, scale),
        ("healthAlarmQueue", settings.health_alarm_prefix, health),
    ]
    for queue_var, prefix, function in cases:
        trigger = next(t for t in eventbridge_triggers(function) if source_type(t) == "MNS")
        for source in ("acs:mns", trigger_source(function.name, trigger["triggerName"])):
            event = _alarm_event(queue_var, f"{prefix}-anything", source)
            assert event["type"] == MNS_QUEUE_MESSAGE_TYPE
            assert routed_to(event) == [function.resource], (queue_var, source)
            assert reaches(function, json.dumps(event).encode(), monkeypatch)


def test_a_queue_nobody_reads_reaches_no_function() -> None:
    event = _alarm_event("scaleAlarmQueue", "gwlb-fleet-scale-out-x")
    event["subject"] = event["subject"].replace("gwlb-fleet-scale-alarms", "someone-elses-queue")
    assert routed_to(event) == []


def test_the_event_types_the_lab_and_the_tests_send_are_routed() -> None:
    """The lab and tests/functional build their events with gwlb_fleet.events' types and sources."""
    lifecycle = next(f for f in FUNCTIONS if f.resource == "lifecycle")
    for transition in ("SCALE_OUT", "SCALE_IN"):
        event = {"source": LIFECYCLE_SOURCE, "type": LIFECYCLE_TYPE_OF[transition]}
        assert any(trigger_takes(t, event) for t in eventbridge_triggers(lifecycle)), transition
    assert routed_to({"source": LIFECYCLE_SOURCE, "type": LIFECYCLE_TYPE_OF["SCALE_OUT"]}) == ["lifecycle"]


def test_the_lifecycle_flows_continuations_reach_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A waiting flow invokes its own function (FC async, with a delay): no trigger involved."""
    from gwlb_fleet.events import continuation

    lifecycle = next(f for f in FUNCTIONS if f.resource == "lifecycle")
    assert reaches(lifecycle, continuation("i-bp1appliance0003", "poll", "i-bp1appliance0003/1"), monkeypatch)
    others = [f for f in ASYNC_FUNCTIONS if f.resource != "lifecycle"]
    assert not any(reaches(f, continuation("i-x", "poll", "i-x/1"), monkeypatch) for f in others)


def _setup_actions(actions: Any) -> dict[str, list[str]]:
    """hook -> the `gwlb-fleet setup` commands run in it."""
    return {
        hook: [str(step.get("run", "")) for step in steps if "gwlb-fleet setup" in str(step.get("run", ""))]
        for hook, steps in (actions or {}).items()
    }


def setup_command() -> str:
    """The one `gwlb-fleet setup` command of the template, resolved (vars and the account id)."""
    resolved = fctemplate.resolved_template()
    commands = _setup_actions(resolved.get("actions")).get("pre-deploy") or []
    assert len(commands) == 1, "exactly one global pre-deploy action runs gwlb-fleet setup"
    return commands[0]


def setup_environment() -> dict[str, str]:
    words = shlex.split(setup_command())
    assert words[0] == "env" and words[-2:] == [".venv/bin/gwlb-fleet", "setup"], words
    return dict(word.split("=", 1) for word in words[1:-2])


def test_setup_runs_before_any_resource_is_deployed() -> None:
    """F-FCT-8, F-SDV-1, F-SDV-3: the queue triggers need their queues, the async config its
    dead-letter queue, logConfig its logstore, all made by `gwlb-fleet setup`. s runs a global
    `pre-deploy` action before it deploys any resource and stops when it fails, so setup runs
    there — and nowhere else (a resource's action would run after earlier resources)."""
    raw = fctemplate.raw_template()
    assert set(_setup_actions(raw.get("actions"))) == {"pre-deploy"}, raw.get("actions")
    assert setup_command()
    for name, resource in raw["resources"].items():
        assert not any(_setup_actions(resource.get("actions")).values()), f"{name} runs setup itself"


def test_setup_gets_every_name_the_functions_config_uses() -> None:
    """What setup makes is what the functions' config names: the trigger queues, the dead-letter
    queue of the async config, the logConfig logstore; and each variable is a settings field."""
    environment = setup_environment()
    assert set(environment) <= set(settings_aliases()), set(environment) - set(settings_aliases())
    settings = Settings.model_validate(environment)
    queues = {
        fctemplate.source_queue(t)
        for f in FUNCTIONS
        for t in f.triggers
        if t["triggerType"] == "eventbridge" and source_type(t) == "MNS"
    }
    assert queues == {settings.scale_alarm_queue, settings.health_alarm_queue}
    for function in FUNCTIONS:
        if function in ASYNC_FUNCTIONS:
            destination = function.props["asyncInvokeConfig"]["destinationConfig"]["onFailure"]["destination"]
            assert destination.endswith(f"/queues/{settings.dead_letter_queue}/messages"), destination
        assert function.props["logConfig"]["logstore"] == settings.function_logstore
        assert function.props["logConfig"]["project"] == settings.sls_project
        for variable in ("PANORAMA_API_KEY_SECRET", "BOOTSTRAP_AUTHCODES_SECRET"):
            if variable in function.environment:
                assert environment[variable] == function.environment[variable], variable
    assert not any(k.startswith("GWLB_SETUP_SECRET_") for k in environment), "a secret value in the template"


@pytest.mark.parametrize("function", FUNCTIONS, ids=IDS)
def test_delivery_option_holds_only_what_the_sdk_models(function: Function) -> None:
    """F-FCT-2: fc20230330 ``DeliveryOption`` has ``concurrency`` and ``eventSchema`` only (the fc3
    schema lets any key through); ``mode`` is ``runOptions``'."""
    for trigger in eventbridge_triggers(function):
        option = trigger["triggerConfig"]["eventSinkConfig"]["deliveryOption"]
        assert set(option) <= {"concurrency", "eventSchema"}, (trigger["triggerName"], option)
        assert trigger["triggerConfig"]["runOptions"]["mode"] == "event-driven"


def test_the_hook_timeout_reaches_setup_and_bounds_the_event_age() -> None:
    """F-ESS-1: set-up creates the hooks with HOOK_TIMEOUT_S; the template's var reaches it, and
    the lifecycle function keeps an event at least as long as a hook waits."""
    environment = setup_environment()
    expected = str(fctemplate.template_vars()["hookTimeoutS"])
    assert environment["HOOK_TIMEOUT_S"] == expected
    timeout = Settings.model_validate(environment).hook_timeout_s
    assert timeout == int(expected) <= HOOK_TIMEOUT_MAX_S
    lifecycle = next(f for f in FUNCTIONS if f.resource == "lifecycle")
    assert lifecycle.props["asyncInvokeConfig"]["maxAsyncEventAgeInSeconds"] >= timeout
    text = (ROOT / "template.yml").read_text()
    assert "hooks use 3600" not in text and f"vars.hookTimeoutS, {timeout} s" in text, "the comment says so"


def test_setup_creates_the_intake_token_secret_and_knows_panorama() -> None:
    """The pre-deploy setup gets the token's secret name (so that it creates the secret from
    GWLB_SETUP_SECRET_PANLOGS_TOKEN, as it does the others: F-KMS-2), the same name and header the
    panlogs function reads, and every Panorama setting log forwarding needs; the intake's URL is a
    var, empty until the first deploy has made the trigger (F-SDV-4)."""
    from gwlb_fleet.deploy import panlogs, plan

    environment = setup_environment()
    intake = next(f for f in FUNCTIONS if f.resource == "panlogs")
    for variable in ("PANLOGS_TOKEN_SECRET", "PANLOGS_AUTH_HEADER"):
        assert environment[variable] == intake.environment[variable], variable
    vmseries = next(f for f in FUNCTIONS if "PANORAMA_HOST" in f.environment).environment
    for variable in (
        "PANORAMA_HOST",
        "PANORAMA_DEVICE_GROUP",
        "PANORAMA_TEMPLATE_STACK",
        "PANORAMA_COMMIT_ADMINS",
    ):
        assert environment[variable] == vmseries[variable], variable
    assert environment["PANLOGS_INTAKE_URL"] == fctemplate.template_vars()["panlogsIntakeUrl"] == ""
    settings = Settings.model_validate(environment)
    assert (
        "PANLOGS_TOKEN_SECRET",
        intake.environment["PANLOGS_TOKEN_SECRET"],
        "GWLB_SETUP_SECRET_PANLOGS_TOKEN",
    ) in (plan.secrets(settings))
    assert not panlogs.enabled(settings), "no log forwarding before the intake's URL is known"
    with_url = Settings.model_validate({**environment, "PANLOGS_INTAKE_URL": "https://intake.example.com"})
    assert panlogs.enabled(with_url) and panlogs.missing_settings(with_url) == []
