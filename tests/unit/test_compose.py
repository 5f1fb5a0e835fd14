"""docker-compose.yml, Dockerfile and config/settings.example.env, checked statically
against the code (no Docker engine needed): every ``relance`` command a service runs
parses with the real CLI, every queue is consumed, every RELANCE_* variable is a real
setting, ports stay on 127.0.0.1, migrations run first."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main
import yaml

import worker.entrypoints.cli
from worker.entrypoints import queues
from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
EXAMPLE_ENV = ROOT / "config" / "settings.example.env"
VAR = re.compile(r"\bRELANCE_[A-Z0-9_]+\b")
# Read by the scheduler only (worker/entrypoints/scheduler.py), not Settings fields: test/dev tuning.
SCHEDULER_ENV = {"RELANCE_SCHEDULER_INTERVAL_SECONDS", "RELANCE_SCHEDULER_LEASE_SECONDS"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def _relance_services(services) -> dict[str, list[str]]:
    found = {}
    for name, svc in services.items():
        cmd = svc.get("command")
        if isinstance(cmd, str):
            cmd = cmd.split()
        if cmd and cmd[0] == "relance":
            found[name] = [str(c) for c in cmd]
    return found


def _is_group(cmd) -> bool:
    return hasattr(cmd, "list_commands") and hasattr(cmd, "get_command")


def _parse(argv: list[str]) -> tuple[list[str], object]:
    """Resolve ``relance <group...> <command> <options>`` with the real CLI; fails on anything unknown.

    Returns the command path and the parsed context (``ctx.params``). Typer may ship its own
    copy of click, so the click API is reached through the command objects, not ``import click``."""
    root = typer.main.get_command(worker.entrypoints.cli.app)
    cmd, path, args = root, [], list(argv[1:])
    while _is_group(cmd):
        assert args, f"{argv}: '{' '.join(['relance', *path])}' needs a subcommand"
        name = args.pop(0)
        group_ctx = cmd.context_class(cmd)
        sub = cmd.get_command(group_ctx, name)
        assert sub is not None, (f"{argv}: no such command '{' '.join(['relance', *path, name])}' "
                                 f"(have: {sorted(cmd.list_commands(group_ctx))})")
        cmd, path = sub, [*path, name]
    try:
        ctx = cmd.make_context(" ".join(["relance", *path]), args)
    except Exception as exc:  # click's UsageError (typer's or click's own)
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        pytest.fail(f"{argv}: {type(exc).__name__}: {message}")
    return path, ctx


def _env_vars(node) -> set[str]:
    """Every RELANCE_* name in the file: environment keys and ${...} references."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            found |= set(VAR.findall(str(key))) | _env_vars(value)
    elif isinstance(node, list):
        for item in node:
            found |= _env_vars(item)
    elif isinstance(node, str):
        found |= set(VAR.findall(node))
    return found


def _environment(svc) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


# --- commands -------------------------------------------------------------------------------------


def test_every_relance_command_parses_with_the_real_cli(services):
    commands = _relance_services(services)
    assert commands, "no service runs relance"
    for name, argv in commands.items():
        _parse(argv)  # fails on an unknown command or option


def test_the_expected_roles_are_there(services):
    roles = {name: tuple(_parse(argv)[0]) for name, argv in _relance_services(services).items()}
    assert list(roles.values()).count(("scheduler",)) == 1, "exactly one scheduler service"
    assert ("db", "upgrade") in roles.values()
    assert ("api",) in roles.values() and ("flower",) in roles.values()
    assert any(r == ("worker",) for r in roles.values())
    sched = next(n for n, r in roles.items() if r == ("scheduler",))
    assert (services[sched].get("deploy") or {}).get("replicas", 1) == 1


def test_api_and_flower_listen_on_all_interfaces_inside_their_container(services):
    for name, argv in _relance_services(services).items():
        path, ctx = _parse(argv)
        if path == ["api"]:
            assert ctx.params["host"] == "0.0.0.0", name
        if path == ["flower"]:
            assert ctx.params["address"] == "0.0.0.0", name


def test_worker_queues_are_real_and_all_consumed(services):
    consumed: dict[str, list[str]] = {}
    for name, argv in _relance_services(services).items():
        path, ctx = _parse(argv)
        if path != ["worker"]:
            continue
        assert "-Q" in argv or "--queues" in argv, f"{name}: name the queues explicitly"
        names = [q.strip() for q in ctx.params["queues"].split(",") if q.strip()]
        unknown = set(names) - set(queues.ALL)
        assert not unknown, f"{name}: unknown queue(s) {sorted(unknown)} (worker.entrypoints.queues.ALL: {queues.ALL})"
        assert ctx.params["concurrency"] >= 1
        for q in names:
            consumed.setdefault(q, []).append(name)
    missing = set(queues.ALL) - set(consumed)
    assert not missing, f"no worker service consumes {sorted(missing)}"


# --- environment --------------------------------------------------------------------------------------


