"""The README's module map names every module of service/, so a newcomer finds each one."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICE = ROOT / "service"


def _module_map() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("```\nservice/\n")
    return readme[start : readme.index("```\n", start + 4)]


def test_every_module_is_in_the_readme_map() -> None:
    named = set(re.findall(r"[\w/]*?(\w+\.py)\b", _module_map()))
    modules = {
        path.name
        for path in SERVICE.rglob("*.py")
        if path.name != "__init__.py" and "migrations" not in path.parts
    }
    assert modules - named == set(), "add these modules to the README's module map"
