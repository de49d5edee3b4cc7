"""The house rules that `lint-imports` does not see: imports at the top, a short README, CI running its command."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: the project's own packages, and the entry points at the root.
PACKAGES = ("policies", "envs", "hyperparams", "agents", "deploy", "bsn_zoo", "benchmarks")
ENTRY_POINTS = ("train.py", "evaluate.py", "export.py")


def project_sources() -> list[Path]:
    return sorted([*(path for package in PACKAGES for path in (ROOT / package).rglob("*.py")),
                   *(ROOT / name for name in ENTRY_POINTS)])


def local_imports_of_our_modules(path: Path) -> list[str]:
    """``line: module`` of every import of a project package inside a function or class body."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for inner in ast.walk(node):
                names = []
                if isinstance(inner, ast.Import):
                    names = [alias.name for alias in inner.names]
                elif isinstance(inner, ast.ImportFrom) and inner.level == 0 and inner.module:
                    names = [inner.module]
                found += [f"{inner.lineno}: {name}" for name in names if name.split(".")[0] in PACKAGES]
    return found


@pytest.mark.parametrize("path", project_sources(), ids=lambda path: str(path.relative_to(ROOT)))
def test_the_project_imports_its_own_modules_at_the_top(path: Path) -> None:
    assert local_imports_of_our_modules(path) == []


def test_the_local_import_scan_sees_a_function_local_import(tmp_path: Path) -> None:
    source = tmp_path / "module.py"
    source.write_text("import os\n\n\ndef f():\n    from bsn_zoo.config import RUN_DEFAULTS\n    import optuna\n")
    assert local_imports_of_our_modules(source) == ["5: bsn_zoo.config"]


def test_readme_is_short_and_ci_runs_its_test_command_verbatim() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme) < 15_000
    commands = re.findall(r"^(pip install -e \"\.\[dev\]\" && .*python -m pytest)$", readme, flags=re.MULTILINE)
    assert len(commands) == 1, "the README shows one test command"
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert commands[0] in ci_lines