def test_every_relance_variable_is_a_setting(compose):
    fields = {f"RELANCE_{name.upper()}" for name in Settings.model_fields}
    used = _env_vars(compose)
    assert used
    unknown = used - fields
    assert not unknown, f"not Settings fields (worker/settings.py): {sorted(unknown)}"


def test_relance_services_share_one_configuration(services):
    commands = _relance_services(services)
    urls = {(e.get("RELANCE_DATABASE_URL"), e.get("RELANCE_BROKER_URL"), e.get("RELANCE_DATA_DIR"))
            for e in (_environment(services[n]) for n in commands)}
    assert len(urls) == 1, f"services disagree on database/broker/data dir: {urls}"
    db, broker, data_dir = urls.pop()
    assert db.startswith("postgresql+psycopg://") and "@postgres:" in db
    # The broker has a password (whoever can publish a task can act), from .env.
    assert re.match(r"^redis://:\$\{REDIS_PASSWORD:\?[^}]*\}@redis:6379/\d+$", broker), broker
    for name in commands:
        if _parse(commands[name])[0] in (["worker"], ["scheduler"], ["api"]):
            mounts = [str(v).split(":")[1] for v in services[name].get("volumes", []) if ":" in str(v)]
            assert data_dir in mounts, f"{name} must mount the shared data volume at {data_dir}"


def test_no_secret_in_the_compose_file(services):
    for name, svc in services.items():
        for key, value in _environment(svc).items():
            if re.search(r"PASSWORD|TOKEN|SECRET|_KEY$", key):
                assert value.startswith("${") and value.endswith("}"), f"{name}: {key} must come from .env"


def test_flower_has_its_password(services):
    flower = next(n for n, argv in _relance_services(services).items() if _parse(argv)[0] == ["flower"])
    assert "RELANCE_FLOWER_PASSWORD" in _environment(services[flower])


# --- network and start-up order ------------------------------------------------------------------------


def _published(port) -> tuple[str | None, str]:
    if isinstance(port, dict):
        return port.get("host_ip"), str(port.get("published"))
    parts = str(port).split(":")
    if len(parts) == 3:
        return parts[0], parts[1]
    return None, parts[0]


def test_ports_are_bound_to_localhost(services):
    seen = 0
    for name, svc in services.items():
        for port in svc.get("ports", []):
            host_ip, _ = _published(port)
            assert host_ip == "127.0.0.1", f"{name}: port {port!r} must be bound to 127.0.0.1"
            seen += 1
    assert seen
    for name in ("redis", "postgres"):
        assert not services[name].get("ports"), f"{name} must not be published"


def test_migrate_runs_before_every_relance_process(services):
    commands = _relance_services(services)
    migrate = [n for n, argv in commands.items() if _parse(argv)[0] == ["db", "upgrade"]]
    assert len(migrate) == 1
    migrate = migrate[0]
    assert services[migrate].get("restart", "no") == "no"
    assert services[migrate]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in commands:
        if name == migrate:
            continue
        deps = services[name].get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on needs conditions"
        assert deps.get(migrate, {}).get("condition") == "service_completed_successfully", name
        assert deps.get("redis", {}).get("condition") == "service_healthy", name


def test_healthy_conditions_have_healthchecks(services):
    for name, svc in services.items():
        for dep, spec in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            if spec.get("condition") == "service_healthy":
                assert services[dep].get("healthcheck"), f"{dep} needs a healthcheck ({name} waits for it)"


def test_backing_services(services):
    assert services["postgres"]["image"].startswith("postgres:15")
    assert services["redis"]["image"].startswith("redis:")
    assert any("mailpit" in str(svc.get("image", "")) for svc in services.values())


# --- Dockerfile and the example settings -----------------------------------------------------------------


def test_dockerfile():
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11(\.\d+)?-slim\b", text, re.MULTILINE)
    for lib in ("libpango-1.0-0", "libpangoft2-1.0-0", "libharfbuzz0b", "libharfbuzz-subset0", "fonts-dejavu-core"):
        assert lib in text, lib
    assert re.search(r"pip install \.", text)
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"
    for var in VAR.findall(text):
        assert var[len("RELANCE_"):].lower() in Settings.model_fields, var


def test_example_env_documents_every_setting_without_secrets():
    text = EXAMPLE_ENV.read_text(encoding="utf-8")
    documented: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"^#?\s*(RELANCE_[A-Z0-9_]+)=(.*)$", line.strip())
        if m:
            documented[m.group(1)] = m.group(2).strip()
    fields = {f"RELANCE_{name.upper()}" for name in Settings.model_fields}
    missing = fields - set(documented)
    assert not missing, f"undocumented settings: {sorted(missing)}"
    unknown = set(documented) - fields - SCHEDULER_ENV
    assert not unknown, f"not settings: {sorted(unknown)}"
    for name, value in documented.items():
        if re.search(r"PASSWORD|TOKEN|_SID$|HASH_KEY|API_KEYS|SECRETS", name):
            assert value == "", f"{name} must not carry a value in the example"
    # Nothing is set by copying the example: every assignment is commented out.
    assert not [ln for ln in text.splitlines() if ln.startswith("RELANCE_")]


