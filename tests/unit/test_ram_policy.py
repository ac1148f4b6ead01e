"""functions/ram-policy.json, the functions' RAM role, grants exactly what the code calls.

The adapters each declare ``RAM_ACTIONS`` (every RAM action the module calls); the policy's
actions must be their union, plus what template.yml makes FC do with the function's role (deliver
a failed event to the dead letter): nothing missing (a call refused in production), nothing extra
(a permission nobody uses). Resources are scoped with the template's own ``vars`` as
placeholders (``${region}``, ``${serverGroupId}``, ...), filled in when the role is created.
"""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
import re
from pathlib import Path
from typing import Any

import pytest

from tests import fctemplate

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "functions" / "ram-policy.json"
APP = ROOT / "shared" / "gwlb_fleet" / "app.py"
PACKAGES = (
    "gwlb_fleet.alibaba",
    "gwlb_fleet.panos",
    "gwlb_fleet.sls",
    "gwlb_fleet.appliance",
    "gwlb_fleet.state",
)
ACTION = re.compile(r"[a-z]+:[A-Z][A-Za-z0-9]+")
PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")
# What FC does with the function's role when an async invocation finally fails: deliver it.
DESTINATION_ACTIONS = {
    re.compile(r"acs:mns:[^:]+:[^:]+:/queues/[^/]+/messages"): "mns:SendMessage",
    re.compile(r"acs:mns:[^:]+:[^:]+:/topics/[^/]+/messages"): "mns:PublishMessage",
    re.compile(r"acs:fc:[^:]+:[^:]+:functions/.+"): "fc:InvokeFunction",
    re.compile(r"acs:eventbridge:[^:]+:[^:]+:eventbus/.+"): "eventbridge:PutEvents",
}


def policy() -> dict[str, Any]:
    return json.loads(POLICY.read_text())  # type: ignore[no-any-return]


def statements() -> list[dict[str, Any]]:
    return list(policy()["Statement"])


def policy_actions() -> set[str]:
    return {action for statement in statements() for action in statement["Action"]}


def adapter_modules() -> dict[str, Any]:
    """Every module of the adapter packages, imported."""
    modules = {}
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        for info in pkgutil.iter_modules(package.__path__, prefix=f"{package_name}."):
            modules[info.name] = importlib.import_module(info.name)
    return modules


def wired_modules() -> set[str]:
    """The adapter modules gwlb_fleet.app wires to the ports: each of them must declare RAM_ACTIONS."""
    tree = ast.parse(APP.read_text())
    return {  # the imports inside the port properties: the module level imports only types
        node.module
        for function in ast.walk(tree)
        if isinstance(function, ast.FunctionDef)
        for node in ast.walk(function)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PACKAGES)
    }


def code_actions() -> dict[str, str]:
    """RAM action -> the module that calls it."""
    found: dict[str, str] = {}
    for name, module in adapter_modules().items():
        for action in getattr(module, "RAM_ACTIONS", frozenset()):
            found.setdefault(action, name)
    return found


def template_actions() -> dict[str, str]:
    """RAM action -> the destination in template.yml that needs it."""
    found: dict[str, str] = {}
    for function in fctemplate.functions():
        destinations = function.props.get("asyncInvokeConfig", {}).get("destinationConfig", {})
        for destination in destinations.values():
            arn = destination["destination"]
            actions = [action for pattern, action in DESTINATION_ACTIONS.items() if pattern.fullmatch(arn)]
            assert actions, f"{function.resource}: no known delivery action for the destination {arn}"
            found[actions[0]] = arn
    return found


def test_every_wired_adapter_declares_its_ram_actions() -> None:
    modules = adapter_modules()
    wired = wired_modules()
    assert wired, "gwlb_fleet.app wires no adapter module: is this test reading the right file?"
    for name in sorted(wired):
        assert name in modules, f"gwlb_fleet.app wires {name}, which does not exist"
        actions = getattr(modules[name], "RAM_ACTIONS", None)
        assert isinstance(actions, frozenset), f"{name} declares no RAM_ACTIONS: frozenset[str]"
        malformed = sorted(a for a in actions if not ACTION.fullmatch(a))
        assert not malformed, f"{name}: not RAM actions (service:Action): {malformed}"


