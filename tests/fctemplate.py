"""template.yml as Serverless Devs reads it, for the tests: YAML (merge keys included), then its
variables resolved, then each fc3 resource's props. Also a matcher for EventBridge event patterns and
the triggers' event sources (the default bus, or an MNS queue: F-FCT-1), so that the tests can say
which function an example event would reach.

Serverless Devs resolves ``${vars.name}``, ``${env('NAME', 'default')}`` and ``${config('Key')}``
when it deploys. Here ``vars`` resolve to their values (a whole-string reference keeps the value's
type, as it does there), ``env`` to its default (secrets are never in the file) and ``config`` to
the stand-ins below.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "template.yml"

CONFIG = {"AccountID": "1234567890123456"}  # what ${config('AccountID')} gives a deployer

_REFERENCE = re.compile(r"\$\{\s*(vars\.[A-Za-z0-9_]+|env\([^)]*\)|config\([^)]*\))\s*\}")
_ARGUMENTS = re.compile(r"""['"]([^'"]*)['"]""")


@dataclass(frozen=True)
class Function:
    resource: str  # the resource's key under `resources`
    props: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.props["functionName"])

    @property
    def module(self) -> str:
        """The Python module of the handler: ``gwlb_functions.scale`` for ``gwlb_functions.scale.handler``."""
        return str(self.props["handler"]).rsplit(".", 1)[0]

    @property
    def environment(self) -> dict[str, str]:
        return dict(self.props.get("environmentVariables") or {})

    @property
    def triggers(self) -> list[dict[str, Any]]:
        return list(self.props.get("triggers") or [])


def package_fc() -> ModuleType:
    """scripts/package-fc, which builds the code template.yml deploys, as a module."""
    loader = importlib.machinery.SourceFileLoader("package_fc", str(ROOT / "scripts" / "package-fc"))
    spec = importlib.util.spec_from_loader("package_fc", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def raw_template() -> dict[str, Any]:
    data = yaml.safe_load(TEMPLATE.read_text())
    assert isinstance(data, dict)
    return data


def resolved_template() -> dict[str, Any]:
    data = raw_template()
    variables = _resolve_vars(data.get("vars") or {})
    return {key: _resolve(value, variables) for key, value in data.items()}


def functions() -> list[Function]:
    resources = resolved_template()["resources"]
    return [Function(key, res["props"]) for key, res in resources.items() if res.get("component") == "fc3"]


def template_vars() -> dict[str, Any]:
    return _resolve_vars(raw_template().get("vars") or {})


def env_references() -> dict[str, str]:
    """Each ``${env(...)}`` of the raw template: variable name -> its default."""
    found: dict[str, str] = {}
    for match in _REFERENCE.finditer(TEMPLATE.read_text()):
        expression = match.group(1)
        if expression.startswith("env("):
            arguments = _ARGUMENTS.findall(expression)
            found[arguments[0]] = arguments[1] if len(arguments) > 1 else ""
    return found


def _resolve_vars(variables: Mapping[str, Any]) -> dict[str, Any]:
    resolved = dict(variables)
    for _ in range(5):  # vars may refer to vars; a few passes settle any sane chain
        resolved = {key: _resolve(value, resolved) for key, value in resolved.items()}
    return resolved


def _resolve(value: Any, variables: Mapping[str, Any]) -> Any:
    if isinstance(value, dict):
        return {key: _resolve(item, variables) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve(item, variables) for item in value]
    if not isinstance(value, str):
        return value
    whole = _REFERENCE.fullmatch(value.strip())
    if whole:
        return _evaluate(whole.group(1), variables)
    return _REFERENCE.sub(lambda m: str(_evaluate(m.group(1), variables)), value)


def _evaluate(expression: str, variables: Mapping[str, Any]) -> Any:
    if expression.startswith("vars."):
        name = expression.removeprefix("vars.")
        if name not in variables:
            raise KeyError(f"template.yml refers to ${{vars.{name}}}, which `vars` does not define")
        return variables[name]
    arguments = _ARGUMENTS.findall(expression)
    if expression.startswith("env("):
        return arguments[1] if len(arguments) > 1 else ""
    return CONFIG[arguments[0]]


# --- EventBridge triggers: their source, their pattern -----------------------------------------------


def source_type(trigger: Mapping[str, Any]) -> str:
    """``Default`` (the default event bus) or ``MNS`` (a queue), ... (F-FCT-2)."""
    return str(trigger["triggerConfig"]["eventSourceConfig"]["eventSourceType"])


def source_queue(trigger: Mapping[str, Any]) -> str:
    """The MNS queue an ``eventbridge`` trigger of source type MNS reads; "" for other sources."""
    if source_type(trigger) != "MNS":
        return ""
    parameters = trigger["triggerConfig"]["eventSourceConfig"]["eventSourceParameters"]
    return str(parameters["sourceMNSParameters"]["QueueName"])


def trigger_takes(trigger: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """Would this eventbridge trigger deliver ``event``? A queue trigger takes the messages of its
    own queue (the queue is in the event's ``subject``, F-FCT-4), a default-bus trigger the bus's
    events; then the trigger's pattern must match."""
    from gwlb_fleet.events import MNS_QUEUE_MESSAGE_TYPE, queue_of

    if trigger["triggerType"] != "eventbridge":
        return False
    from_queue = event.get("type") == MNS_QUEUE_MESSAGE_TYPE
    if source_type(trigger) == "MNS":
        if not from_queue or queue_of(str(event.get("subject", ""))) != source_queue(trigger):
            return False
    elif from_queue:
        return False  # a queue's messages reach only a trigger reading that queue
    return pattern_matches(trigger["triggerConfig"]["eventRuleFilterPattern"], event)


# --- EventBridge event patterns ------------------------------------------------------------------------


def pattern_matches(pattern: str | Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """Does ``event`` match the EventBridge pattern? Supports what template.yml uses: lists of
    exact values, ``{"prefix": ...}``, ``{"suffix": ...}`` and nested objects (``data``)."""
    rules = json.loads(pattern) if isinstance(pattern, str) else pattern
    for key, rule in rules.items():
        if key not in event:
            return False
        value = event[key]
        if isinstance(rule, Mapping):
            if not isinstance(value, Mapping) or not pattern_matches(rule, value):
                return False
        elif not any(_value_matches(condition, value) for condition in rule):
            return False
    return True


def _value_matches(condition: Any, value: Any) -> bool:
    if isinstance(condition, Mapping):
        if "prefix" in condition:
            return isinstance(value, str) and value.startswith(condition["prefix"])
        if "suffix" in condition:
            return isinstance(value, str) and value.endswith(condition["suffix"])
        raise ValueError(f"pattern condition not understood here: {condition}")
    return bool(condition == value)
