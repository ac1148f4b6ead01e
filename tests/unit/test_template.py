"""template.yml is what `s deploy` accepts and what the code expects.

- each fc3 resource's props validate against the fc3 component's own schema (a vendored copy:
  /work/shared/vendor/fc3-props.schema.json), and against a closed copy of it that refuses keys the
  schema does not know (the vendor schema lets a misspelt key through silently);
- each trigger's config validates against the schema of its own trigger type;
- the environment is exactly Settings' fields: every variable is a field (by alias), every required
  field is set for every function, and the values validate;
- handlers (and the initializer) exist and are callables;
- the triggers reach the functions meant for them: every example event under tests/events goes to
  the function that accepts it, and nowhere else;
- async invocation is bounded and ends in a dead letter.
"""

from __future__ import annotations

import copy
import importlib
import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jsonschema
import pytest

from gwlb_fleet.errors import BadEvent
from gwlb_fleet.events import ALARM_SOURCE, ALARM_TYPE, LIFECYCLE_SOURCE, LIFECYCLE_TYPE_OF
from gwlb_fleet.settings import Settings
from gwlb_functions import ASYNC_RETRIES
from tests import fctemplate
from tests.fctemplate import Function, functions, pattern_matches

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATHS = [
    ROOT / "shared" / "vendor" / "fc3-props.schema.json",  # if the repository ever carries a copy
    Path("/work/shared/vendor/fc3-props.schema.json"),
]
EVENTS = ROOT / "tests" / "events"

# The example events and the one function each must reach (None: no function at all).
ROUTES = {
    "cms-alarm-active-flows.json": "scale",
    "cms-alarm-ok-object-dimensions.json": "scale",
    "cms-alarm-gwlb-unhealthy.json": "health",
    "ess-lifecycle-scale-out.json": "lifecycle",
    "ess-lifecycle-scale-in-content.json": "lifecycle",
    "ess-lifecycle-pascal-case.json": "lifecycle",
    "ess-lifecycle-no-token.json": "lifecycle",
    "ess-lifecycle-test.json": None,  # a hook's test notification is not a launch
    "timer-reconcile.json": "reconcile",  # by its payload: the timer trigger's
}
TRIGGER_CONFIG_SCHEMAS = {"timer": "ITimerTriggerConfig", "eventbridge": "IEventBridge"}
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


def test_the_four_functions_are_there() -> None:
    assert sorted(f.resource for f in FUNCTIONS) == ["health", "lifecycle", "reconcile", "scale"]
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


def test_secrets_come_from_the_deployers_environment() -> None:
    secrets = {
        str(field.validation_alias).upper()
        for field in Settings.model_fields.values()
        if "SecretStr" in str(field.annotation)
    }
    assert secrets, "Settings has no SecretStr field: is this test still looking at the right class?"
    raw = fctemplate.raw_template()["vars"]
    references = fctemplate.env_references()
    for function in fctemplate.raw_template()["resources"].values():
        environment = function["props"].get("environmentVariables") or {}
        for variable in secrets & set(environment):
            assert re.fullmatch(r"\$\{env\('[A-Z_]+'(, '')?\)\}", environment[variable]), variable
    assert all(default == "" for default in references.values()), "a default value is committed"
    assert not any("key" in name.lower() or "secret" in name.lower() for name in raw), "a secret in vars"


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


def eventbridge_patterns(function: Function) -> list[str]:
    return [
        t["triggerConfig"]["eventRuleFilterPattern"]
        for t in function.triggers
        if t["triggerType"] == "eventbridge"
    ]


def timer_payloads(function: Function) -> list[str]:
    return [t["triggerConfig"].get("payload", "") for t in function.triggers if t["triggerType"] == "timer"]


@pytest.mark.parametrize(("example", "destination"), sorted(ROUTES.items(), key=lambda kv: kv[0]))
def test_each_example_event_reaches_exactly_its_function(
    example: str, destination: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    event = json.loads((EVENTS / example).read_text())
    if "triggerTime" in event:
        routed = [f for f in FUNCTIONS if event["payload"] in timer_payloads(f)]
    else:
        routed = [f for f in FUNCTIONS if any(pattern_matches(p, event) for p in eventbridge_patterns(f))]
    assert [f.resource for f in routed] == ([destination] if destination else [])
    for function in routed:
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
    }


# --- async invocation and the dead letter -----------------------------------------------------------------


@pytest.mark.parametrize("function", FUNCTIONS, ids=IDS)
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
def test_event_triggers_invoke_asynchronously(function: Function) -> None:
    """Only an asynchronous invocation gets FC's bounded retries and the dead letter."""
    for trigger in function.triggers:
        if trigger["triggerType"] == "eventbridge":
            assert trigger["triggerConfig"]["asyncInvocationType"] is True, trigger["triggerName"]


@pytest.mark.parametrize("function", FUNCTIONS, ids=IDS)
def test_vpc_and_logs_are_configured(function: Function) -> None:
    assert function.props["vpcConfig"]["vSwitchIds"], "Panorama is reached inside the VPC"
    assert function.props["logConfig"]["project"] == function.environment["SLS_PROJECT"]
    assert function.props["role"].startswith("acs:ram::")


def test_the_scale_trigger_takes_every_alarm_the_scale_flow_knows(monkeypatch: pytest.MonkeyPatch) -> None:
    scale = next(f for f in FUNCTIONS if f.resource == "scale")
    settings = Settings.model_validate(scale.environment)
    for prefix in (settings.scale_out_alarm_prefix, settings.scale_in_alarm_prefix):
        event = json.loads((EVENTS / "cms-alarm-active-flows.json").read_text())
        event["data"]["alertName"] = f"{prefix}-anything"
        assert any(pattern_matches(p, event) for p in eventbridge_patterns(scale)), prefix


def test_the_event_types_the_lab_and_the_tests_send_are_routed() -> None:
    """The lab and tests/functional build their events with gwlb_fleet.events' types and sources."""
    lifecycle = next(f for f in FUNCTIONS if f.resource == "lifecycle")
    for transition in ("SCALE_OUT", "SCALE_IN"):
        event = {"source": LIFECYCLE_SOURCE, "type": LIFECYCLE_TYPE_OF[transition]}
        assert any(pattern_matches(p, event) for p in eventbridge_patterns(lifecycle)), transition
    captured = json.loads((EVENTS / "cms-alarm-active-flows.json").read_text())
    assert (captured["source"], captured["type"]) == (ALARM_SOURCE, ALARM_TYPE)


def test_the_lifecycle_flows_continuations_reach_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A waiting flow invokes its own function (FC async, with a delay): no trigger involved."""
    from gwlb_fleet.events import continuation

    lifecycle = next(f for f in FUNCTIONS if f.resource == "lifecycle")
    assert reaches(lifecycle, continuation("i-bp1appliance0003", "poll", "i-bp1appliance0003/1"), monkeypatch)
    others = [f for f in FUNCTIONS if f.resource != "lifecycle"]
    assert not any(reaches(f, continuation("i-x", "poll", "i-x/1"), monkeypatch) for f in others)
