"""One list of queue groups (worker/entrypoints/queues.py GROUPS), followed by the README, the ops
doc and the compose file; every worker they start has its own node name (issue 11: "Flower shows
one worker": every worker started as celery@host)."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from worker.entrypoints import queues

ROOT = Path(__file__).resolve().parents[2]
COMMAND = re.compile(r"relance worker((?: +-[-\w]+ +[^\s`|]+)+)")


def _commands(text: str) -> list[dict[str, str]]:
    found = []
    for match in COMMAND.finditer(text.replace("%%h", "%h")):  # %% is systemd's escape of %
        args = match.group(1).split()
        found.append(dict(zip(args[::2], args[1::2])))
    return found


def _compose_commands() -> list[dict[str, str]]:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))["services"]
    return [dict(zip(svc["command"][2::2], svc["command"][3::2])) for svc in services.values()
            if svc.get("command", [None, None])[:2] == ["relance", "worker"]]


def _sources() -> dict[str, list[dict[str, str]]]:
    return {"README.md": _commands((ROOT / "README.md").read_text(encoding="utf-8")),
            "docs/ops.md": _commands((ROOT / "docs" / "ops.md").read_text(encoding="utf-8")),
            "docker-compose.yml": _compose_commands()}


def test_the_groups_cover_every_queue_once():
    listed = [q for names, _ in queues.GROUPS.values() for q in names]
    assert sorted(listed) == sorted(queues.ALL)


def test_readme_ops_and_compose_start_each_group_as_queues_py_says():
    for source, commands in _sources().items():
        assert commands, f"{source}: no `relance worker` command"
        started = {}
        for args in commands:
            assert "-Q" in args and "-n" in args, f"{source}: {args} (name the queues and the node)"
            wanted = tuple(args["-Q"].split(","))
            assert set(wanted) <= set(queues.ALL), f"{source}: unknown queue in {args['-Q']}"
            # A group's worker is named after its group; a worker for part of a group after its queues.
            assert args["-n"] == queues.node_name(args["-Q"]), f"{source}: {args}"
            started[args["-n"]] = args
        for group, (names, concurrency) in queues.GROUPS.items():
            args = started.get(f"{group}@%h")
            assert args, f"{source}: no worker for the group {group!r} ({queues.worker_command(group)})"
            assert args["-Q"] == ",".join(names) and args["-c"] == str(concurrency), (source, args)


def test_every_documented_worker_has_its_own_name():
    for source, commands in _sources().items():
        names = [args["-n"] for args in commands if "-n" in args]
        assert "celery@%h" not in names, source


def test_the_cli_names_a_worker_after_its_group_by_default():
    assert queues.node_name("sms,letters,email") == "send@%h"
    assert queues.node_name("maintenance, ingest") == "ingest@%h"
    assert queues.node_name("sms") == "sms@%h"
    assert len({queues.node_name(",".join(names)) for names, _ in queues.GROUPS.values()}) == len(queues.GROUPS)
