"""Reading ``config/paths.yaml`` and ``config/territory.yaml`` into the domain's policy.

A bad file fails with :class:`worker.domain.policy.ConfigError` naming the
file, the key and what is wrong (in French).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from worker.domain.policy import Config, ConfigError, Policy, Territory


def _load_yaml(path: Path) -> Any:
    if not path.exists():
        raise ConfigError(path, "(fichier)", "fichier introuvable")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"ligne {mark.line + 1}" if mark else "(fichier)"
        raise ConfigError(path, where, f"YAML invalide : {getattr(exc, 'problem', exc)}") from None


def _validate(model: type[BaseModel], data: Any, path: Path) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(path, "(racine)", "le fichier doit contenir un dictionnaire")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in err["loc"]).replace(".[", "[")
        msg = err["msg"].removeprefix("Value error, ")
        if not loc and msg.startswith(("paths.", "routing.", "department.")):
            loc, _, msg = msg.partition(": ")
        raise ConfigError(path, loc or "(racine)", msg) from None


def load_config(config_dir: Path) -> Config:
    paths_file = config_dir / "paths.yaml"
    territory_file = config_dir / "territory.yaml"
    policy = _validate(Policy, _load_yaml(paths_file), paths_file)
    territory = _validate(Territory, _load_yaml(territory_file), territory_file)
    return Config(policy=policy, territory=territory, files={"paths": str(paths_file), "territory": str(territory_file)})
