"""QA KPIs and the human-readable QA report: ``report.md`` and a self-contained ``report.html`` with plots.

The report: KPIs; defects over time; anomaly scores of the most anomalous services with their deployments;
the service graph with the root causes of open defects ringed; release-gate decisions; the review queue
(decisions whose latest status is ``needs_review``, ``governance.review_queue``); defects; time to resolve;
links to the artifacts. It is built once as sections (``report_sections``) that both formats render.

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

import base64
import html
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import polars as pl

from qa_assets.lib.artifacts._common import (
    OPEN_STATUSES,
    SEVERITIES,
    TS,
    feedback_events,
    iso,
    md_code,
    md_table,
    md_text,
    number,
    one_line,
    require_frame,
    top_causes,
)

DEFECT_COLUMNS = ("defect_id", "service", "defect_type", "severity", "status", "first_seen", "last_seen")
CAUSE_COLUMNS = ("defect_id", "rank", "service", "cause_kind", "change_id")
_CLASSIFICATION_FIELDS = ("defect_type", "severity")
_CAUSE_FIELDS = ("root_cause_service", "root_cause_change_id")
_TIME = "%Y-%m-%d %H:%M:%S"
SEVERITY_COLORS = {"S1": "#b2182b", "S2": "#ef8a62", "S3": "#fddbc7", "S4": "#999999"}
# Size of the markdown kept in the asset metadata, inline plots included (the event log stores it per run).
METADATA_BUDGET = 200_000


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


def plot_label(value: Any, limit: int = 40) -> str:
    """Telemetry text for a matplotlib label: one line, ``$`` escaped (a ``$…$`` pair would be parsed as
    mathtext, and a malformed one makes drawing fail)."""
    return one_line(value, limit).replace("$", r"\$")


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
    grid = pl.datetime_range(counts["bucket"].min(), counts["bucket"].max(), every, eager=True).alias("bucket")
    if grid.len() <= 400:  # quiet hours (days) show as gaps, not as if they did not exist
        counts = pl.DataFrame(grid).cast({"bucket": counts.schema["bucket"]}).join(
            counts, on="bucket", how="left").fill_null(0)
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
        axis.bar(positions, values, bottom=bottom, label=plot_label(severity),
                 color=SEVERITY_COLORS.get(severity, "#4d4d4d"))
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


# Traffic and CPU are context: they never open a defect by themselves (defects.grouping), and a traffic
# baseline flags every busy hour, so the score plot leaves them out.
CONTEXT_SIGNALS = ("requests", "cpu_utilization")
_BUCKETS = (("1m", 60), ("5m", 300), ("15m", 900), ("1h", 3600), ("6h", 21600), ("1d", 86400))


def _score_bucket(start: datetime, end: datetime, points: int = 360) -> str:
    """The finest bucket that keeps a line within about ``points`` points."""
    span = (end - start).total_seconds()
    return next((every for every, seconds in _BUCKETS if span / seconds <= points), "1d")


def anomaly_score_series(anomalies: pl.DataFrame, top_n: int = 6) -> tuple[pl.DataFrame, int, str]:
    """What the anomaly-score plot draws: (series, services scored, bucket).

    ``series`` has one row per plotted service and time bucket (``service, bucket, score, is_anomaly``: the
    highest score and whether any window was anomalous) for the ``top_n`` services with the most anomalous
    windows, then the highest peak. ``anomalies`` holds ``defects.anomalies`` rows or a per-window aggregate
    of them (service, window_start, score, is_anomaly); rows of ``CONTEXT_SIGNALS`` are left out when the
    frame has a ``signal`` column."""
    require_frame(anomalies, "anomalies", ("service", "window_start", "score"), "defects.anomalies")
    flagged = pl.col("is_anomaly").fill_null(False) if "is_anomaly" in anomalies.columns else pl.lit(False)
    if "signal" in anomalies.columns:
        anomalies = anomalies.filter(~pl.col("signal").is_in(list(CONTEXT_SIGNALS)).fill_null(False))
    data = anomalies.filter(pl.col("service").is_not_null() & pl.col("window_start").is_not_null()
                            & pl.col("score").is_not_null() & pl.col("score").is_finite()
                            ).select("service", "window_start", "score", is_anomaly=flagged)
    empty = pl.DataFrame(schema={"service": pl.String, "bucket": TS, "score": pl.Float64, "is_anomaly": pl.Boolean})
    if data.height == 0:
        return empty, 0, "1m"
    ranking = (data.group_by("service")
               .agg(pl.col("is_anomaly").sum().alias("flagged"), pl.col("score").max().alias("peak"))
               .sort(["flagged", "peak", "service"], descending=[True, True, False]))
    services = ranking["service"].head(top_n).to_list()
    every = _score_bucket(data["window_start"].min(), data["window_start"].max())
    series = (data.filter(pl.col("service").is_in(services))
              .group_by("service", pl.col("window_start").dt.truncate(every).cast(TS).alias("bucket"))
              .agg(pl.col("score").max().cast(pl.Float64), pl.col("is_anomaly").any())
              .sort("service", "bucket"))
    return series, ranking.height, every


def plot_anomaly_scores(anomalies: pl.DataFrame, deployments: pl.DataFrame | None, path: Path, *,
                        top_n: int = 6, max_markers: int = 16) -> Path | None:
    """Anomaly score over time of the ``top_n`` most anomalous services (``anomaly_score_series``), with
    their deployments as vertical lines labelled ``service@version`` (the latest ``max_markers``).

    Buckets holding an anomalous window get a dot. Scores above 50 are drawn on a symmetric-log axis so
    that one outage does not flatten everything else. None when no window was scored."""
    from matplotlib import dates as mdates
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    series, total, every = anomaly_score_series(anomalies, top_n)
    if series.height == 0:
        return None
    ranked = series.group_by("service").agg(pl.col("is_anomaly").sum(), pl.col("score").max()).sort(
        ["is_anomaly", "score", "service"], descending=[True, True, False])
    services = ranked["service"].to_list()
    start, end = series["bucket"].min(), series["bucket"].max() + timedelta(seconds=dict(_BUCKETS)[every])
    figure = Figure(figsize=(10, 4.2), dpi=100)
    FigureCanvasAgg(figure)
    axis = figure.add_subplot()
    colors = {s: f"C{i % 10}" for i, s in enumerate(services)}
    for service in services:
        rows = series.filter(pl.col("service") == service)
        axis.plot(rows["bucket"].to_list(), rows["score"].to_list(), color=colors[service], linewidth=1.1,
                  label=plot_label(service, 40))
        hot = rows.filter(pl.col("is_anomaly"))
        if hot.height:
            axis.scatter(hot["bucket"].to_list(), hot["score"].to_list(), color=colors[service], s=14, zorder=3)
    if series["score"].max() > 50:
        axis.set_yscale("symlog", linthresh=10)

    markers = 0
    if deployments is not None and deployments.height:
        shown = (deployments.filter(pl.col("timestamp").is_between(start, end) & pl.col("service").is_in(services))
                 .sort("timestamp"))
        for row in shown.tail(max_markers).to_dicts():
            axis.axvline(row["timestamp"], color=colors[row["service"]], linestyle="--", linewidth=0.9, alpha=0.8)
            axis.text(row["timestamp"], 0.98, f" {plot_label(row['service'], 30)}@{plot_label(row['version'], 24)}",
                      transform=axis.get_xaxis_transform(), rotation=90, va="top", ha="right", fontsize=7,
                      color=colors[row["service"]], bbox={"boxstyle": "round,pad=0.1", "facecolor": "white",
                                                          "edgecolor": "none", "alpha": 0.75})
            markers += 1
        hidden = shown.height - markers
    else:
        hidden = 0
    locator = mdates.AutoDateLocator()
    axis.xaxis.set_major_locator(locator)
    axis.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    axis.set_xlabel("time (UTC)")
    axis.set_ylabel("anomaly score (max over detectors)")
    axis.set_title(f"Anomaly scores: the {len(services)} most anomalous of {total} services "
                   f"(highest per {every})", fontsize=10)
    handles, _ = axis.get_legend_handles_labels()
    handles += [Line2D([], [], marker="o", linestyle="", color="0.3", markersize=4, label="anomalous window"),
                Line2D([], [], color="0.3", linestyle="--", linewidth=0.9, label="deployment")]
    if hidden:
        handles.append(Line2D([], [], linestyle="", label=f"({hidden} earlier deployments not drawn)"))
    axis.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, format="png")
    return path


def root_cause_services(defects: pl.DataFrame | None, root_causes: pl.DataFrame | None) -> dict[str, int]:
    """Service → number of open defects (open or regression) whose rank-1 cause it is."""
    if defects is None or root_causes is None or defects.height == 0 or root_causes.height == 0:
        return {}
    open_ids = defects.filter(pl.col("status").is_in(list(OPEN_STATUSES))).select("defect_id")
    blamed = (top_causes(root_causes).join(open_ids, on="defect_id", how="semi")
              .filter(pl.col("service").is_not_null()).group_by("service").len().sort(["len", "service"],
                                                                                      descending=[True, False]))
    return {r["service"]: int(r["len"]) for r in blamed.to_dicts()}


def plot_service_graph(nodes: pl.DataFrame | None, edges: pl.DataFrame | None, highlight: Iterable[str],
                       path: Path) -> Path | None:
    """The service graph (``signals.service_graph_nodes`` / ``_edges`` of one hour) with ``highlight``
    (the root-cause services of open defects) ringed in red."""
    from qa_assets.lib import graph as graph_lib

    if nodes is None or nodes.height == 0:
        return None
    edges = edges if edges is not None else pl.DataFrame(schema=graph_lib.EDGES)
    graph = graph_lib.graph_from_tables(nodes, edges)
    return graph_lib.render_png(graph, path, highlight=highlight, highlight_label="root cause of an open defect")


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


# ---------------------------------------------------------------------------------------- sections
# The report is built once as sections of blocks holding plain values; `_markdown` and `_html` render the
# same sections, each escaping every value for its own format. Nothing from telemetry is pre-formatted.


@dataclass(frozen=True)
class Text:
    """A paragraph: parts of plain text, each ``(text, style)`` with style None, ``strong`` or ``code``."""

    parts: tuple[tuple[str, str | None], ...]


@dataclass(frozen=True)
class Table:
    frame: pl.DataFrame
    max_rows: int = 100
    max_cell: int = 200


@dataclass(frozen=True)
class Plot:
    path: Path | None
    alt: str
    missing: str  # said instead when there is nothing to plot


@dataclass(frozen=True)
class Links:
    """Files the report links: ``(subject, kind, path)``; paths are shown relative to the report."""

    items: tuple[tuple[str, str, str], ...]
    more: int = 0


@dataclass(frozen=True)
class Details:
    """A collapsed block of JSON."""

    summary: str
    value: Any


Block = Text | Table | Plot | Links | Details


@dataclass(frozen=True)
class Section:
    anchor: str
    title: str
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class RenderedReport:
    markdown_path: Path
    html_path: Path
    plots: dict[str, Path]
    metadata_markdown: str  # the markdown for the Dagster UI: key plots inline while under the size budget


def _para(*parts: str | tuple[str, str | None]) -> Text:
    return Text(tuple((p, None) if isinstance(p, str) else p for p in parts))


def _table(frame: pl.DataFrame, max_rows: int = 100, max_cell: int = 200) -> Table:
    """A table of display strings (times as UTC text, numbers as they print)."""
    shown = frame.with_columns([pl.col(c).dt.strftime(_TIME) for c, t in frame.schema.items()
                                if isinstance(t, pl.Datetime)])
    return Table(shown, max_rows, max_cell)


def _kpi_section(k: dict[str, Any]) -> Section:
    rows = _kpi_rows(k)
    frame = pl.DataFrame(rows, schema=["KPI", "value", "n", "definition"], orient="row")
    return Section("kpis", "KPIs", (
        Table(frame, 20, 400),
        _para("Definitions in detail: ", ("qa_assets/lib/artifacts/report.py", "code"), "."),
    ))


def _gate_section(gate: pl.DataFrame | None) -> Section:
    if gate is None or gate.height == 0:
        return Section("release-readiness", "Release readiness", (_para("No deployed versions were assessed."),))
    counts = {d: gate.filter(pl.col("decision") == d).height for d in ("block", "warn", "pass")}
    blocks: list[Block] = [_para(f"{counts['block']} blocked, {counts['warn']} with warnings, "
                                f"{counts['pass']} passed.")]
    flagged = gate.filter(pl.col("decision") != "pass").sort(["decision", "service", "version"])
    if flagged.height:
        blocks.append(_table(flagged.select(
            "service", "version", "decision", pl.col("reasons").str.replace_all("\n", "; "), "deployed_at"), 100, 400))
    passed = gate.filter(pl.col("decision") == "pass").sort(["service", "version"])
    if passed.height:
        names = [f"{r['service']}@{r['version']}" for r in passed.head(40).to_dicts()]
        more = f" and {passed.height - 40} more" if passed.height > 40 else ""
        blocks.append(_para("Passed: ", ", ".join(names) + more + "."))
    return Section("release-readiness", "Release readiness", tuple(blocks))


def _review_section(decision_log: pl.DataFrame | None) -> Section:
    from qa_assets.lib.governance import review_queue

    title = "Review queue"
    if decision_log is None:
        return Section("review-queue", title, (_para("No decision log yet."),))
    queue = review_queue(decision_log)
    if queue.height == 0:
        return Section("review-queue", title, (_para("No decision is waiting for review."),))
    table = queue.select(  # oldest first: the longest waiting on top
        "decided_at", "stage", "decision", pl.concat_str("subject_type", pl.lit(":"), "subject_id").alias("subject"),
        "outcome", pl.col("confidence").round(3),
        pl.concat_str("model_name", pl.lit(" "), pl.col("model_version").fill_null(""), ignore_nulls=True)
        .str.strip_chars().alias("model"),
        pl.col("rationale").str.replace_all("\n", "; "), pl.col("decision_id").str.slice(0, 12).alias("decision_id"))
    return Section("review-queue", title, (
        _para((str(queue.height), "strong"),
              " decision(s) have the latest status needs_review (low confidence, S1, or a release block) and wait "
              "for a person: approve or override a release gate with ",
              ("qa-assets gate approve|override SERVICE VERSION --reason …", "code"),
              "; confirm, correct or reject a defect with ", ("qa-assets feedback DEFECT_ID …", "code"),
              " or a feedback file (", ("docs/feedback.md", "code"), ")."),
        _table(table, 100, 300),
    ))


def _defects_section(defects: pl.DataFrame | None, kb: pl.DataFrame | None) -> Section:
    if kb is not None and kb.height:
        order = pl.col("severity").replace_strict({s: i for i, s in enumerate(SEVERITIES)}, default=9,
                                                  return_dtype=pl.Int32)
        table = kb.sort([order, "first_seen"]).select(
            "defect_id", "service", "defect_type", "severity", "status", "first_seen", "cause_service",
            "cause_kind", "resolution", pl.col("artifacts").list.len().alias("artifacts"))
        return Section("defects", "Defects", (_table(table, 100, 200),))
    if defects is not None and defects.height:
        return Section("defects", "Defects", (_table(defects.select(
            "defect_id", "service", "defect_type", "severity", "status", "first_seen"), 100),))
    return Section("defects", "Defects", (_para("No defects."),))


def _artifacts_section(artifacts: pl.DataFrame | None, out: Path) -> Section:
    if artifacts is None or artifacts.height == 0:
        return Section("artifacts", "Artifacts", (_para("No artifacts were generated."),))
    by_kind = artifacts.group_by("kind").len().sort("kind")
    written = artifacts.filter(pl.col("path").is_not_null()).sort(["defect_id", "kind"])
    items = tuple((str(r["defect_id"]), str(r["kind"]), _rel(r["path"], out)) for r in written.head(200).to_dicts())
    return Section("artifacts", "Artifacts", (
        _para(", ".join(f"{r['kind']}: {r['len']}" for r in by_kind.to_dicts()) + "."),
        Links(items, max(0, written.height - 200)),
    ))


def _graph_section(frames: Mapping[str, pl.DataFrame | None], plots: Path) -> Section:
    blamed = root_cause_services(frames.get("defects"), frames.get("root_causes"))
    path = plot_service_graph(frames.get("graph_nodes"), frames.get("graph_edges"), blamed,
                              plots / "service_graph.png")
    blocks: list[Block] = [Plot(path, "Service graph with the root causes of open defects",
                                "No service graph yet.")]
    if blamed:
        blocks.append(_para("Ringed in red, the rank-1 root cause of open defects: ",
                            ", ".join(f"{s} ({n})" for s, n in blamed.items()) + "."))
    elif path is not None:
        blocks.append(_para("No open defect has a root cause."))
    return Section("service-graph", "Service graph", tuple(blocks))


def report_sections(kpis: dict[str, Any], frames: Mapping[str, pl.DataFrame | None], out: Path,
                    plots: Path) -> tuple[Text, list[Section]]:
    """The report's summary line and sections; draws the plots into ``plots``."""
    defects = frames.get("defects")
    k = kpis["defects"]
    summary = _para(
        f"Defects first seen {k.get('period_start') or 'n/a'} to {k.get('period_end') or 'n/a'} UTC: ",
        (str(k["total"]), "strong"),
        f" in total, {k['open']} open, {k['resolved']} resolved, {k['regression']} regressions; by severity "
        + ", ".join(f"{s} {n}" for s, n in k["by_severity"].items()) + ".")
    over_time = plot_defects_over_time(defects, plots / "defects_over_time.png") if defects is not None else None
    anomalies = frames.get("anomalies")
    scores = (plot_anomaly_scores(anomalies, frames.get("deployments"), plots / "anomaly_scores.png")
              if anomalies is not None else None)
    resolved = mttr_minutes(defects)["minutes"].to_list() if defects is not None else []
    mttr_plot = plot_mttr_distribution(resolved, plots / "mttr_distribution.png")
    sections = [
        _kpi_section(kpis),
        Section("defects-over-time", "Defects over time",
                (Plot(over_time, "Defects over time by severity", "No defects."),)),
        Section("anomaly-scores", "Anomaly scores and deployments",
                (Plot(scores, "Anomaly scores over time with deployment markers", "No scored windows."),)),
        _graph_section(frames, plots),
        _gate_section(frames.get("release_readiness")),
        _review_section(frames.get("decision_log")),
        _defects_section(defects, frames.get("knowledge_base")),
        Section("time-to-resolve", "Time to resolve",
                (Plot(mttr_plot, "Time to resolve", "No resolved defects yet."),)),
        _artifacts_section(frames.get("artifacts"), out),
        Section("kpi-json", "KPIs as JSON", (Details("KPIs as JSON", kpis),)),
    ]
    return summary, sections


