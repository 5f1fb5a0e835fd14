"""Synthetic flux files for the benchmarks: valid rows, fictional people.

    .venv/bin/python bench/flux_gen.py OUT.csv -n 100000 [--now 2024-06-10T10:00:00+02:00] [--seed 1]

Every row passes worker.adapters.flux.parse_flux: synthetic names, "06 12 34 xx xx"
phones (ARCEP fiction range), NIRs with a valid mod-97 key (distinct for each
row), organisations of config/territory.yaml (coherent with the orientation),
droit opened 0-9 days before the simulated now, 97 % droits et devoirs.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

COLUMNS = ("external_id", "nir", "last_name", "first_name", "birth_date", "sex", "address_line1", "address_line2",
           "postcode", "city", "phone", "email", "droit_opened_on", "orientation", "ft_registered", "organisation",
           "droits_devoirs")
LAST = ("Martin", "Bernard", "Le Goff", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy", "Moreau",
        "Simon", "Laurent", "Lefebvre", "Michel", "Garcia", "David", "Bertrand", "Roux", "Vincent", "Fournier",
        "Morvan", "Le Gall", "Kermarrec", "Tanguy", "Riou", "Diallo", "Da Silva", "Nguyen", "Fontaine", "Guérin")
FIRST_F = ("Marie", "Léa", "Julie", "Sandrine", "Inès", "Manon", "Nadia", "Sophie", "Awa", "Chloé", "Emma", "Zoé")
FIRST_M = ("Julien", "Thomas", "Hugo", "Sébastien", "Maxime", "Gwenaël", "Karim", "Lucas", "Yann", "Erwan", "Noah")
STREETS = ("rue de la Gare", "rue des Écoles", "impasse des Tilleuls", "allée des Chênes", "rue Saint-Michel",
           "avenue du Général de Gaulle", "boulevard de la Liberté", "rue de Vilaine", "lieu-dit La Noë",
           "place de la Mairie")
LINE2 = ("", "", "", "Bâtiment B", "Appartement 12", "Résidence Les Ajoncs", "Chez M. Dupont")
TOWNS = (("35600", "REDON"), ("35600", "BAINS-SUR-OUST"), ("35470", "BAIN-DE-BRETAGNE"), ("35580", "GUICHEN"),
         ("35390", "GRAND-FOUGERAY"), ("35550", "PIPRIAC"), ("56350", "ALLAIRE"), ("35330", "VAL D'ANAST"),
         ("44460", "SAINT-NICOLAS-DE-REDON"))


def organisations() -> dict[str, str]:
    """name -> kind, from config/territory.yaml."""
    import yaml

    data = yaml.safe_load((ROOT / "config" / "territory.yaml").read_text(encoding="utf-8"))
    return {name: org["kind"] for name, org in data["organisations"].items()}


def nir_for(i: int, sex: str, birth: dt.date) -> str:
    i %= 999 * 999  # commune 001-999, order 001-999: distinct for 998 001 consecutive rows
    body = f"{1 if sex == 'M' else 2}{birth.year % 100:02d}{birth.month:02d}35{i // 999 + 1:03d}{i % 999 + 1:03d}"
    assert len(body) == 13, body
    return body + f"{97 - int(body) % 97:02d}"


def rows(n: int, now: dt.datetime, seed: int = 1, start: int = 0):
    rnd = random.Random(seed)
    orgs = organisations()
    by_kind: dict[str, list[str]] = {}
    for name, kind in orgs.items():
        by_kind.setdefault(kind, []).append(name)
    cd_like = by_kind.get("cd", []) + by_kind.get("msa", [])
    today = now.date()
    for k in range(start, start + n):
        sex = rnd.choice("FM")
        roll = rnd.random()
        if roll < 0.15:
            orientation, org = "ml", rnd.choice(by_kind["ml"])
        elif roll < 0.40:
            orientation, org = "ft", rnd.choice(by_kind["ft"])
        elif roll < 0.85:
            orientation, org = "cd", rnd.choice(cd_like)
        else:
            orientation, org = "", rnd.choice(cd_like)
        droit = today - dt.timedelta(days=rnd.randrange(10))
        age = rnd.randrange(18, 26) if orientation == "ml" else rnd.randrange(26, 64)
        birth = dt.date(droit.year - age, rnd.randrange(1, 13), rnd.randrange(1, 29))
        first = rnd.choice(FIRST_F if sex == "F" else FIRST_M)
        last = rnd.choice(LAST)
        postcode, city = rnd.choice(TOWNS)
        email = ""
        if rnd.random() < 0.4:
            email = f"{first.lower()}.{last.lower().replace(' ', '-')}{k}@example.org"
            email = email.translate(str.maketrans("éèëêïîôç", "eeeeiioc"))
        yield {
            "external_id": f"CAF35-{k:07d}",
            "nir": nir_for(k, sex, birth),
            "last_name": last,
            "first_name": first,
            "birth_date": birth.isoformat(),
            "sex": sex,
            "address_line1": f"{rnd.randrange(1, 150)} {rnd.choice(STREETS)}",
            "address_line2": rnd.choice(LINE2),
            "postcode": postcode,
            "city": city,
            "phone": f"06 12 34 {rnd.randrange(100):02d} {rnd.randrange(100):02d}" if rnd.random() < 0.85 else "",
            "email": email,
            "droit_opened_on": droit.isoformat(),
            "orientation": orientation,
            "ft_registered": "true" if orientation == "ft" and rnd.random() < 0.8 else "false",
            "organisation": org,
            "droits_devoirs": "true" if rnd.random() < 0.97 else "false",
        }


def write_flux(path: Path, n: int, now: dt.datetime, seed: int = 1, start: int = 0) -> Path:
    return write_rows(path, rows(n, now, seed, start))


def write_rows(path: Path, records) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        out = csv.DictWriter(fh, fieldnames=COLUMNS)
        out.writeheader()
        out.writerows(records)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("-n", type=int, default=100_000)
    ap.add_argument("--now", default="2024-06-10T10:00:00+02:00")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    write_flux(args.out, args.n, dt.datetime.fromisoformat(args.now), args.seed)


if __name__ == "__main__":
    main()