def test_nothing_the_code_calls_is_missing_from_the_policy() -> None:
    needed = {**code_actions(), **template_actions()}
    missing = {action: by for action, by in needed.items() if action not in policy_actions()}
    assert not missing, f"the functions' role would be refused these (action: needed by): {missing}"


def test_the_policy_grants_nothing_the_code_does_not_call() -> None:
    needed = set(code_actions()) | set(template_actions())
    extra = sorted(policy_actions() - needed)
    assert not extra, f"granted but called by no adapter and needed by no template destination: {extra}"


def setup_actions() -> set[str]:
    return {
        a for module in adapter_modules().values() for a in getattr(module, "SETUP_RAM_ACTIONS", frozenset())
    }


def test_the_functions_are_not_granted_what_only_setup_calls() -> None:
    actions = setup_actions()
    assert {
        "mns:CreateQueue",
        "cms:PutMetricRuleTargets",
        "ess:CreateLifecycleHook",
        "ram:GetRole",
    } <= actions
    granted = (actions - set(code_actions())) & policy_actions()
    assert not granted, f"set-up actions in the functions' policy: {sorted(granted)}"


def test_the_deployers_policy_grants_what_setup_calls() -> None:
    deployer = json.loads((ROOT / "docs" / "deploy-policy.json").read_text())
    granted = {action for statement in deployer["Statement"] for action in statement["Action"]}
    assert setup_actions() <= granted, sorted(setup_actions() - granted)


def test_the_policy_document_is_well_formed() -> None:
    document = policy()
    assert document["Version"] == "1"
    sids = [s.get("Sid") for s in statements()]
    assert len(sids) == len(set(sids)), "duplicate Sid"
    seen: set[str] = set()
    for statement in statements():
        assert statement["Effect"] == "Allow"
        assert set(statement) <= {"Sid", "Effect", "Action", "Resource", "Condition"}
        assert isinstance(statement["Action"], list) and statement["Action"], statement.get("Sid")
        for action in statement["Action"]:
            assert ACTION.fullmatch(action), f"not one action (no wildcards): {action}"
            assert action not in seen, f"{action} is granted twice"
            seen.add(action)


def test_every_resource_is_scoped() -> None:
    """No bare ``*``: at least the region and the account, and the fleet's own resources where
    RAM checks them."""
    for statement in statements():
        services = {action.split(":")[0] for action in statement["Action"]}
        for resource in statement["Resource"]:
            assert resource != "*", f"{statement['Sid']}: unscoped"
            match = re.fullmatch(r"acs:([a-z]+):\$\{region\}:\$\{accountId\}:(.+)", resource)
            assert match, f"{statement['Sid']}: not an ARN of this region and account: {resource}"
            # The one cross-service resource: adding an ECS instance to a server group is also
            # authorised on the instance.
            assert match.group(1) in services | {"ecs"}, f"{statement['Sid']}: {resource}"


def test_placeholders_are_the_templates_vars() -> None:
    variables = fctemplate.template_vars()
    for name in PLACEHOLDER.findall(POLICY.read_text()):
        assert name in variables, f"${{{name}}} is not a var of template.yml"
        assert isinstance(variables[name], str), f"${{{name}}} is not a single value"


def rendered(resource: str) -> str:
    variables = fctemplate.template_vars()
    return PLACEHOLDER.sub(lambda m: str(variables[m.group(1)]), resource)


def test_the_dead_letter_grant_is_the_templates_destination_and_nothing_more() -> None:
    destinations = set(template_actions().values())
    for statement in statements():
        for action in statement["Action"]:
            if action in template_actions() and action not in code_actions():
                assert {rendered(r) for r in statement["Resource"]} == destinations, statement["Sid"]


@pytest.mark.parametrize(
    ("action", "resource_part"),
    [
        ("gwlb:AddServersToServerGroup", "servergroup/${serverGroupId}"),
        ("gwlb:GetListenerHealthStatus", "listener/${listenerId}"),
        ("log:PostLogStoreLogs", "logstore/${auditLogstore}"),
        ("ots:PutRow", "instance/${tablestoreInstance}"),
    ],
)
def test_the_fleets_own_resources_are_named(action: str, resource_part: str) -> None:
    holding = [s for s in statements() if action in s["Action"]]
    assert holding and any(resource_part in r for s in holding for r in s["Resource"]), action
