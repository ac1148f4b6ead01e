"""Every folder of Python code in the source tree is a package the distribution finds (an
editable install hides a miss: a folder without ``__init__.py`` imports here and not in a wheel)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[2]


def test_every_code_directory_is_a_found_package() -> None:
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    for where in find["where"]:
        found = set(find_packages(str(ROOT / where), include=find["include"]))
        code_dirs = {
            ".".join(py.parent.relative_to(ROOT / where).parts)
            for py in (ROOT / where).rglob("*.py")
            if "__pycache__" not in py.parts
        }
        assert code_dirs == found, f"{where}/: folders of code that are not packages: {code_dirs - found}"
        assert all(name.startswith("gwlb_") for name in found), f"{where}/: not under a product name"
