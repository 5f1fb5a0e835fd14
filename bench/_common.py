"""Shared helpers of the benchmark scripts: machine description, results files."""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"


def command_line() -> str:
    exe = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT)) else sys.executable
    script = os.path.relpath(sys.argv[0], ROOT)
    return " ".join(shlex.quote(a) for a in [exe, script, *sys.argv[1:]])


def loadavg() -> tuple[float, float, float]:
    try:
        return tuple(float(x) for x in Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return (float("nan"),) * 3


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {"host": platform.node(), "os": platform.platform(), "cpu": cpu, "cpus": os.cpu_count(), "memory": mem,
            "python": platform.python_version()}


def pg_version(conn) -> str:
    return conn.execute("SHOW server_version").fetchone()[0]


def save(name: str, result: dict) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": name, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "command": command_line(), "machine": machine(), **result}
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    return path


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def tree_cpu_seconds(root_pid: int) -> float:
    """CPU time (user + system) of a process, its live children and its reaped children."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            raw = stat.read_text()
        except OSError:
            continue
        pid = int(stat.parent.name)
        fields = raw[raw.rindex(")") + 2:].split()
        ppid = int(fields[1])
        if pid == root_pid:
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        elif ppid == root_pid:
            total += int(fields[11]) + int(fields[12])
    return total / tick
