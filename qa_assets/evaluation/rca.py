"""`qa-assets evaluate rca`: root-cause ranking measured on simulated incidents.

Each run is a landing directory with its ground-truth file (``qa_assets.simulate``). The telemetry goes
through the project's own stages (ingest, graph, windows, anomalies, defects: ``evaluation.defects``'
``run_pipeline``, hour by hour as the assets run) and ``rank_root_causes``. Defects are matched to faults
as the defects evaluation does (``match_defects``: a defect on the root, on a service where the simulator
measured a symptom, or upstream of the root, overlapping the fault). A fault's ranking is that of its
first defect: the earliest that opened during the fault (a defect that opened earlier belongs to what
was going on then), and it is judged against the fault's root service and triggering change:

- root service top-1 / top-3 accuracy and Avg@5 (the mean of top-1..top-5 accuracy, as BARO reports);
- change top-1 / top-3 (faults a change triggered): the blamed change is the true trigger;
- precision of change blame: of all rank-1 candidates that name a change (incl. defects no fault
  explains), how often it is the true trigger; recall: of triggered faults, how often it is named; and
  how many faults no change caused (an outage, a crash loop without a deploy) blame a change anyway;
- cause-kind accuracy of the rank-1 candidate when its service is right;
- calibration of the confidence (Brier score, expected calibration error), with the label-free mapping
  and with ``calibrate`` fitted on the other half of the runs (two folds by run);
- baselines in the same run: the most recent deployment before the onset (what "suspect commit"
  features do); the naive "service whose own errors or latency rose most, told the fault time" and a
  BARO-style multi-metric change point with robust scores (``rca_baselines``), overall and per fault
  kind; and rankings by one feature alone (anomaly magnitude, onset order, random walk).

Published anchors, for orientation (other systems, other data): Nezha 0.87 / 0.98 top-1 / top-3 on
Train-Ticket; BARO about 0.8 Avg@5.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from qa_assets.evaluation import rca_baselines
from qa_assets.lib import rca

PUBLISHED = {"Nezha (Train-Ticket)": {"top1": 0.87, "top3": 0.98}, "BARO": {"avg5": 0.8}}
MATCH_BEFORE = timedelta(minutes=2)  # a defect may open a little before the fault's nominal start
EVAL_CANDIDATES = 50  # rank deep so single-feature baselines can be read from the same candidates


@dataclass
class RunInputs:
    """What ``rank_root_causes`` reads for one landing directory, and where the defects came from."""

    defects: pl.DataFrame
    windows: pl.DataFrame
    anomalies: pl.DataFrame
    graph: Any
    deployments: pl.DataFrame
    log_events: pl.DataFrame | None
    defects_source: str  # pipeline | ground-truth
    frames: dict[str, pl.DataFrame] | None = None  # the raw tables (load_landing_frames), for later stages
    request_calls: pl.DataFrame | None = None  # graph.request_calls: which calls the failed requests made


InputBuilder = Callable[[Path, dict[str, Any]], RunInputs]


# ----------------------------------------------------------------------------- ground truth


def _ts(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).replace(tzinfo=None)


def load_truth(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(f"cannot read ground truth {path}: {exc}") from exc


def production_faults(truth: dict[str, Any]) -> list[dict[str, Any]]:
    """Faults that showed in production telemetry (flaky tests show only in CI)."""
    return [f for f in truth.get("faults", []) if (f.get("params") or {}).get("type") != "flaky"]


def defects_from_truth(truth: dict[str, Any]) -> pl.DataFrame:
    """Defects straight from the ground truth's fault windows: one per affected service, one incident per
    fault. For measuring the ranking alone, apart from detection."""
    rows = []
    for fault in production_faults(truth):
        for service in fault.get("affected_services") or [fault["root_service"]]:
            rows.append({
                "defect_id": f"{fault['fault_id']}:{service}", "fingerprint": f"{fault['fault_id']}:{service}",
                "service": service, "defect_type": fault.get("defect_type"), "first_seen": _ts(fault["start"]),
                "last_seen": _ts(fault["end"]), "incident_id": fault["fault_id"], "title": fault.get("kind"),
            })
    return pl.DataFrame(rows, schema_overrides={"first_seen": pl.Datetime("us"), "last_seen": pl.Datetime("us")})


# ----------------------------------------------------------------------------- the pipeline


def pipeline_inputs(landing: Path, truth: dict[str, Any], *, defects_source: str = "pipeline") -> RunInputs:
    """Run the project's stages over one landing directory in memory, hour by hour as the assets do
    (``evaluation.defects.run_pipeline``: templates, windows, graph, anomalies, defects)."""
    from qa_assets.evaluation.defects import run_pipeline
    from qa_assets.lib import graph as graph_lib
    from qa_assets.lib.ingest.landing import load_landing_frames

    frames = load_landing_frames(landing)
    run = run_pipeline(frames)
    graph = graph_lib.graph_from_tables(run.graph_nodes, run.graph_edges)
    if defects_source == "ground-truth":
        defects, source = defects_from_truth(truth), "ground-truth"
    else:
        defects, source = run.latest_defects().drop("_partition", strict=False), "pipeline"
    return RunInputs(defects, run.windows, run.anomalies, graph, frames["deployments"], run.log_events, source,
                     frames, run.request_calls)


# ------------------------------------------------------------------------------- judging


@dataclass
class Judged:
    """One ranked defect matched (or not) to a fault."""

    run: str
    fault_id: str | None
    fault_kind: str | None
    production: bool  # the fault showed in production telemetry (not a CI-only flaky test)
    decoy_kind: str | None  # an unmatched defect sitting on a decoy (traffic surge, blip, harmless deploy)
    primary: bool  # the fault's first defect: the ranking an on-call engineer sees first
    root_service: str | None
    change_id: str | None
    cause_kind: str | None
    ranked_services: list[str]
    ranked_changes: list[str | None]
    ranked_kinds: list[str]
    ranked_scores: list[float]
    ranked_confidence: list[float]
    features: list[dict[str, float]]
    recent_change: str | None  # the "most recent deployment" baseline's suspect
    naive_services: list[str] = field(default_factory=list)  # baselines (rca_baselines), primary defects only
    baro_services: list[str] = field(default_factory=list)


def _match(defects: pl.DataFrame, truth: dict[str, Any]) -> dict[str, tuple[dict[str, Any] | None, dict | None]]:
    """Defect id -> (the fault it belongs to, the decoy it sits on), with the defects evaluation's rule
    (a defect on the root, a measured symptom or an upstream service overlapping the fault)."""
    from qa_assets.evaluation.defects import match_defects

    faults = {f["fault_id"]: f for f in truth.get("faults", [])}
    decoys = {d["decoy_id"]: d for d in truth.get("decoys", [])}
    matched = match_defects(defects, truth) if defects.height else pl.DataFrame(
        schema={"defect_id": pl.String, "fault_id": pl.String, "decoy_id": pl.String})
    return {
        str(r["defect_id"]): (faults.get(r["fault_id"]) if r["fault_id"] else None,
                              decoys.get(r["decoy_id"]) if r["decoy_id"] else None)
        for r in matched.iter_rows(named=True)
    }


def judge_run(name: str, inputs: RunInputs, truth: dict[str, Any], *, max_candidates: int = EVAL_CANDIDATES,
              lookback: timedelta = timedelta(minutes=60)) -> tuple[list[Judged], pl.DataFrame, int]:
    faults = production_faults(truth)
    production = {f["fault_id"] for f in faults}
    ranked = rca.rank_root_causes(
        inputs.defects, windows=inputs.windows, anomalies=inputs.anomalies, graph=inputs.graph,
        deployments=inputs.deployments, log_events=inputs.log_events, max_candidates=max_candidates,
        lookback=lookback, request_calls=inputs.request_calls,
    )
    matches = _match(inputs.defects, truth)
    # A fault's first defect: the earliest that opened during the fault (from MATCH_BEFORE before its
    # start); a defect that opened earlier belongs to what was going on then. Else the earliest matched.
    first_defect: dict[str, tuple[bool, datetime, str]] = {}
    for d in inputs.defects.iter_rows(named=True):
        fault = matches.get(str(d["defect_id"]), (None, None))[0]
        if fault is None:
            continue
        opened_during = _ts(fault["start"]) - MATCH_BEFORE <= d["first_seen"] <= _ts(fault["end"])
        key = (not opened_during, d["first_seen"], str(d["defect_id"]))
        if fault["fault_id"] not in first_defect or key < first_defect[fault["fault_id"]]:
            first_defect[fault["fault_id"]] = key
    deployments = inputs.deployments.sort("timestamp")
    judged = []
    by_defect = {k[0]: g.sort("rank") for k, g in ranked.group_by("defect_id")} if ranked.height else {}
    for d in inputs.defects.iter_rows(named=True):
        defect_id = str(d["defect_id"])
        fault, decoy = matches.get(defect_id, (None, None))
        rows = by_defect.get(defect_id)
        if rows is None:
            rows = rca.empty_root_causes()
        recent = deployments.filter(
            (pl.col("timestamp") <= d["first_seen"]) & (pl.col("timestamp") >= d["first_seen"] - lookback)
        )
        primary = bool(fault and first_defect.get(fault["fault_id"], (None, None, None))[2] == defect_id)
        baselines = primary and fault["fault_id"] in production
        judged.append(Judged(
            run=name,
            fault_id=fault["fault_id"] if fault else None,
            fault_kind=fault["kind"] if fault else None,
            production=bool(fault and fault["fault_id"] in production),
            decoy_kind=decoy.get("kind") if decoy else None,
            primary=primary,
            root_service=fault["root_service"] if fault else None,
            change_id=fault.get("change_id") if fault else None,
            cause_kind=fault.get("cause_kind") if fault else None,
            ranked_services=rows["service"].to_list(),
            ranked_changes=rows["change_id"].to_list(),
            ranked_kinds=rows["cause_kind"].to_list(),
            ranked_scores=rows["score"].to_list(),
            ranked_confidence=rows["confidence"].to_list(),
            features=[json.loads(e)["features"] for e in rows["evidence"].to_list()],
            recent_change=recent["event_id"][-1] if recent.height else None,
            naive_services=(rca_baselines.naive_ranking(inputs.windows, _ts(fault["start"])) if baselines else []),
            baro_services=(rca_baselines.baro_ranking(inputs.windows, d["first_seen"]) if baselines else []),
        ))
    detected = {j.fault_id for j in judged if j.production}
    missed = sum(1 for f in faults if f["fault_id"] not in detected)
    return judged, ranked, missed


def _hit(items: Sequence[Any], target: Any, k: int) -> bool:
    return target is not None and target in list(items)[:k]


def _rank_by(j: Judged, feature: str) -> list[str]:
    order = sorted(range(len(j.ranked_services)), key=lambda i: -j.features[i].get(feature, 0.0))
    return [j.ranked_services[i] for i in order]


def _calibration(confidence: np.ndarray, labels: np.ndarray, bins: int = 10) -> dict[str, float]:
    if confidence.size == 0:
        return {"brier": float("nan"), "ece": float("nan"), "n": 0}
    brier = float(np.mean((confidence - labels) ** 2))
    edges = np.linspace(0, 1, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            ece += mask.mean() * abs(confidence[mask].mean() - labels[mask].mean())
    return {"brier": round(brier, 4), "ece": round(float(ece), 4), "n": int(confidence.size)}


# Rankings of the same defects by the baselines (rca_baselines): the naive "largest own rise, told the
# fault time" and the BARO-style change point + robust scores. The random walk alone is an ablation.
BASELINES: dict[str, Callable[[Judged], list[str]]] = {
    "naive": lambda j: j.naive_services,
    "BARO-style": lambda j: j.baro_services,
}


def summarize(judged: list[Judged], missed: int, runs: list[str], *, top_k: int = 5) -> dict[str, Any]:
    """The figures from judged defects (see the module docstring)."""
    primary = [j for j in judged if j.primary and j.production]
    ci_primary = [j for j in judged if j.primary and not j.production]
    n = len(primary)

    def accuracy(items: list[Judged], k: int, ranking: Callable[[Judged], list[str]] | None = None) -> float:
        if not items:
            return float("nan")
        return sum(_hit((ranking or (lambda j: j.ranked_services))(j), j.root_service, k) for j in items) / len(items)

    metrics: dict[str, Any] = {
        "runs": len(runs),
        "faults": n + missed,
        "faults_detected": n,
        "faults_missed": missed,
        "defects": len(judged),
        "defects_matched": sum(1 for j in judged if j.fault_id),
        "defects_on_decoys": sum(1 for j in judged if not j.fault_id and j.decoy_kind),
    }
    metrics["root_top1"] = accuracy(primary, 1)
    metrics["root_top3"] = accuracy(primary, 3)
    metrics["root_avg5"] = float(np.mean([accuracy(primary, k) for k in range(1, top_k + 1)])) if n else float("nan")
    metrics["root_top1_all_defects"] = accuracy([j for j in judged if j.production], 1)
    metrics["root_top3_all_defects"] = accuracy([j for j in judged if j.production], 3)
    # end to end: a missed fault is a miss
    total = n + missed
    metrics["root_top1_end_to_end"] = (metrics["root_top1"] * n / total) if total and n else 0.0
    kinds_right = [j for j in primary if j.ranked_services[:1] == [j.root_service]]
    metrics["cause_kind_top1"] = (
        sum(j.ranked_kinds[0] == j.cause_kind for j in kinds_right) / len(kinds_right) if kinds_right else float("nan"))
    triggered = [j for j in primary if j.change_id]
    metrics["triggered_faults"] = len(triggered)
    metrics["change_top1"] = (sum(j.ranked_changes[:1] == [j.change_id] for j in triggered) / len(triggered)
                              if triggered else float("nan"))
    metrics["change_top3"] = (sum(j.change_id in j.ranked_changes[:3] for j in triggered) / len(triggered)
                              if triggered else float("nan"))
    # blame precision over every ranked defect's rank-1 change, incl. defects no fault explains
    firsts = [j for j in judged if (j.primary and j.production) or not j.fault_id]
    blamed = [j for j in firsts if j.ranked_changes and j.ranked_changes[0]]
    metrics["change_blames"] = len(blamed)
    metrics["change_blame_precision"] = (
        sum(j.ranked_changes[0] == j.change_id for j in blamed) / len(blamed) if blamed else float("nan"))
    metrics["change_blame_recall"] = metrics["change_top1"]
    recent = [j for j in firsts if j.recent_change]
    metrics["baseline_recent_change_precision"] = (
        sum(j.recent_change == j.change_id for j in recent) / len(recent) if recent else float("nan"))
    metrics["baseline_recent_change_recall"] = (
        sum(j.recent_change == j.change_id for j in triggered) / len(triggered) if triggered else float("nan"))
    metrics["ablations"] = {
        feature: {"top1": accuracy(primary, 1, lambda j, f=feature: _rank_by(j, f)),
                  "top3": accuracy(primary, 3, lambda j, f=feature: _rank_by(j, f))}
        for feature in ("graph_rank", "local_root", "onset", "magnitude")
    }
    metrics["baselines"] = {
        name: {"top1": accuracy(primary, 1, ranking), "top3": accuracy(primary, 3, ranking),
               "avg5": float(np.mean([accuracy(primary, k, ranking) for k in range(1, top_k + 1)])) if n
               else float("nan")}
        for name, ranking in BASELINES.items()
    }
    surge = [j for j in judged if not j.fault_id and j.decoy_kind == "traffic_surge"]
    metrics["surge_defects"] = len(surge)
    metrics["surge_ranked_as_traffic"] = (
        sum(j.ranked_kinds[:1] == ["traffic_surge"] for j in surge) / len(surge) if surge else float("nan"))
    # the bar "no change blamed for a fault that no change caused": rank-1 blames on such faults
    untriggered = [j for j in primary if not j.change_id]
    metrics["untriggered_faults"] = len(untriggered)
    metrics["untriggered_faults_blaming_a_change"] = sum(bool(j.ranked_changes[:1] and j.ranked_changes[0])
                                                         for j in untriggered)
    decoyed = [j for j in judged if not j.fault_id]
    metrics["unmatched_defects_blaming_a_change"] = sum(bool(j.ranked_changes[:1] and j.ranked_changes[0])
                                                        for j in decoyed)
    per_kind: dict[str, dict[str, Any]] = {}
    for kind in sorted({j.fault_kind for j in primary + ci_primary if j.fault_kind}):
        items = [j for j in primary + ci_primary if j.fault_kind == kind]
        with_change = [j for j in items if j.change_id]
        per_kind[kind] = {
            "faults": len(items),
            "top1": accuracy(items, 1),
            "top3": accuracy(items, 3),
            "change_top1": (sum(j.ranked_changes[:1] == [j.change_id] for j in with_change) / len(with_change)
                            if with_change else None),
            "cause_kind_top1": (sum(j.ranked_kinds[:1] == [j.cause_kind] for j in items) / len(items)),
            # the baselines read production windows around a production onset: CI-only faults have none
            "baselines_top1": {name: accuracy([j for j in items if j.production], 1, ranking)
                               for name, ranking in BASELINES.items()},
        }
    metrics["per_fault_kind"] = per_kind
    # calibration: every listed candidate of matched first defects, label = it is the root service
    conf, scores, labels, groups = [], [], [], []
    for j in primary:
        for i, service in enumerate(j.ranked_services[:top_k]):
            conf.append(j.ranked_confidence[i])
            scores.append(j.ranked_scores[i])
            labels.append(float(service == j.root_service))
            groups.append(j.run)
    conf_a, score_a, label_a = np.array(conf), np.array(scores), np.array(labels)
    metrics["calibration_default"] = _calibration(conf_a, label_a)
    metrics["calibration_fitted_2fold"] = _two_fold_calibration(score_a, label_a, np.array(groups))
    return metrics


def _two_fold_calibration(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> dict[str, Any]:
    """Fit ``calibrate`` on half of the runs, measure on the other half, and the other way round."""
    names = sorted(set(groups.tolist()))
    if len(names) < 2:
        return {"brier": float("nan"), "ece": float("nan"), "n": 0, "note": "needs 2+ runs"}
    fold = np.isin(groups, names[::2])
    predicted = np.zeros_like(scores)
    methods = []
    for train in (fold, ~fold):
        calibrator = rca.calibrate(scores[train], labels[train])
        methods.append(calibrator.method)
        predicted[~train] = calibrator.predict(scores[~train])
    return {**_calibration(predicted, labels), "methods": methods}


# ------------------------------------------------------------------------------- evaluate


def evaluate(runs: Sequence[tuple[Path | str, Path | str]], *, defects_source: str = "pipeline",
             input_builder: InputBuilder | None = None, lookback: timedelta = timedelta(minutes=60),
             progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Rank root causes over every (landing_dir, ground_truth_path) and return the figures.

    ``defects_source``: ``pipeline`` (the project's defects) or ``ground-truth`` (defects built from the
    faults' windows, to measure the ranking apart from detection)."""
    judged: list[Judged] = []
    missed = 0
    names: list[str] = []
    sources: set[str] = set()
    seconds = 0.0
    for landing, truth_path in runs:
        landing, truth_path = Path(landing), Path(truth_path)
        truth = load_truth(truth_path)
        generator = truth.get("generator", {})
        name = f"{generator.get('topology', landing.parent.name)}/seed{generator.get('seed', '?')}"
        began = time.perf_counter()
        if input_builder is not None:
            inputs = input_builder(landing, truth)
        else:
            inputs = pipeline_inputs(landing, truth, defects_source=defects_source)
        started = time.perf_counter()
        items, _, run_missed = judge_run(name, inputs, truth, lookback=lookback)
        seconds += time.perf_counter() - started
        judged += items
        missed += run_missed
        names.append(name)
        sources.add(inputs.defects_source)
        if progress:
            progress(f"{name}: {sum(1 for j in items if j.primary)} faults ranked, {run_missed} missed, "
                     f"{len(items)} defects ({time.perf_counter() - began:.1f} s)")
    metrics = summarize(judged, missed, names)
    metrics["defects_source"] = ",".join(sorted(sources))
    metrics["ranking_seconds"] = round(seconds, 2)
    metrics["run_names"] = names
    return metrics


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def print_report(metrics: dict[str, Any], file=None) -> None:
    out = file or sys.stdout

    def line(text: str = "") -> None:
        print(text, file=out)

    line(f"root-cause ranking on {metrics['runs']} simulated runs ({', '.join(metrics.get('run_names', []))})")
    line(f"defects from: {metrics.get('defects_source')}; production faults {metrics['faults']}, detected "
         f"{metrics['faults_detected']}, missed {metrics['faults_missed']}; defects {metrics['defects']} "
         f"({metrics['defects_matched']} matched to a fault)")
    line()
    line(f"{'figure':<44} {'value':>7}")
    line("-" * 52)
    for key, label in (
        ("root_top1", "root service top-1 (first defect per fault)"),
        ("root_top3", "root service top-3"),
        ("root_avg5", "root service Avg@5"),
        ("root_top1_all_defects", "root service top-1 (every matched defect)"),
        ("root_top3_all_defects", "root service top-3 (every matched defect)"),
        ("root_top1_end_to_end", "root service top-1, missed faults count"),
        ("cause_kind_top1", "cause kind right (when service right)"),
        ("change_top1", "triggering change top-1"),
        ("change_top3", "triggering change top-3"),
        ("change_blame_precision", "change blame precision"),
        ("change_blame_recall", "change blame recall"),
        ("baseline_recent_change_precision", "baseline 'latest deploy' precision"),
        ("baseline_recent_change_recall", "baseline 'latest deploy' recall"),
        ("surge_ranked_as_traffic", "defects on traffic surges ranked traffic_surge"),
    ):
        line(f"{label:<44} {_fmt(metrics.get(key)):>7}")
    line(f"change blames {metrics.get('change_blames')} for {metrics.get('triggered_faults')} triggered faults; "
         f"{metrics.get('untriggered_faults_blaming_a_change')} of {metrics.get('untriggered_faults')} faults no "
         f"change caused blame a change; {metrics.get('unmatched_defects_blaming_a_change')} of "
         f"{metrics['defects'] - metrics['defects_matched']} defects matching no fault blame a change; "
         f"{metrics.get('surge_defects')} defects on traffic surges")
    line()
    line(f"{'root service, same defects':<36} {'top-1':>7} {'top-3':>7} {'Avg@5':>7}")
    line(f"  {'qa-assets':<34} {_fmt(metrics['root_top1']):>7} {_fmt(metrics['root_top3']):>7} "
         f"{_fmt(metrics['root_avg5']):>7}")
    for name, values in metrics["baselines"].items():
        line(f"  {name:<34} {_fmt(values['top1']):>7} {_fmt(values['top3']):>7} {_fmt(values['avg5']):>7}")
    line()
    line("single-feature rankings (ablations)   top-1   top-3")
    for feature, values in metrics["ablations"].items():
        line(f"  {feature:<34} {_fmt(values['top1']):>7} {_fmt(values['top3']):>7}")
    line()
    names = list(metrics["baselines"])
    line(f"{'fault kind':<24} {'faults':>6} {'top-1':>6} {'top-3':>6} {'change@1':>8} {'kind@1':>7}"
         + "".join(f" {name + ' top-1':>16}" for name in names))
    for kind, values in metrics["per_fault_kind"].items():
        line(f"{kind:<24} {values['faults']:>6} {_fmt(values['top1']):>6} {_fmt(values['top3']):>6} "
             f"{_fmt(values['change_top1']):>8} {_fmt(values['cause_kind_top1']):>7}"
             + "".join(f" {_fmt(values['baselines_top1'][name]):>16}" for name in names))
    line("(naive: told the fault time, names the service whose own error rate or p95 rose most; "
         "BARO-style: change point + robust scores over every metric; both on production faults only)")
    line()
    default, fitted = metrics["calibration_default"], metrics["calibration_fitted_2fold"]
    line(f"confidence calibration (top-5 candidates, n={default['n']}): label-free mapping Brier "
         f"{_fmt(default['brier'])} ECE {_fmt(default['ece'])}; fitted on other runs Brier "
         f"{_fmt(fitted['brier'])} ECE {_fmt(fitted['ece'])}")
    line("published anchors (other systems and data): Nezha 0.87 / 0.98 top-1 / top-3 on Train-Ticket; "
         "BARO ~0.8 Avg@5")