# --- issue 11: a broker with a password, pinned images, secrets per service, health checks, TZ ---------------

SECRETS = {  # secret -> the services that use it (and no other may hold it)
    "RELANCE_TWILIO_AUTH_TOKEN": {"worker-send", "api"},
    "RELANCE_SMTP_PASSWORD": {"worker-send", "scheduler"},
    "RELANCE_BOUNCE_KEY": {"worker-send", "scheduler"},
    "RELANCE_API_KEYS": {"api"},
    "RELANCE_RDV_SOLIDARITES_SECRETS": {"api"},
    "RELANCE_FLOWER_PASSWORD": {"flower"},
}


def test_redis_requires_a_password(services):
    redis = services["redis"]
    command = " ".join(redis["command"])
    assert "--requirepass ${REDIS_PASSWORD:?" in command
    assert "REDISCLI_AUTH" in _environment(redis)  # the health check authenticates too


def test_images_are_pinned(services):
    for name, svc in services.items():
        image = svc.get("image", "")
        if image.startswith("relance:"):
            continue
        tag = image.split("@", 1)[0].rsplit(":", 1)[-1] if ":" in image else ""
        assert "@sha256:" in image or re.match(r"^v?\d+\.\d+(\.\d+)?(-[a-z0-9]+)?$", tag), f"{name}: pin {image!r}"
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11\.\d+-slim-\w+", text, re.MULTILINE), "pin the base image's patch release"


def test_secrets_go_only_to_the_services_that_use_them(compose, services):
    for name, svc in services.items():
        for env_file in svc.get("env_file") or []:
            path = env_file["path"] if isinstance(env_file, dict) else env_file
            assert path != ".env", f"{name}: .env holds every secret: pass each one to the services that use it"
    for secret, users in SECRETS.items():
        holders = {n for n, svc in services.items() if secret in _environment(svc)}
        assert holders <= users, f"{secret} given to {sorted(holders - users)}"
    assert "RELANCE_API_KEYS" in _environment(services["api"])
    assert "RELANCE_TWILIO_AUTH_TOKEN" in _environment(services["worker-send"])


def test_postgres_ready_over_tcp_and_migrate_waits(services):
    check = " ".join(services["postgres"]["healthcheck"]["test"])
    assert "pg_isready" in check and "-h 127.0.0.1" in check, "check over TCP, not the Unix socket"
    migrate = [argv for argv in _relance_services(services).values() if argv[1:3] == ["db", "upgrade"]][0]
    path, ctx = _parse(migrate)
    assert ctx.params["wait"] >= 30, "db upgrade retries while PostgreSQL is still starting"


def test_every_long_running_service_has_a_health_check(services):
    for name, argv in _relance_services(services).items():
        path, _ = _parse(argv)
        if path == ["db", "upgrade"]:
            continue
        assert services[name].get("healthcheck"), f"{name} needs a healthcheck"
    scheduler = next(n for n, argv in _relance_services(services).items() if _parse(argv)[0] == ["scheduler"])
    test = services[scheduler]["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1:] == ["relance", "scheduler", "--check"]
    _parse(test[1:])  # a real command
    flower = next(n for n, argv in _relance_services(services).items() if _parse(argv)[0] == ["flower"])
    assert "/healthcheck" in " ".join(services[flower]["healthcheck"]["test"])


def test_every_service_has_the_time_zone(services):
    for name, svc in services.items():
        assert "TZ" in _environment(svc), f"{name}: set TZ (logs and cron times in local time)"


def test_inbox_and_print_folders_are_bind_mounts(services):
    for name, argv in _relance_services(services).items():
        if _parse(argv)[0] not in (["worker"], ["scheduler"]):
            continue
        mounts = {str(v).rsplit(":", 1)[1]: str(v).rsplit(":", 1)[0] for v in services[name].get("volumes", [])}
        for target in ("/var/lib/relance/inbox", "/var/lib/relance/outbox/print"):
            assert target in mounts, f"{name}: bind-mount {target}"
            source = mounts[target]
            assert source.startswith(("./", "/", "${")), f"{name}: {target} must be a host folder, not a volume"


def test_dependencies_are_pinned_for_ci_and_the_image():
    constraints = (ROOT / "constraints.txt").read_text(encoding="utf-8")
    pins = {line.split("==")[0].lower().replace("_", "-") for line in constraints.splitlines()
            if line and not line.startswith("#")}
    assert all("==" in line for line in constraints.splitlines() if line and not line.startswith("#"))
    assert "relance" not in pins
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["test"]
    for requirement in wanted:
        name = re.split(r"[<>=\[ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        assert name in pins, f"{name} is not pinned in constraints.txt (make constraints)"
    assert re.search(r"pip install \. -c constraints\.txt", DOCKERFILE.read_text(encoding="utf-8"))
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"pip install .*-c \$\(CONSTRAINTS\)", makefile) and "CONSTRAINTS := constraints.txt" in makefile
