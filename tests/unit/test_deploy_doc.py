"""docs/deploy.md stays in step with the code it describes: the deployer's permissions are the
actions set-up calls, the secrets and saved searches are the ones the template and the SLS set-up
name, every command it shows exists, every fact it cites is defined."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest

from gwlb_fleet import alibaba, cli
from gwlb_fleet.sls.queries import QUERIES
from tests import fctemplate

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "docs" / "deploy.md"
FACTS = ROOT / "docs" / "api-facts.md"


@pytest.fixture(scope="module")
def doc() -> str:
    return DEPLOY.read_text()


def test_the_readme_links_it() -> None:
    assert "(docs/deploy.md)" in (ROOT / "README.md").read_text()


def deployer_actions() -> dict[str, frozenset[str]]:
    """Each adapter module's ``SETUP_RAM_ACTIONS`` and ``PREFLIGHT_RAM_ACTIONS``: what the deployer's
    credentials call (setup, teardown, preflight), never the functions' role."""
    found = {}
    for info in pkgutil.iter_modules(alibaba.__path__):
        module = importlib.import_module(f"{alibaba.__name__}.{info.name}")
        for name in ("SETUP_RAM_ACTIONS", "PREFLIGHT_RAM_ACTIONS"):
            if hasattr(module, name):
                found[f"{info.name}.{name}"] = frozenset(getattr(module, name))
    return found


def test_the_deployer_may_make_every_call_setup_and_preflight_make(doc: str) -> None:
    actions = deployer_actions()
    assert {"mns.SETUP_RAM_ACTIONS", "cms.SETUP_RAM_ACTIONS", "ess.SETUP_RAM_ACTIONS"} <= set(actions)
    missing = {
        where: sorted(action for action in listed if f"`{action}`" not in doc)
        for where, listed in actions.items()
    }
    assert not any(missing.values()), f"docs/deploy.md does not grant the deployer {missing}"


def test_the_secrets_to_create_are_the_ones_the_template_names(doc: str) -> None:
    variables = fctemplate.template_vars()
    names = {key: value for key, value in variables.items() if key.endswith("SecretName")}
    assert names, "template.yml names no secret: is this test still looking at the right vars?"
    for key, value in names.items():
        assert f"`{value}` (`{key}`)" in doc, key


def test_the_saved_searches_are_the_ones_sls_setup_creates(doc: str) -> None:
    for query in QUERIES.values():
        assert f"`{query.savedsearch_name}`" in doc, query.name
    assert "scripts/audit --list" in doc


def test_every_gwlb_fleet_command_shown_exists(doc: str) -> None:
    shown = set(re.findall(r"(?:`|\.venv/bin/)gwlb-fleet (\w+)", doc))
    subparsers = next(
        action for action in cli.parser()._actions if action.__class__.__name__ == "_SubParsersAction"
    )
    known = set(subparsers.choices)  # type: ignore[attr-defined]
    assert {"setup", "teardown"} <= shown
    assert shown <= known, f"docs/deploy.md shows commands the CLI lacks: {sorted(shown - known)}"


def test_every_fact_it_cites_is_defined(doc: str) -> None:
    facts = FACTS.read_text()
    cited = set(re.findall(r"F-[A-Z]+-\d+", doc))
    assert cited
    missing = sorted(fact for fact in cited if f'<a id="{fact}"></a>' not in facts)
    assert not missing, f"cited in docs/deploy.md, not defined in docs/api-facts.md: {missing}"


def test_each_secret_setting_names_the_variable_setup_reads_its_value_from(doc: str) -> None:
    """docs/deploy.md's table is what gwlb_fleet.deploy.plan reads: one variable per secret setting."""
    from gwlb_fleet.deploy import plan

    for setting in plan.SECRET_SETTINGS:
        assert f"| `{setting}` | `{plan.secret_variable(setting)}` |" in doc, setting
    assert plan.secret_variable("PANORAMA_API_KEY_SECRET") == "GWLB_SETUP_SECRET_PANORAMA_API_KEY"


def test_what_setup_creates_is_no_longer_a_manual_prerequisite(doc: str) -> None:
    manual = doc[doc.index("### Things you create by hand") : doc.index("### The KMS secrets")]
    for made_by_setup in ("dead-letter", "function logstore", "application group"):
        listed = [line for line in manual.splitlines() if line.startswith("- ") and made_by_setup in line]
        assert not listed, f"{made_by_setup} is made by gwlb-fleet setup, not by hand: {listed}"