# ------------------------------------------------------------------------------------- CLI


def simulate_runs(workdir: Path, topologies: Sequence[str], seeds: Sequence[int], *, hours: float, scale: str,
                  faults: str, progress: Callable[[str], None] | None = None) -> list[tuple[Path, Path]]:
    """Simulated landing directories (reused when already there) and their ground-truth files."""
    from qa_assets.simulate import simulate

    runs = []
    for topology in topologies:
        for seed in seeds:
            folder = workdir / f"{topology.replace(':', '-')}-seed{seed}-{faults}-{hours:g}h-{scale}"
            landing, truth = folder / "landing", folder / "ground_truth.json"
            if not truth.exists():
                if landing.exists():
                    import shutil

                    shutil.rmtree(landing)
                summary = simulate(landing, topology=topology, hours=hours, scale=scale, seed=seed, faults=faults,
                                   ground_truth=truth)
                if progress:
                    progress(f"simulated {topology} seed {seed}: faults {', '.join(summary.faults)}")
            runs.append((landing, truth))
    return runs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from qa_assets.evaluation.artifacts import seed_list

    parser.add_argument("--topologies", default="shop,bank,random:14",
                        help="comma-separated simulator topologies (default: %(default)s)")
    parser.add_argument("--seeds", type=seed_list, default=[0, 1, 2], help="comma-separated seeds (default: 0,1,2)")
    parser.add_argument("--hours", type=float, default=3.0, help="simulated hours per run (default: %(default)s)")
    parser.add_argument("--scale", default="small", help="simulator scale (default: %(default)s)")
    parser.add_argument("--faults", default="random",
                        help="simulator scenario: random | rca | default | all (default: %(default)s)")
    parser.add_argument("--defects", choices=("pipeline", "ground-truth"), default="pipeline",
                        help="the pipeline's defects (default), or defects built from the ground truth's fault "
                             "windows to measure the ranking apart from detection")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep simulated runs here and reuse them (default: a temporary folder)")
    parser.add_argument("--run", action="append", default=[], metavar="LANDING:GROUND_TRUTH",
                        help="evaluate an existing landing directory with its ground truth instead (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")


