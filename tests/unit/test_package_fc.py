"""scripts/package-fc installs the functions' runtime dependencies and nothing of the test tools."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from tests import fctemplate

ROOT = Path(__file__).resolve().parents[2]
package_fc = fctemplate.package_fc()


def test_the_runtime_requirements_are_the_dependencies_and_the_functions_extra_but_the_agents_own() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    expected = [
        r
        for r in [*project["dependencies"], *project["optional-dependencies"]["functions"]]
        if package_fc.requirement_name(r) != "pyroute2"
    ]
    assert package_fc.runtime_requirements() == expected


def test_no_module_in_the_bundle_imports_an_agent_only_dependency() -> None:
    """AGENT_ONLY leaves a dependency out of the bundle: nothing there may import it."""
    importing = [
        f"{path.relative_to(ROOT)}: {name}"
        for source, _ in package_fc.SOURCES
        for path in source.rglob("*.py")
        for name in package_fc.AGENT_ONLY
        if f"import {name}" in (text := path.read_text()) or f"from {name}" in text
    ]
    assert package_fc.AGENT_ONLY and not importing, importing


def test_no_test_or_dev_package_is_selected() -> None:
    names = {package_fc.requirement_name(r) for r in package_fc.runtime_requirements()}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    test_tools = {package_fc.requirement_name(r) for r in project["optional-dependencies"]["test"]}
    test_tools.discard(package_fc.normalized(project["name"]))  # the test extra includes `functions`
    assert not names & test_tools
    assert not names & {"pytest", "hypothesis", "scapy", "ruff", "mypy"}


def test_the_sdks_the_adapters_import_are_selected() -> None:
    names = {package_fc.requirement_name(r) for r in package_fc.runtime_requirements()}
    for sdk in (
        "alibabacloud-gwlb20240415",
        "alibabacloud-ess20220222",
        "alibabacloud-ecs20140526",
        "alibabacloud-cms20190101",
        "alibabacloud-fc20230330",
        "tablestore",
        "pan-os-python",
        "aliyun-log-python-sdk",
    ):
        assert sdk in names, sdk


HEADER = '[project]\nname = "x"\ndependencies = []\n'
EXTRAS = "[project.optional-dependencies]\n"


@pytest.mark.parametrize(
    "pyproject",
    [
        HEADER + EXTRAS + 'functions = ["pytest>=8"]\n',
        HEADER + EXTRAS + 'functions = ["x[test]"]\n',
        HEADER,
    ],
    ids=["a test tool", "the project itself", "no functions extra"],
)
def test_a_bad_selection_stops_the_build(pyproject: str, tmp_path: Path) -> None:
    path = tmp_path / "pyproject.toml"
    path.write_text(pyproject)
    with pytest.raises(SystemExit):
        package_fc.runtime_requirements(path)


def test_wheels_are_for_the_fc_runtime() -> None:
    """CPython 3.12 on Debian 11 (glibc 2.31): no wheel that needs a newer glibc than 2.28."""
    platform = package_fc.PLATFORM
    assert platform[platform.index("--python-version") + 1] == "3.12"
    assert platform[platform.index("--abi") + 1] == "cp312"
    tags = [platform[i + 1] for i, arg in enumerate(platform) if arg == "--platform"]
    assert "manylinux2014_x86_64" in tags and "manylinux_2_28_x86_64" in tags
    glibc = [int(tag.split("_")[2]) for tag in tags if tag.startswith("manylinux_2_")]
    assert max(glibc) <= 28
    assert all(tag.endswith("_x86_64") for tag in tags)