# ---------------------------------------------------------------------------------------- markdown


def _md_text(block: Text) -> str:
    out = []
    for part, style in block.parts:
        if style == "code":
            out.append(md_code(part, 400))
        elif style == "strong":
            out.append(f"**{md_text(part)}**")
        else:
            out.append(md_text(part))
    return "".join(out)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _markdown(title: str, header: Text, sections: list[Section], out: Path, *,
              inline_budget: int | None = None) -> str:
    """The report as markdown. Plots are linked by relative path, or with ``inline_budget`` (characters)
    embedded as data URIs in order while the whole text stays within the budget (the Dagster UI cannot load
    a local path); a plot that does not fit is named instead."""
    lines = [f"# {md_text(title)}", "", _md_text(header), ""]
    pending: list[tuple[int, Plot]] = []
    for section in sections:
        if isinstance(section.blocks[0], Details):
            block = section.blocks[0]
            lines += [f"<details><summary>{md_text(block.summary)}</summary>", "", "```json",
                      json.dumps(block.value, indent=2, default=str).replace("```", "'''"), "```", "",
                      "</details>", ""]
            continue
        lines += [f"## {md_text(section.title)}", ""]
        for block in section.blocks:
            if isinstance(block, Text):
                lines.append(_md_text(block))
            elif isinstance(block, Table):
                lines.append(md_table(block.frame, block.max_rows, block.max_cell))
            elif isinstance(block, Plot):
                if block.path is None:
                    lines.append(md_text(block.missing))
                elif inline_budget is None:
                    lines.append(f"![{md_text(block.alt)}]({_rel(block.path, out)})")
                else:
                    pending.append((len(lines), block))
                    lines.append(f"*Plot {md_code(_rel(block.path, out))} (in the HTML report).*")
            elif isinstance(block, Links):
                lines += [f"- {md_code(subject)} {md_text(kind)}: {md_code(path, 400)}"
                          for subject, kind, path in block.items]
                if block.more:
                    lines.append(f"- … {block.more} more")
            lines.append("")
    if inline_budget is not None:
        size = sum(len(line) + 1 for line in lines)
        if size > inline_budget:  # long tables: keep whole lines up to the budget
            kept, size = [], 0
            for line in lines:
                if size + len(line) + 1 > inline_budget - 200:
                    break
                kept.append(line)
                size += len(line) + 1
            pending = [(i, block) for i, block in pending if i < len(kept)]
            lines = [*kept, "", "*… cut to fit the asset metadata: the whole report is report.html / report.md.*"]
        for index, block in pending:
            image = f"![{md_text(block.alt)}]({_data_uri(block.path)})"
            if size - len(lines[index]) + len(image) <= inline_budget:
                size += len(image) - len(lines[index])
                lines[index] = image
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- html

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2328;margin:0;background:#f6f8fa}
header,main,footer{max-width:1180px;margin:0 auto;padding:0 24px}
header{padding-top:20px}h1{font-size:26px;margin:8px 0}
h2{font-size:19px;margin:0 0 10px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
nav{max-width:1180px;margin:0 auto 12px;padding:0 24px}nav a{margin-right:14px;color:#0969da;text-decoration:none}
section{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:14px 18px;margin:0 0 16px;overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:12.5px;margin:6px 0}
th,td{border:1px solid #d0d7de;padding:4px 7px;text-align:left;vertical-align:top;overflow-wrap:break-word}
th{background:#f0f3f6}tbody tr:nth-child(even){background:#fafbfc}td.long{overflow-wrap:anywhere;min-width:8em}
#kpis td:nth-child(2){font-weight:600;white-space:nowrap}
figure{margin:6px 0}img{max-width:100%;height:auto;border:1px solid #eaeef2}figcaption{color:#57606a;font-size:12px}
code{background:#eff1f3;padding:1px 4px;border-radius:4px;font-size:12px}
pre{background:#f6f8fa;border:1px solid #d0d7de;padding:10px;overflow:auto;font-size:12px}
.note{color:#57606a;font-style:italic}ul{padding-left:20px}footer{color:#57606a;font-size:12px;padding-bottom:24px}
""".strip()


def _h(value: Any, limit: int | None = None) -> str:
    """Telemetry text as HTML text: one line (control characters dropped), every markup character escaped."""
    return html.escape(one_line(value, limit, strip=False), quote=True)


def _href(relative_path: str) -> str:
    """A link to a file beside the report: percent-encoded, so no scheme (``javascript:``) or quote survives."""
    return html.escape(quote(relative_path.replace(os.sep, "/"), safe="/._-~"), quote=True)


def _html_text(block: Text) -> str:
    out = []
    for part, style in block.parts:
        if style == "code":
            out.append(f"<code>{_h(part, 400)}</code>")
        elif style == "strong":
            out.append(f"<strong>{_h(part)}</strong>")
        else:
            out.append(_h(part))
    return "".join(out)


def _html_cell(value: Any, limit: int) -> str:
    if value is None:
        return "<td></td>"
    shown = _h(value, limit)
    # a long unbroken token (ids, URLs, service@version) may break anywhere rather than widen the table
    long = max((len(word) for word in str(value).split()), default=0) > 24
    return f'<td class="long">{shown}</td>' if long else f"<td>{shown}</td>"


def _html_table(block: Table) -> str:
    frame = block.frame
    head = "".join(f"<th>{_h(c)}</th>" for c in frame.columns)
    rows = []
    for row in frame.head(block.max_rows).iter_rows():
        rows.append("<tr>" + "".join(_html_cell(v, block.max_cell) for v in row) + "</tr>")
    more = (f'<p class="note">… {frame.height - block.max_rows} more rows</p>'
            if frame.height > block.max_rows else "")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>{more}"


def _html(title: str, header: Text, sections: list[Section], out: Path, generated: str) -> str:
    """The report as one self-contained HTML page: inline CSS, plots as data URIs, no script."""
    body = []
    for section in sections:
        parts = [f'<section id="{html.escape(section.anchor)}"><h2>{_h(section.title)}</h2>']
        for block in section.blocks:
            if isinstance(block, Text):
                parts.append(f"<p>{_html_text(block)}</p>")
            elif isinstance(block, Table):
                parts.append(_html_table(block))
            elif isinstance(block, Plot):
                if block.path is None:
                    parts.append(f'<p class="note">{_h(block.missing)}</p>')
                else:
                    parts.append(f'<figure><img src="{_data_uri(block.path)}" alt="{_h(block.alt)}">'
                                 f"<figcaption>{_h(block.alt)} ({_h(_rel(block.path, out))})</figcaption></figure>")
            elif isinstance(block, Links):
                items = "".join(
                    f'<li><code>{_h(subject)}</code> {_h(kind)}: <a href="{_href(path)}">{_h(path, 400)}</a></li>'
                    for subject, kind, path in block.items)
                more = f'<li class="note">… {block.more} more</li>' if block.more else ""
                parts.append(f"<ul>{items}{more}</ul>")
            elif isinstance(block, Details):
                value = html.escape(json.dumps(block.value, indent=2, default=str), quote=True)
                parts.append(f"<details><summary>{_h(block.summary)}</summary><pre>{value}</pre></details>")
        parts.append("</section>")
        body.append("".join(parts))
    nav = "".join(f'<a href="#{html.escape(s.anchor)}">{_h(s.title)}</a>' for s in sections)
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_h(title)}</title><style>{_CSS}</style></head><body>",
        f"<header><h1>{_h(title)}</h1><p>{_html_text(header)}</p></header>",
        f"<nav>{nav}</nav>",
        "<main>", *body, "</main>",
        f"<footer>Generated {_h(generated)} UTC by qa-assets.</footer>",
        "</body></html>", "",
    ])


# ---------------------------------------------------------------------------------------- files


def _write(path: Path, content: str) -> Path:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(content, encoding="utf-8")
    tmp.replace(path)
    return path


def render_report_files(kpis: dict[str, Any], frames: Mapping[str, pl.DataFrame | None], out_dir: Path | str, *,
                        generated_at: datetime | None = None, title: str = "QA report",
                        metadata_budget: int = METADATA_BUDGET) -> RenderedReport:
    """Write ``report.md``, ``report.html`` (self-contained: plots embedded) and ``plots/*.png`` into
    ``out_dir``, all from the same sections.

    ``frames`` may hold ``defects``, ``root_causes``, ``release_readiness``, ``knowledge_base``,
    ``artifacts``, ``anomalies`` (``defects.anomalies`` rows or their per-window maximum), ``deployments``,
    ``graph_nodes`` / ``graph_edges`` (one hour of the service graph) and ``decision_log``; sections for
    absent frames say so."""
    out = Path(out_dir)
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    generated = iso(generated_at or datetime.now(UTC).replace(tzinfo=None))
    header, sections = report_sections(kpis, frames, out, plots)
    lead = Text((("Generated " + generated + " UTC by qa-assets. ", None), *header.parts))
    markdown_path = _write(out / "report.md", _markdown(title, lead, sections, out))
    html_path = _write(out / "report.html", _html(title, header, sections, out, generated))
    drawn = {p.path.stem: p.path for s in sections for p in s.blocks if isinstance(p, Plot) and p.path is not None}
    return RenderedReport(markdown_path, html_path, drawn,
                          _markdown(title, lead, sections, out, inline_budget=metadata_budget))


def render_report(kpis: dict[str, Any], frames: Mapping[str, pl.DataFrame | None], out_dir: Path | str, *,
                  generated_at: datetime | None = None, title: str = "QA report") -> Path:
    """Write the report (``render_report_files``); returns the path of ``report.md``."""
    return render_report_files(kpis, frames, out_dir, generated_at=generated_at, title=title).markdown_path
