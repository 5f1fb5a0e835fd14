"""The layers (ARCHITECTURE.md), checked by import-linter's contracts in `.importlinter`.

The first test runs the contracts on the real package; the others show that a
wrong import in a copy of the package fails them, with the offending line.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
SERVICE_MODULE_MAX_LINES = 400


def _lint(root: Path) -> subprocess.CompletedProcess:
    if not LINT_IMPORTS.exists():
        pytest.fail(f"lint-imports not installed beside {sys.executable}: pip install -e '.[test]'")
    env = {**os.environ, "PYTHONPATH": str(root), "NO_COLOR": "1"}
    return subprocess.run([str(LINT_IMPORTS), str(root / ".importlinter"), "--no-cache"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_the_package_keeps_its_layers():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 kept, 0 broken" in result.stdout


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "worker", tmp_path / "worker", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    return tmp_path


def _append(path: Path, line: str) -> int:
    text = path.read_text(encoding="utf-8")
    path.write_text(text + line + "\n", encoding="utf-8")
    return text.count("\n") + 1


@pytest.mark.parametrize("module, line, contract, expected", [
    ("domain/calendar.py", "import sqlalchemy  # deliberate", "The domain imports no I/O library",
     "worker.domain.calendar -> sqlalchemy"),
    ("domain/postal.py", "from pathlib import Path  # deliberate", "The domain imports no I/O library",
     "worker.domain.postal -> pathlib"),
    ("services/timeline.py", "from worker.entrypoints import cli  # deliberate", "Layers",
     "worker.services.timeline -> worker.entrypoints.cli"),
    ("domain/engine.py", "from worker.adapters.store import models  # deliberate", "Layers",
     "worker.domain.engine -> worker.adapters.store.models"),
    ("entrypoints/tasks/sms.py", "from worker.adapters.store.models import Message  # deliberate",
     "Entry points reach the store only through the services", "worker.entrypoints.tasks.sms -> "
                                                              "worker.adapters.store.models"),
    ("services/cases.py", "from worker.services import sending  # deliberate", "No import circles",
     ".cases -> .sending"),
])
def test_a_wrong_import_breaks_a_contract_and_names_the_line(copy, module, line, contract, expected):
    number = _append(copy / "worker" / module, line)
    result = _lint(copy)
    assert result.returncode != 0, result.stdout
    out = " ".join(result.stdout.split())  # the report wraps long lines
    assert f"{contract}" in out and "BROKEN" in out, out
    assert expected in out, out
    if "circles" not in contract:
        assert f"(l.{number})" in out, out


def test_no_service_module_is_over_400_lines():
    long = {p.name: n for p in (ROOT / "worker" / "services").glob("*.py")
            if (n := p.read_text(encoding="utf-8").count("\n")) > SERVICE_MODULE_MAX_LINES}
    assert not long, f"split these service modules (over {SERVICE_MODULE_MAX_LINES} lines): {long}"
