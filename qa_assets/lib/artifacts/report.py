"""QA KPIs and the human-readable QA report (markdown with PNG plots).

KPI definitions (what the data allows; each KPI carries its ``n`` and is None when n is 0):

- **MTTD** (mean time to detect, minutes): for each production defect (every type but ``flaky_test``) whose
  rank-1 root cause names a deployment that happened no later than the defect's ``first_seen``:
  ``first_seen − deployment time``. The blamed change is the fault's onset; telemetry has no other record of
  when a fault began (a defect's first anomalous window *is* its ``first_seen``). Defects without a blamed
  change have no known onset and are left out (``excluded``).
- **MTTR** (mean time to resolve, minutes): for each resolved defect, ``last_seen − first_seen``: from the
  first anomalous window to the last one, after which the symptoms stopped.
- **Defect leakage**: among production defects whose rank-1 cause names a deployed version, the share whose
  version was not flagged by CI: no test of that service and version failed in its latest CI run (CI passed,
  or the version had no CI results, e.g. a config change). ``caught_by_ci`` counts defects whose version had
  a failing test and was deployed anyway.
- **Triage accuracy**: among defects with human feedback on their classification (an approval, a rejection,
  or a correction of ``defect_type`` or ``severity``), the share with neither a correction of those nor a
  rejection (a rejected defect was a false positive).
- **Root-cause accuracy**: among defects approved or with a root-cause correction
  (``root_cause_service`` / ``root_cause_change_id``), the share whose root cause was not corrected.
- **Regression-test coverage**: defects with a generated regression test / all defects.

Means, medians and 90th percentiles are given for the two durations.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from qa_assets.lib.artifacts._common import (
    SEVERITIES,
    feedback_events,
    iso,
    md_code,
    md_table,
    md_text,
    number,
    require_frame,
    top_causes,
)

DEFECT_COLUMNS = ("defect_id", "service", "defect_type", "severity", "status", "first_seen", "last_seen")
CAUSE_COLUMNS = ("defect_id", "rank", "service", "cause_kind", "change_id")
_CLASSIFICATION_FIELDS = ("defect_type", "severity")
_CAUSE_FIELDS = ("root_cause_service", "root_cause_change_id")
_TIME = "%Y-%m-%d %H:%M:%S"
SEVERITY_COLORS = {"S1": "#b2182b", "S2": "#ef8a62", "S3": "#fddbc7", "S4": "#999999"}


def _durations(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"mean": None, "median": None, "p90": None, "n": 0}
    series = pl.Series(values, dtype=pl.Float64)
    return {"mean": number(series.mean(), 2), "median": number(series.median(), 2),
            "p90": number(series.quantile(0.9, interpolation="linear"), 2), "n": len(values)}


def mttr_minutes(defects: pl.DataFrame) -> pl.DataFrame:
    """Per resolved defect: defect_id, severity, resolved_at (its last_seen) and minutes since first_seen."""
    return (
        defects.filter((pl.col("status") == "resolved") & pl.col("first_seen").is_not_null()
                       & pl.col("last_seen").is_not_null())
        .with_columns(resolved_at=pl.col("last_seen"))
        .select("defect_id", "severity", "resolved_at",
                minutes=(pl.col("resolved_at") - pl.col("first_seen")).dt.total_microseconds() / 60e6)
        .filter(pl.col("minutes") >= 0)
    )


def _ci_by_version(test_cases: pl.DataFrame | None) -> dict[tuple[str, str], str]:
    """(service, version) → failed | passed, from the latest run of each test."""
    if test_cases is None or test_cases.height == 0:
        return {}
    rows = test_cases.filter(pl.col("service").is_not_null() & pl.col("version").is_not_null()
                             & pl.col("status").is_in(["passed", "failed", "error"]))
    order = ["timestamp"] + [c for c in ("source_file", "source_line") if c in rows.columns]
    latest = (rows.sort(order, nulls_last=False)
              .group_by(["service", "version", "suite", "classname", "name"]).agg(pl.col("status").last())
              .group_by(["service", "version"])
              .agg(failed=pl.col("status").is_in(["failed", "error"]).any()))
    return {(r["service"], r["version"]): ("failed" if r["failed"] else "passed") for r in latest.to_dicts()}


def kpis(
    defects: pl.DataFrame,
    root_causes: pl.DataFrame,
    deployments: pl.DataFrame,
    test_cases: pl.DataFrame,
    feedback: pl.DataFrame | None,
    *,
    artifacts: pl.DataFrame | None = None,
) -> dict[str, Any]:
    """The QA KPIs (definitions in the module docstring) as a JSON-ready dict.

    ``artifacts`` is the artifact index (defect_id, kind, path): without it regression-test coverage is None."""
    defects = require_frame(defects, "defects", DEFECT_COLUMNS, "defects.defects")
    root_causes = require_frame(root_causes, "root_causes", CAUSE_COLUMNS, "rca.root_causes")
    deployments = require_frame(deployments, "deployments", ("event_id", "timestamp", "service", "version"),
                                "raw.deployments")
    if test_cases is not None:
        require_frame(test_cases, "test_cases", ("timestamp", "suite", "classname", "name", "status", "service",
                                                 "version"), "raw.test_cases")
    events = feedback_events(feedback)
    production = defects.filter(pl.col("defect_type").fill_null("") != "flaky_test")
    blamed = (
        production.select("defect_id", "first_seen")
        .join(top_causes(root_causes).select("defect_id", "change_id"), on="defect_id", how="inner")
        .filter(pl.col("change_id").is_not_null())
        .join(deployments.select(pl.col("event_id").alias("change_id"), pl.col("timestamp").alias("changed_at"),
                                 "service", "version").unique("change_id"), on="change_id", how="inner")
    )

    onset = blamed.filter(pl.col("changed_at") <= pl.col("first_seen"))
    mttd = _durations(((onset["first_seen"] - onset["changed_at"]).dt.total_microseconds() / 60e6).to_list())
    mttd["excluded"] = production.height - mttd["n"]

    mttr = _durations(mttr_minutes(defects)["minutes"].to_list())
    mttr["unresolved"] = defects.filter(pl.col("status") != "resolved").height

    ci = _ci_by_version(test_cases)
    statuses = [ci.get((r["service"], r["version"]), "none") for r in blamed.filter(
        pl.col("version").is_not_null()).to_dicts()]
    leaked = sum(1 for s in statuses if s in ("passed", "none"))
    leakage = {
        "value": number(leaked / len(statuses), 4) if statuses else None,
        "leaked": leaked,
        "passed_ci": sum(1 for s in statuses if s == "passed"),
        "no_ci": sum(1 for s in statuses if s == "none"),
        "caught_by_ci": sum(1 for s in statuses if s == "failed"),
        "n": len(statuses),
    }

    triage = _review_accuracy(events, _CLASSIFICATION_FIELDS, wrong_actions=("correct", "reject"),
                              verdicts=("approve", "reject"))
    rca = _review_accuracy(events, _CAUSE_FIELDS, wrong_actions=("correct",), verdicts=("approve",))

    coverage: dict[str, Any] = {"value": None, "covered": None, "n": defects.height}
    if artifacts is not None:
        require_frame(artifacts, "artifacts", ("defect_id", "kind"), "the artifact index")
        written = pl.col("path").is_not_null() if "path" in artifacts.columns else pl.lit(True)
        tested = set(artifacts.filter((pl.col("kind") == "regression_test") & written)["defect_id"].to_list())
        covered = sum(1 for d in defects["defect_id"].to_list() if d in tested)
        coverage = {"value": number(covered / defects.height, 4) if defects.height else None,
                    "covered": covered, "n": defects.height}

    return {
        "defects": {
            "total": defects.height,
            "open": defects.filter(pl.col("status") == "open").height,
            "resolved": defects.filter(pl.col("status") == "resolved").height,
            "regression": defects.filter(pl.col("status") == "regression").height,
            "by_severity": {s: defects.filter(pl.col("severity") == s).height for s in SEVERITIES},
            "by_type": dict(sorted(
                (str(r["defect_type"]), int(r["len"])) for r in defects.group_by("defect_type").len().to_dicts())),
            "period_start": iso(defects["first_seen"].min()) if defects.height else None,
            "period_end": iso(defects["last_seen"].max()) if defects.height else None,
        },
        "mttd_minutes": mttd,
        "mttr_minutes": mttr,
        "defect_leakage": leakage,
        "triage_accuracy": triage,
        "root_cause_accuracy": rca,
        "regression_test_coverage": coverage,
    }


def _review_accuracy(events: pl.DataFrame, fields: tuple[str, ...], *, wrong_actions: tuple[str, ...],
                     verdicts: tuple[str, ...]) -> dict[str, Any]:
    """Share of reviewed defects whose automated result was right. Reviewed: a correction of one of
    ``fields`` or a whole-defect verdict in ``verdicts``; wrong: any of those rows in ``wrong_actions``."""
    relevant = events.filter(
        (pl.col("field").is_in(list(fields)) & (pl.col("action") == "correct"))
        | ((pl.col("field") == "defect") & pl.col("action").is_in(list(verdicts)))
    )
    if relevant.height == 0:
        return {"value": None, "n": 0, "corrected": 0}
    per_defect = relevant.group_by("defect_id").agg(
        wrong=pl.col("action").is_in(list(wrong_actions)).any()
    )
    reviewed = per_defect.height
    wrong = int(per_defect["wrong"].sum())
    return {"value": number((reviewed - wrong) / reviewed, 4), "n": reviewed, "corrected": wrong}


# ---------------------------------------------------------------------------------------- plots


def _time_bucket(start: datetime, end: datetime) -> str:
    return "1h" if (end - start).total_seconds() <= 3 * 86400 else "1d"


def plot_defects_over_time(defects: pl.DataFrame, path: Path) -> Path | None:
    """Stacked bars: defects by first-seen hour (or day, over more than three days) and severity."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    data = defects.filter(pl.col("first_seen").is_not_null())
    if data.height == 0:
        return None
    every = _time_bucket(data["first_seen"].min(), data["first_seen"].max())
    counts = (
        data.with_columns(bucket=pl.col("first_seen").dt.truncate(every),
                          severity=pl.col("severity").fill_null("?"))
        .group_by(["bucket", "severity"]).len()
        .pivot(on="severity", index="bucket", values="len").fill_null(0).sort("bucket")
    )
    figure = Figure(figsize=(9, 3.6), dpi=100)
    FigureCanvasAgg(figure)
    axis = figure.add_subplot()
    labels = [b.strftime("%m-%d %H:%M" if every == "1h" else "%Y-%m-%d") for b in counts["bucket"]]
    positions = list(range(len(labels)))
    bottom = [0] * len(labels)
    severities = [s for s in SEVERITIES if s in counts.columns] + sorted(
        c for c in counts.columns if c not in SEVERITIES and c != "bucket")
    for severity in severities:
        values = counts[severity].to_list()
        axis.bar(positions, values, bottom=bottom, label=severity, color=SEVERITY_COLORS.get(severity, "#4d4d4d"))
        bottom = [a + b for a, b in zip(bottom, values, strict=True)]
    step = max(1, len(labels) // 12)
    axis.set_xticks(positions[::step], labels[::step], rotation=30, ha="right", fontsize=8)
    axis.yaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_ylabel("defects (by first seen)")
    axis.set_title(f"Defects over time by severity (per {'hour' if every == '1h' else 'day'}, UTC)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, format="png")
    return path


def plot_mttr_distribution(minutes: list[float], path: Path) -> Path | None:
    """Histogram of time to resolve (minutes) over resolved defects."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not minutes:
        return None
    figure = Figure(figsize=(6, 3.6), dpi=100)
    FigureCanvasAgg(figure)
    axis = figure.add_subplot()
    axis.hist(minutes, bins=min(20, max(3, len(minutes))), color="#4393c3", edgecolor="white")
    median = sorted(minutes)[len(minutes) // 2]
    axis.axvline(median, color="#b2182b", linestyle="--", label=f"median {median:.0f} min")
    axis.set_xlabel("minutes from first seen to resolved")
    axis.set_ylabel("defects")
    axis.set_title(f"Time to resolve ({len(minutes)} resolved defects)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, format="png")
    return path


# ---------------------------------------------------------------------------------------- report


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.1%}" if unit == "%" else f"{value:,.1f}{unit}"
    return f"{value}{unit}"


def _kpi_rows(k: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    mttd, mttr = k["mttd_minutes"], k["mttr_minutes"]
    leak, triage, rca, cover = (k["defect_leakage"], k["triage_accuracy"], k["root_cause_accuracy"],
                                k["regression_test_coverage"])
    return [
        ("MTTD", f"{_fmt(mttd['mean'], ' min')} (median {_fmt(mttd['median'], ' min')}, p90 "
                 f"{_fmt(mttd['p90'], ' min')})", str(mttd["n"]),
         "blamed deployment → first seen, production defects with a blamed change"),
        ("MTTR", f"{_fmt(mttr['mean'], ' min')} (median {_fmt(mttr['median'], ' min')}, p90 "
                 f"{_fmt(mttr['p90'], ' min')})", str(mttr["n"]),
         "first seen → last seen, resolved defects"),
        ("Defect leakage", _fmt(leak["value"], "%"), str(leak["n"]),
         f"blamed version not flagged by CI ({leak['passed_ci']} passed CI, {leak['no_ci']} without CI; "
         f"{leak['caught_by_ci']} failed CI and shipped)"),
        ("Triage accuracy", _fmt(triage["value"], "%"), str(triage["n"]),
         f"reviewed classifications not corrected ({triage['corrected']} corrected or rejected)"),
        ("Root-cause accuracy", _fmt(rca["value"], "%"), str(rca["n"]),
         f"reviewed root causes not corrected ({rca['corrected']} corrected)"),
        ("Regression-test coverage", _fmt(cover["value"], "%"), str(cover["n"]),
         f"defects with a generated regression test ({cover['covered']} covered)"),
    ]


def _rel(path: Any, base: Path) -> str:
    try:
        return os.path.relpath(str(path), base)
    except ValueError:  # another drive on Windows
        return str(path)


def render_report(kpis: dict[str, Any], frames: Mapping[str, pl.DataFrame | None], out_dir: Path | str, *,
                  generated_at: datetime | None = None, title: str = "QA report") -> Path:
    """Write ``report.md`` and its plots (``plots/*.png``) into ``out_dir``; returns the report's path.

    ``frames`` may hold ``defects``, ``release_readiness``, ``knowledge_base`` and ``artifacts``; sections
    for absent frames say so."""
    out = Path(out_dir)
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    generated_at = generated_at or datetime.now(UTC).replace(tzinfo=None)
    defects = frames.get("defects")
    k = kpis["defects"]
    lines = [
        f"# {md_text(title)}",
        "",
        f"Generated {iso(generated_at)} UTC by qa-assets. Defects first seen {k.get('period_start') or 'n/a'} to "
        f"{k.get('period_end') or 'n/a'} UTC: **{k['total']}** in total, {k['open']} open, "
        f"{k['resolved']} resolved, {k['regression']} regressions; by severity "
        + ", ".join(f"{s} {n}" for s, n in k["by_severity"].items()) + ".",
        "",
        "## KPIs",
        "",
        "| KPI | value | n | definition |",
        "| --- | --- | --- | --- |",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in _kpi_rows(kpis)),
        "",
        "Definitions in detail: `qa_assets/lib/artifacts/report.py`.",
        "",
    ]
    over_time = plot_defects_over_time(defects, plots / "defects_over_time.png") if defects is not None else None
    lines += ["## Defects over time", ""]
    lines += [f"![Defects over time by severity]({_rel(over_time, out)})" if over_time else "No defects.", ""]

    gate = frames.get("release_readiness")
    lines += ["## Release readiness", ""]
    if gate is None or gate.height == 0:
        lines.append("No deployed versions were assessed.")
    else:
        counts = {d: gate.filter(pl.col("decision") == d).height for d in ("block", "warn", "pass")}
        lines.append(f"{counts['block']} blocked, {counts['warn']} with warnings, {counts['pass']} passed.")
        flagged = gate.filter(pl.col("decision") != "pass").sort(["decision", "service", "version"])
        if flagged.height:
            lines += ["", md_table(flagged.select(
                "service", "version", "decision",
                pl.col("reasons").str.replace_all("\n", "; "), pl.col("deployed_at").dt.strftime(_TIME)),
                100, 400)]
    lines.append("")

    lines += ["## Defects", ""]
    kb = frames.get("knowledge_base")
    if kb is not None and kb.height:
        order = pl.col("severity").replace_strict({s: i for i, s in enumerate(SEVERITIES)}, default=9,
                                                  return_dtype=pl.Int32)
        table = kb.sort([order, "first_seen"]).select(
            "defect_id", "service", "defect_type", "severity", "status",
            pl.col("first_seen").dt.strftime(_TIME), "cause_service", "cause_kind", "resolution",
            pl.col("artifacts").list.len().alias("artifacts"))
        lines.append(md_table(table, 100, 200))
    elif defects is not None and defects.height:
        lines.append(md_table(defects.select(
            "defect_id", "service", "defect_type", "severity", "status",
            pl.col("first_seen").dt.strftime(_TIME)), 100))
    else:
        lines.append("No defects.")
    lines.append("")

    resolved = mttr_minutes(defects)["minutes"].to_list() if defects is not None else []
    mttr_plot = plot_mttr_distribution(resolved, plots / "mttr_distribution.png")
    lines += ["## Time to resolve", ""]
    lines += [f"![Time to resolve]({_rel(mttr_plot, out)})" if mttr_plot else "No resolved defects yet.", ""]

    artifacts = frames.get("artifacts")
    lines += ["## Artifacts", ""]
    if artifacts is None or artifacts.height == 0:
        lines.append("No artifacts were generated.")
    else:
        by_kind = artifacts.group_by("kind").len().sort("kind")
        lines.append(", ".join(f"{md_text(r['kind'])}: {r['len']}" for r in by_kind.to_dicts()) + ".")
        lines += [""] + [f"- {md_code(r['defect_id'])} {md_text(r['kind'])}: {md_code(_rel(r['path'], out), 400)}"
                         for r in artifacts.sort(["defect_id", "kind"]).head(200).to_dicts()]
    lines += ["", "<details><summary>KPIs as JSON</summary>", "", "```json",
              json.dumps(kpis, indent=2, default=str).replace("```", "'''"), "```", "", "</details>", ""]
    path = out / "report.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    tmp.replace(path)
    return path
