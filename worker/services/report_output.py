"""The report (:mod:`worker.services.report`) as JSON, as a self-contained HTML page with its monthly
charts (``templates/reports/indicators.html.j2``; the workspace's dashboard shows the same body), or as
an XLSX workbook with one sheet per table. Files are written whole and private (0600)."""
from __future__ import annotations

import json
from pathlib import Path

from worker.adapters import charts, files, workbook
from worker.domain.indicators import month_label
from worker.services.errors import ServiceError
from worker.services.report_model import Report, Table

NNBSP = "\u202f"  # French thousands separator and space before %
SHEETS = {"synthese": "Chiffres clés", "entrants_mois": "Entrants par mois",
          "entrants_organisation": "Entrants par organisation", "delais": "Délais", "mois": "Par mois",
          "rendez_vous": "Rendez-vous", "premier_rdv": "Premier rendez-vous", "procedure": "Procédure",
          "examens": "Examens", "sorties": "Dossiers clos", "motifs_legitimes": "Motifs légitimes",
          "orientation": "Orientation", "messages": "Messages", "echecs": "Échecs et NPAI",
          "messages_mois": "Messages par mois"}


def fmt(value, kind: str) -> str:
    """A value as a French reader expects it: ``1 234``, ``12,5 %``, ``10,5``; ``—`` when there is none."""
    if value is None:
        return "—"
    if kind == "pct":
        return f"{value * 100:.1f}".replace(".", ",") + f"{NNBSP}%"
    if kind == "days":
        return (f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}").replace(".", ",")
    if kind == "int" and isinstance(value, int):
        return f"{value:,}".replace(",", NNBSP)
    return str(value)


def _html_table(table: Table) -> dict:
    return {"key": table.key, "title": table.title, "note": table.note,
            "columns": [{"label": c.label, "numeric": c.kind != "text"} for c in table.columns],
            "rows": [[fmt(v, c.kind) for c, v in zip(table.columns, row)] for row in table.rows]}


def chart_list(report: Report) -> list[dict]:
    """The monthly charts: title, a text alternative, the SVG as a data: URI."""
    labels = [month_label(m, short=True) for m in report.months]
    period = f"de {month_label(report.months[0])} à {month_label(report.months[-1])}" if report.months else ""
    entrants, monthly, sent = report.table("entrants_mois"), report.table("mois"), report.table("messages_mois")
    n = len(report.months)
    paths = [c for c in entrants.columns if c.key.startswith("path_")]
    out = []

    def add(title: str, table: Table, svg: str, what: str) -> None:
        out.append({"title": title, "uri": charts.data_uri(svg),
                    "alt": f"{what}, {period}. Les valeurs sont dans le tableau « {table.title} »."})

    add("Entrants par mois", entrants,
        charts.bars(labels, [(c.label, entrants.column(c.key)[:n]) for c in paths], "Entrants par mois et par parcours",
                    "droits ouverts"), "Graphique en barres empilées : entrants par mois et par parcours")
    target = report.target_days
    add("Délai jusqu'à la première invitation", monthly,
        charts.lines(labels, [("médiane", monthly.column("invitation_median")),
                              ("90e centile", monthly.column("invitation_p90"))],
                     "Délai de l'ouverture du droit à la 1re invitation (droits reçus à temps)", "jours",
                     target=(target, f"objectif : {target} jours")),
        "Graphique en courbes : délai médian et 90e centile, en jours, de l'ouverture du droit à la première "
        "invitation, par mois d'ouverture")
    add("Invitations, accompagnement et présence", monthly,
        charts.lines(labels, [(c.label, monthly.column(c.key)) for c in monthly.columns
                              if c.key in ("invited_15", "attended_30", "attendance")],
                     "Invités à temps, accompagnés, présents au 1er rendez-vous", "part des droits", percent=True),
        "Graphique en courbes : part des droits invités dans les 15 jours, part avec un premier rendez-vous "
        "honoré dans les 30 jours, et taux de présence au premier rendez-vous, par mois d'ouverture")
    add("Messages envoyés", sent,
        charts.bars(labels, [(c.label, sent.column(c.key)) for c in sent.columns if c.key not in ("month", "total")],
                    "Messages envoyés par mois et par canal", "messages"),
        "Graphique en barres empilées : messages envoyés par mois, par canal (courrier, SMS, e-mail)")
    return out


def page_context(report: Report, with_charts: bool = True) -> dict:
    """What ``templates/reports/_indicators_body.html.j2`` shows (the HTML file and the workspace)."""
    return {"report": report, "tables": [_html_table(t) for t in report.tables],
            "charts": chart_list(report) if with_charts else [],
            "period": f"du {report.start:%d/%m/%Y} au {report.end:%d/%m/%Y}",
            "generated": f"{report.generated_at:%d/%m/%Y à %H:%M}"}


def to_text(report: Report) -> str:
    """The report for a terminal: each table, one line per row (``label : column value · …``)."""
    lines = [f"Tableau de bord Relance — {report.organisation_label}, du {report.start:%d/%m/%Y} au "
             f"{report.end:%d/%m/%Y} (définitions : docs/indicators.md)"]
    for table in report.tables:
        lines += ["", table.title]
        for row in table.rows:
            cells = " · ".join(f"{c.label} {fmt(v, c.kind)}" for c, v in zip(table.columns[1:], row[1:])
                               if v is not None)
            lines.append(f"  {row[0]} : {cells}")
    lines += ["", *report.notes]
    return "\n".join(lines)


def to_json(report: Report) -> str:
    return json.dumps(report.as_json(), ensure_ascii=False, indent=2)


def to_html(app, report: Report) -> str:
    return app.renderer.render_report("indicators", page_context(report))


def to_xlsx(report: Report) -> bytes:
    about = [["Rapport", "Tableau de bord Relance : indicateurs calculés à partir de ce qui s'est passé"],
             ["Période", f"du {report.start:%d/%m/%Y} au {report.end:%d/%m/%Y}"],
             ["Organisation", report.organisation_label],
             ["Produit le", f"{report.generated_at:%d/%m/%Y à %H:%M}"],
             *[["Note", note] for note in report.notes],
             ["Définitions", "docs/indicators.md du projet Relance"], [None, None]]
    about += [[SHEETS.get(t.key, t.title), t.title + (f" — {t.note}" if t.note else "")] for t in report.tables]
    sheets = [workbook.Sheet("À propos", ["Élément", "Valeur"], about, ("text", "text"), (28, 120))]
    for t in report.tables:
        widths = [max(40 if c.kind == "text" and i == 0 else 12, min(len(c.label) + 2, 30))
                  for i, c in enumerate(t.columns)]
        sheets.append(workbook.Sheet(SHEETS.get(t.key, t.title), [c.label for c in t.columns], t.rows,
                                     [c.kind for c in t.columns], widths))
    return workbook.xlsx_bytes(sheets)


def write(app, report: Report, path: Path, kind: str) -> Path:
    """Write the report to ``path`` (``html`` or ``xlsx``), whole, mode 0600."""
    data = to_html(app, report).encode("utf-8") if kind == "html" else to_xlsx(report)
    path = Path(path)
    if not path.parent.is_dir():
        raise ServiceError(f"dossier introuvable : {path.parent}")
    if path.is_dir():
        raise ServiceError(f"{path} est un dossier : donner le nom du fichier à écrire")
    files.replace_file(path, data, files.PRIVATE_MODE)
    return path

