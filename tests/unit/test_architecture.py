"""The import rules of ARCHITECTURE.md, read from the source: a layer that points the wrong way
fails here, not in a reader's head."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "gwlb_fleet": ROOT / "shared" / "gwlb_fleet",
    "gwlb_agent": ROOT / "agent" / "gwlb_agent",
    "gwlb_functions": ROOT / "functions" / "gwlb_functions",
    "gwlb_lab": ROOT / "lab" / "gwlb_lab",
}
BASE = {"geneve", "deadline", "errors", "retry", "logs", "settings", "clock"}
ADAPTER_PACKAGES = {"alibaba", "panos", "sls", "appliance", "state"}
# What a workflow may see of gwlb_fleet: the ports and the domain's vocabulary.
WORKFLOW_MAY_IMPORT = BASE | {
    "workflows",
    "ports",
    "events",
    "state.records",
    "sls.auditlog",
    "panos.bootstrap",
}
CONTROL_PLANE = {"workflows", "state", "handler", "app", "events", "panos", "cli"}


def modules(package: str) -> Iterator[tuple[str, Path]]:
    root = PACKAGES[package]
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        yield ".".join(p for p in parts if p != "__init__"), path


def imports(path: Path, *, type_only: bool = False) -> set[str]:
    """Modules imported by the file; imports under ``if TYPE_CHECKING:`` only with ``type_only``."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    if not type_only:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skipped |= {id(n) for child in node.body for n in ast.walk(child)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def within(name: str, package: str = "gwlb_fleet") -> str | None:
    """``gwlb_fleet.state.records`` -> ``state.records``; None outside the package."""
    if name == package or not name.startswith(package + "."):
        return None
    return name.removeprefix(package + ".")


def is_module(relative: str) -> bool:
    path = PACKAGES["gwlb_fleet"].joinpath(*relative.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def fleet_imports(path: Path) -> set[str]:
    """The gwlb_fleet modules a file imports (``from gwlb_fleet.sls import client`` counts as
    ``sls.client``; a name that is not a module counts as its package)."""
    found = set()
    for name in imports(path):
        relative = within(name)
        if relative and is_module(relative):
            found.add(relative)
    return {m for m in found if not any(other.startswith(m + ".") for other in found)}


def fleet_cases(prefixes: set[str]) -> list[tuple[str, Path]]:
    return [(m, p) for m, p in modules("gwlb_fleet") if m.split(".")[0] in prefixes]


@pytest.mark.parametrize("package", ["gwlb_fleet", "gwlb_agent", "gwlb_functions"])
def test_the_product_never_imports_the_lab_or_the_tests(package: str) -> None:
    for module, path in modules(package):
        bad = {
            name
            for name in imports(path, type_only=True)
            if name.split(".")[0] in {"gwlb_lab", "tests"}
            or (package != "gwlb_functions" and name.split(".")[0] == "gwlb_functions")
        }
        assert not bad, f"{package}.{module} imports {sorted(bad)}"


@pytest.mark.parametrize(("module", "path"), fleet_cases({"workflows"}), ids=lambda v: str(v))
def test_workflows_see_the_world_only_through_the_ports(module: str, path: Path) -> None:
    bad = {
        m
        for m in fleet_imports(path)
        if not any(m == allowed or m.startswith(allowed + ".") for allowed in WORKFLOW_MAY_IMPORT)
    }
    assert not bad, f"gwlb_fleet.{module} imports {sorted(bad)}"


@pytest.mark.parametrize(("module", "path"), fleet_cases(ADAPTER_PACKAGES), ids=lambda v: str(v))
def test_adapters_and_fakes_never_import_workflows_or_the_frame(module: str, path: Path) -> None:
    bad = {m for m in fleet_imports(path) if m.split(".")[0] in {"workflows", "handler", "app", "cli"}}
    assert not bad, f"gwlb_fleet.{module} imports {sorted(bad)}"


@pytest.mark.parametrize(("module", "path"), fleet_cases({"deploy"}), ids=lambda v: str(v))
def test_deploy_uses_adapters_ports_settings_and_base_only(module: str, path: Path) -> None:
    allowed = BASE | ADAPTER_PACKAGES | {"deploy", "ports"}
    bad = {m for m in fleet_imports(path) if m.split(".")[0] not in allowed}
    assert not bad, f"gwlb_fleet.{module} imports {sorted(bad)}"


@pytest.mark.parametrize(("module", "path"), fleet_cases(BASE), ids=lambda v: str(v))
def test_base_modules_import_only_each_other(module: str, path: Path) -> None:
    bad = {m for m in fleet_imports(path) if m.split(".")[0] not in BASE}
    assert not bad, f"gwlb_fleet.{module} imports {sorted(bad)}"


def test_the_agent_imports_nothing_of_the_control_plane() -> None:
    for module, path in modules("gwlb_agent"):
        bad = {m for m in fleet_imports(path) if m.split(".")[0] in CONTROL_PLANE}
        assert not bad, f"gwlb_agent.{module} imports {sorted(bad)}"


def test_the_rules_see_real_imports() -> None:
    """The checks above would pass on a reader that finds nothing: make sure it finds these."""
    lifecycle = PACKAGES["gwlb_fleet"] / "workflows" / "lifecycle.py"
    assert "ports" in fleet_imports(lifecycle) or "state.records" in fleet_imports(lifecycle)
    shipper = PACKAGES["gwlb_agent"] / "shipper.py"
    assert "sls.loggroup" in fleet_imports(shipper)
