"""The README is the front door: every setting is in its table, with a default."""
from __future__ import annotations

import re
from pathlib import Path

from worker.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def _documented() -> dict[str, str]:
    """{variable: default column} from the README's settings table rows.

    A row may name two variables, ``RELANCE_SMTP_HOST`` / ``_PORT``: the second
    replaces as many trailing words of the first as it has."""
    out = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`RELANCE_"):
            continue
        names = re.findall(r"`([A-Z0-9_]+)`", cells[0])
        first = names[0]
        out[first] = cells[1]
        for other in names[1:]:
            words = other.strip("_").split("_")
            out["_".join(first.split("_")[: -len(words)] + words)] = cells[1]
    return out


def test_every_setting_is_in_the_readme_with_its_default():
    documented = _documented()
    fields = {f"RELANCE_{name.upper()}" for name in Settings.model_fields}
    assert not fields - set(documented), f"settings missing from the README: {sorted(fields - set(documented))}"
    assert all(default for default in documented.values()), "a setting without a default column"


def test_the_readme_documents_no_setting_that_does_not_exist():
    fields = {f"RELANCE_{name.upper()}" for name in Settings.model_fields}
    scheduler = {"RELANCE_SCHEDULER_INTERVAL_SECONDS", "RELANCE_SCHEDULER_LEASE_SECONDS"}  # read by scheduler.py
    assert not set(_documented()) - fields - scheduler
