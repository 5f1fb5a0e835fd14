"""Queue names and the queue groups, in one place (ops run one worker per group).

``GROUPS`` is the one list of worker groups: the README, docs/ops.md and
docker-compose.yml start exactly these (``relance worker -Q <queues> -c <n> -n
<group>@%h``), and tests/unit/test_queue_groups.py checks that they agree with it.
"""
INGEST = "ingest"
CASES = "cases"
SMS = "sms"
LETTERS = "letters"
EMAIL = "email"
MAINTENANCE = "maintenance"

ALL = (INGEST, CASES, SMS, LETTERS, EMAIL, MAINTENANCE)
BY_CHANNEL = {"sms": SMS, "letter": LETTERS, "email": EMAIL}

# group -> (queues, default concurrency). Each group's worker is named "<group>@<host>".
GROUPS: dict[str, tuple[tuple[str, ...], int]] = {
    "ingest": ((INGEST, MAINTENANCE), 1),  # flux files; the maintenance tasks
    "cases": ((CASES,), 2),  # advance a due case, apply an event
    "send": ((SMS, LETTERS, EMAIL), 4),  # every send is claimed in the database first
}


def worker_command(group: str) -> str:
    """The command line that starts one group's worker, as the docs print it."""
    names, concurrency = GROUPS[group]
    return f"relance worker -Q {','.join(names)} -c {concurrency} -n {group}@%h"


def node_name(queues: str) -> str:
    """The default node name of a worker consuming ``queues`` (comma-separated): its group's
    (``send@%h``), else one made of the queue names — never the shared ``celery@%h``."""
    wanted = tuple(q.strip() for q in queues.split(",") if q.strip())
    for group, (names, _) in GROUPS.items():
        if set(names) == set(wanted):
            return f"{group}@%h"
    return "-".join(wanted or ("all",)) + "@%h"
