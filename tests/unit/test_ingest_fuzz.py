"""Standing check (issue 11): ingestion fuzzed over mutated sample files, bounded in time.

Through the inbox, on SQLite (no server): whatever the file, the scan never
raises, never hangs (a deadline per file), never leaves a file in the inbox,
writes a report beside it, and accounts for every data row: accepted + updated
+ unchanged + rejected = the rows written. Two families of files:

- record-level mutations of the samples' rows (odd values, control and bidi
  characters, formula prefixes, over-long and 128 KiB+ values, stray bytes,
  odd JSON types, deep nesting, garbage lines), written as CSV (comma or
  semicolon, UTF-8 or Windows-1252) or JSON Lines: the number of data rows is
  known, the accounting is exact;
- byte-level mutations of the sample files (bytes flipped, inserted, deleted,
  lines duplicated or cut): every outcome names a distinct line of the file.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.services import inbox

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
NOW = dt.datetime(2024, 7, 1, 9, 0, tzinfo=ZoneInfo("Europe/Paris"))
STRAY = "\ue000"  # replaced by a raw Windows-1252 byte after encoding
BUDGET = settings(max_examples=int(os.environ.get("RELANCE_FUZZ_EXAMPLES", "250")), deadline=dt.timedelta(seconds=10), database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                         HealthCheck.function_scoped_fixture])


def _sample_rows() -> list[dict]:
    rows = list(csv.DictReader(io.StringIO((SAMPLES / "flux_2024-03.csv").read_text(encoding="utf-8"))))
    rows += [{k: ("" if v is None else str(v).lower() if isinstance(v, bool) else v) for k, v in json.loads(line).items()}
             for line in (SAMPLES / "flux_2024-06.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows


ROWS = _sample_rows()
COLUMNS = list(csv.DictReader(io.StringIO((SAMPLES / "flux_2024-03.csv").read_text(encoding="utf-8"))).fieldnames)


@pytest.fixture(scope="module")
def app():
    from worker.adapters.store import session as db_session
    from worker.bootstrap import build_app
    from worker.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        settings_ = Settings(data_dir=Path(tmp) / "var", broker_url="memory://")
        context = build_app(settings_)
        db_session.upgrade(context.db_url)
        yield context
        db_session.get_engine(context.db_url).dispose()


# --- strategies ---------------------------------------------------------------------------------------------------

_text = st.text(st.characters(blacklist_characters=STRAY), max_size=30)
_odd = st.sampled_from([
    "", " ", "=1+1", "+33 6 12", "-2", "@SUM(A1)", "\t=cmd", "Mar\u202etin", "L\u2066éa", "a\x00b", "a\x1bb",
    "a\rb", "a\nb", "\"quoted\"", "a;b,c", "Ã©", "\ufffd", "9999-12-31", "0001-01-01", "2024-02-30", "1900-01-01",
    "2015-01-01", "x" * 65, "é" * 201, "y" * (130 * 1024), f"Zo{STRAY}", "06 12 34 56 78", "+262692123456",
    "true", "oui", "2A", "185013500090067", "CDAS-REDON", "msa", "ft", "\ud800", "ﾟ", "\u2028",
])
_value = st.one_of(_odd, _text)
_json_value = st.one_of(_value, st.integers(), st.floats(allow_nan=True), st.booleans(), st.none(),
                        st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@st.composite
def record_files(draw):
    """(file name, bytes, number of data rows)."""
    fmt = draw(st.sampled_from(["csv", "csv;", "csv-cp1252", "jsonl"]))
    rows = [dict(r) for r in draw(st.lists(st.sampled_from(ROWS), min_size=1, max_size=8))]
    for row in rows:
        for name in draw(st.lists(st.sampled_from(COLUMNS), max_size=2, unique=True)):
            row[name] = draw(_json_value if fmt == "jsonl" else _value)
    if fmt == "jsonl":
        lines = [json.dumps(r, ensure_ascii=False) for r in rows]
        garbage = draw(st.lists(st.sampled_from([
            "{not json", "[1, 2]", "42", "[" * 50_000 + "]" * 50_000, '{"a":' * 5000 + "1" + "}" * 5000,
            '{"external_id": "X"}', "\ufeff{}",
        ]), max_size=2))
        for g in garbage:
            lines.insert(draw(st.integers(0, len(lines))), g)
        data = ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")
        return "fuzz.jsonl", data.replace(STRAY.encode(), b"\xe9"), len(lines)
    out = io.StringIO(newline="")
    writer = csv.writer(out, delimiter=";" if fmt == "csv;" else ",")
    writer.writerow(COLUMNS)
    for r in rows:
        writer.writerow([r.get(c, "") for c in COLUMNS])
    text = out.getvalue()
    if fmt == "csv-cp1252":
        data = text.replace(STRAY, "é").encode("cp1252", "replace")
    else:
        data = text.encode("utf-8", "surrogatepass").replace(STRAY.encode(), b"\xe9")
    blank = sum(1 for r in rows if not any(str(r.get(c, "")).strip() for c in COLUMNS))
    return "fuzz.csv", data, len(rows) - blank


@st.composite
def byte_mutations(draw):
    name = draw(st.sampled_from(["flux_2024-03.csv", "flux_2024-04_excel.csv", "flux_2024-05_with_errors.csv",
                                 "flux_2024-06.jsonl"]))
    data = bytearray((SAMPLES / name).read_bytes())
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "dup_line", "cut"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8) | st.sampled_from(
                [b'"', b"\n", b"\r", b";", b",", b"\x00", b"\xe9", b"\xc3", b"{", b"\xef\xbb\xbf", b"=", b"\xe2\x80\xae"]))
        elif kind == "delete":
            del data[pos:pos + draw(st.integers(1, 40))]
        elif kind == "dup_line":
            lines = bytes(data).split(b"\n")
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(i, lines[i])
            data = bytearray(b"\n".join(lines))
        else:
            del data[pos:]
    return name, bytes(data)


# --- the checks ---------------------------------------------------------------------------------------------------


def _scan_one(app, name: str, data: bytes) -> dict:
    box = app.settings.inbox
    box.mkdir(parents=True, exist_ok=True)
    for sub in ("done", "failed"):
        shutil.rmtree(box / sub, ignore_errors=True)
    (box / name).write_bytes(data)
    start = time.monotonic()
    results = inbox.scan_inbox(app, NOW)  # never raises
    assert time.monotonic() - start < 10
    assert [p.name for p in box.iterdir() if p.is_file()] == [], "a file stayed in the inbox"
    reports = list(box.rglob("*.report.json"))
    assert len(reports) == 1 and len(results) == 1
    report = json.loads(reports[0].read_text(encoding="utf-8"))
    assert report["status"] in ("done", "failed")
    if report["status"] == "failed":
        assert report["error"] and "erreur inattendue" not in report["error"], report["error"]
    else:
        assert all(r["reason"] and r["field"] for r in report["rejected"])
        assert not any("erreur inattendue" in r["reason"] for r in report["rejected"])
    return report


def _outcomes(report: dict) -> int:
    return report["accepted"] + report["updated"] + report["unchanged"] + len(report["rejected"])


@BUDGET
@given(record_files())
def test_every_data_row_is_accounted_for(app, case):
    name, data, n_rows = case
    report = _scan_one(app, name, data)
    if report["status"] == "failed":
        # Only a file-level reason: a stock (a majority of old droits), or no usable line at all.
        assert "stock" in report["error"] or "aucune ligne" in report["error"], report["error"]
    else:
        assert _outcomes(report) == n_rows, (report, n_rows)


@BUDGET
@given(byte_mutations())
def test_mutated_sample_files_never_block_the_inbox(app, case):
    name, data = case
    report = _scan_one(app, name, data)
    if report["status"] == "done":
        lines = len(data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n"))
        rejected = [r["line"] for r in report["rejected"]]
        assert all(1 <= n <= lines for n in rejected), (rejected, lines)
        assert len(set(rejected)) == len(rejected), rejected
        assert _outcomes(report) <= lines


def test_the_fuzz_budget_is_bounded():
    # 250 examples a property, ~20 ms each: ~10 s in all (RELANCE_FUZZ_EXAMPLES raises it for a long local run).
    assert BUDGET.deadline.total_seconds() <= 10