def main(args: argparse.Namespace) -> int:
    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    try:
        if args.run:
            runs = [tuple(Path(p) for p in item.split(":", 1)) for item in args.run]
            if any(len(r) != 2 for r in runs):
                print("qa-assets evaluate rca: --run takes LANDING:GROUND_TRUTH", file=sys.stderr)
                return 2
            metrics = evaluate(runs, defects_source=args.defects, progress=progress)
        else:
            topologies = [t.strip() for t in args.topologies.split(",") if t.strip()]
            seeds = args.seeds
            with tempfile.TemporaryDirectory(prefix="qa-assets-rca-") as scratch:
                workdir = args.workdir or Path(scratch)
                runs = simulate_runs(workdir, topologies, seeds, hours=args.hours, scale=args.scale,
                                     faults=args.faults, progress=progress)
                metrics = evaluate(runs, defects_source=args.defects, progress=progress)
    except (FileNotFoundError, rca.RcaInputError, ValueError) as error:
        print(f"qa-assets evaluate rca: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(metrics, indent=2, default=str))
    else:
        print_report(metrics)
    return 0


if __name__ == "__main__":  # pragma: no cover
    _parser = argparse.ArgumentParser(prog="qa-assets evaluate rca")
    add_arguments(_parser)
    sys.exit(main(_parser.parse_args()))
