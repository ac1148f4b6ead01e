"""scripts/package-fc builds a bundle FC can run: our code laid out as the handlers name it, and no
tests, caches or fakes. Fast mode only (no dependencies, no network); the full build is run by hand."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from tests import fctemplate

ROOT = Path(__file__).resolve().parents[2]


def test_the_bundle_holds_the_handlers_and_nothing_of_the_tests(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "package-fc"), "--skip-dependencies", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "MiB zipped" in done.stdout and "largest, unpacked:" in done.stdout
    with zipfile.ZipFile(tmp_path / "code.zip") as bundle:
        names = set(bundle.namelist())
        assert bundle.testzip() is None
    for function in fctemplate.functions():
        assert function.module.replace(".", "/") + ".py" in names, function.props["handler"]
    assert "gwlb_functions/__init__.py" in names and "gwlb_fleet/handler.py" in names
    assert "gwlb_fleet/app.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in names if n.startswith("tests/") or "/fakes/" in n or n.endswith("/fakes.py")]
    assert not [n for n in names if n.startswith(("agent/", "lab/", "gwlb_agent/"))]


def test_the_same_code_gives_the_same_zip(tmp_path: Path) -> None:
    def build(out: Path) -> bytes:
        subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "package-fc"), "--skip-dependencies", "--out", str(out)],
            capture_output=True,
            check=True,
            timeout=60,
        )
        return (out / "code.zip").read_bytes()

    assert build(tmp_path / "a") == build(tmp_path / "b"), "FC would see a new version of unchanged code"
