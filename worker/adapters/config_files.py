"""Reading ``config/paths.yaml`` and ``config/territory.yaml`` into the domain's policy,
``config/campaign.yaml`` (the stock campaign's segments, when present) and
``config/flux_columns.yaml`` (the flux's extra columns kept at ingestion).

A bad file fails with :class:`worker.domain.policy.ConfigError` naming the
file, the key and what is wrong (in French).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from worker.domain.campaign import CampaignConfig
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
        if not loc and msg.startswith(("paths.", "routing.", "department.", "segments.", "flux_reserve.",
                                       "path_organisations.")):
            loc, _, msg = msg.partition(": ")
        raise ConfigError(path, loc or "(racine)", msg) from None


def load_config(config_dir: Path) -> Config:
    paths_file = config_dir / "paths.yaml"
    territory_file = config_dir / "territory.yaml"
    policy = _validate(Policy, _load_yaml(paths_file), paths_file)
    territory = _validate(Territory, _load_yaml(territory_file), territory_file)
    files = {"paths": str(paths_file), "territory": str(territory_file)}
    campaign_file = config_dir / "campaign.yaml"
    campaign = None
    if campaign_file.exists():  # the stock campaign (issue 14): without the file, no `ingest --stock`
        campaign = _validate(CampaignConfig, _load_yaml(campaign_file), campaign_file)
        try:
            campaign.check(policy, territory)
        except ValueError as exc:
            key, _, problem = str(exc).partition(": ")
            raise ConfigError(campaign_file, key, problem) from None
        files["campaign"] = str(campaign_file)
    return Config(policy=policy, territory=territory, files=files, campaign=campaign)


def load_flux_columns(config_dir: Path) -> frozenset[str]:
    """``extra_columns`` of ``config/flux_columns.yaml`` (lower case); none if the file is absent."""
    path = config_dir / "flux_columns.yaml"
    if not path.exists():
        return frozenset()
    data = _load_yaml(path)
    if data is None:
        return frozenset()
    if not isinstance(data, dict) or set(data) - {"extra_columns"}:
        raise ConfigError(path, "(racine)", "seule la clé extra_columns (liste de noms de colonnes) est attendue")
    names = data.get("extra_columns") or []
    if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
        raise ConfigError(path, "extra_columns", "liste de noms de colonnes attendue")
    return frozenset(n.strip().lower() for n in names)
