"""Defect detection measured on a simulated landing directory against its ground truth.

The pipeline runs hour by hour as the Dagster assets do: log templates, service windows and the service
graph from the raw frames; the window detector fitted on the trailing history (up to a day; the first
hour is baselined on itself); anomalies; defects grouped with the previous hours' defects. Then:

- **detection**: a fault is found when a defect on its root service, a service where the simulator
  measured a symptom, or a service upstream of the root overlaps the fault (from 5 minutes before its
  start to 15 minutes after its end). CI-only faults (flaky tests, failures caught in CI) are found by
  a test defect of the root service naming the test. Precision = defects matched to a fault / all
  defects (a defect on a decoy - traffic surge, latency blip, harmless deploy - or on nothing counts
  against it); incident precision likewise per incident.
- **grouping**: pairwise precision and recall of `incident_id` against the fault each defect matched
  (unmatched defects are singletons of their own).
- **type**: the type of the fault's first defect on its root service (where the root has no defect of its
  own, as when a changed response contract fails only its callers: the fault's first production defect)
  against the fault's defect type (`new_exception` counts as the `error_spike` family, as the issue
  groups them).

`python -m qa_assets.evaluation.defects --simulate DIR` simulates a run first; `--landing DIR
--ground-truth FILE` evaluates an existing one. `--seeds 0,1,2` evaluates every topology of `--topologies`
with each seed (scenario `all`, every fault kind) plus a fault-free run per topology, and prints the
figures over all of them against the issue's bars (`pooled_figures`), with the macro-F1 of the types and
false defects per simulated clean day.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import combinations
from pathlib import Path
from typing import Any

import polars as pl

from qa_assets.evaluation.artifacts import seed_list
from qa_assets.lib.defects import anomalies as anomaly_lib
from qa_assets.lib.defects import classify, grouping

MATCH_BEFORE = timedelta(minutes=5)
MATCH_AFTER = timedelta(minutes=15)
CI_MATCH_BEFORE = timedelta(hours=6)
HISTORY = timedelta(hours=24)
TYPE_FAMILY = {"new_exception": "error_spike"}


# ----------------------------------------------------------------------------------------- pipeline


@dataclass
class PipelineRun:
    windows: pl.DataFrame
    anomalies: pl.DataFrame
    defects: pl.DataFrame  # every partition's rows (a continuing defect appears once per partition)
    log_events: pl.DataFrame
    graph_nodes: pl.DataFrame
    graph_edges: pl.DataFrame
    request_calls: pl.DataFrame  # graph.request_calls of every hour
    seconds: dict[str, float] = field(default_factory=dict)

    def latest_defects(self) -> pl.DataFrame:
        """One row per defect: its latest partition's row."""
        if self.defects.height == 0:
            return self.defects
        return self.defects.sort("_partition").unique("defect_id", keep="last").sort("first_seen", "service")


def _hours(frames: dict[str, pl.DataFrame]) -> list[datetime]:
    hours: set[datetime] = set()
    for name in ("spans", "logs", "metrics"):
        frame = frames.get(name)
        if frame is not None and frame.height and "hour" in frame.columns:
            hours.update(frame["hour"].drop_nulls().unique().to_list())
    return sorted(hours)


def _in(frame: pl.DataFrame | None, column: str, start: datetime, end: datetime) -> pl.DataFrame | None:
    if frame is None:
        return None
    return frame.filter((pl.col(column) >= start) & (pl.col(column) < end))


def run_pipeline(
    frames: dict[str, pl.DataFrame],
    *,
    model_version: str = "eval",
    classifier: classify.DefectTypeClassifier | None = None,
    detector_settings: anomaly_lib.DetectorSettings | None = None,
    grouping_settings: grouping.GroupingSettings | None = None,
) -> PipelineRun:
    """The defects stage over every hour of `frames` (raw tables as `load_landing_frames` returns)."""
    from qa_assets.lib import graph as graph_lib
    from qa_assets.lib import windows as windows_lib
    from qa_assets.lib.templates import events as template_events

    seconds: dict[str, float] = {"signals": 0.0, "detect": 0.0, "group": 0.0}
    registry = pl.DataFrame(schema=template_events.TEMPLATES)  # as the warehouse stores them: naive UTC
    lineage = pl.DataFrame(schema=template_events.LINEAGE)
    spans, logs, metrics = frames["spans"], frames["logs"], frames["metrics"]
    deployments, tests, catalog = frames["deployments"], frames["test_cases"], frames.get("catalog")
    all_windows, all_anomalies, all_defects, all_events = [], [], [], []
    edge_parts: list[pl.DataFrame] = []
    request_parts: list[pl.DataFrame] = []
    nodes = edges = pl.DataFrame()
    previous = pl.DataFrame(schema=grouping.DEFECTS)
    for hour in _hours(frames):
        end = hour + timedelta(hours=1)
        began = time.perf_counter()
        hour_logs = logs.filter(pl.col("hour") == hour)
        templated = template_events.template_hour(hour_logs, registry, lineage, hour=hour)
        registry = templated.registry
        lineage = pl.concat([lineage, templated.lineage_added]).unique(maintain_order=True)
        events = templated.events
        hour_spans = spans.filter(pl.col("hour") == hour)
        m_start, m_end = windows_lib.metrics_time_range(hour)
        hour_windows = windows_lib.service_windows(
            hour_start=hour,
            spans=hour_spans,
            logs_with_templates=events,
            metrics=metrics.filter((pl.col("timestamp") >= m_start) & (pl.col("timestamp") <= m_end)),
            deployments=_in(deployments, "timestamp", hour, end),
            test_cases=_in(tests, "timestamp", hour, end),
            history_deployments=deployments.filter(pl.col("timestamp") < hour),
        )
        edge_parts.append(graph_lib.call_edges(hour_spans))
        request_parts.append(graph_lib.request_calls(hour_spans))
        graph = graph_lib.build_graph(
            spans_edges=graph_lib.merge_call_edges(edge_parts),
            catalog=catalog,
            deployments=deployments.filter(pl.col("timestamp") < end),
            span_services=graph_lib.span_services(spans.filter(pl.col("hour") <= hour)),
        )
        nodes, edges = graph_lib.graph_tables(graph)
        seconds["signals"] += time.perf_counter() - began

        began = time.perf_counter()
        history = (
            pl.concat(all_windows).filter(pl.col("window_start") >= hour - HISTORY) if all_windows else None
        )
        detector = anomaly_lib.fit_detector(
            history if history is not None and history.height else hour_windows,
            hour_windows["feature_set_id"][0] if hour_windows.height else "eval",
            settings=detector_settings,
        )
        hour_anomalies = anomaly_lib.detect(
            hour_windows,
            detector,
            log_events=events,
            failed_tests=_in(tests, "timestamp", hour, end),
            deployments=deployments.filter(pl.col("timestamp") < end),
            model_version=model_version,
            templates=registry,
        )
        seconds["detect"] += time.perf_counter() - began

        began = time.perf_counter()
        errors = hour_spans.filter((pl.col("status_code") == "ERROR") | (pl.col("http_status_code") >= 500))
        hour_defects = grouping.group_defects(
            hour_anomalies,
            log_events=events,
            spans_errors=errors,
            failed_tests=tests.filter(pl.col("timestamp") < end),
            graph_edges=edges,
            previous_defects=previous,
            hour_end=end,
            windows=hour_windows,
            graph_nodes=nodes,
            deployments=deployments.filter(pl.col("timestamp") < end),
            classifier=classifier,
            settings=grouping_settings,
            previous_anomalies=all_anomalies[-1] if all_anomalies else None,
        )
        seconds["group"] += time.perf_counter() - began
        previous = pl.concat([previous, hour_defects])
        all_windows.append(hour_windows)
        all_anomalies.append(hour_anomalies)
        all_defects.append(hour_defects.with_columns(pl.lit(hour).alias("_partition")))
        all_events.append(events)
    return PipelineRun(
        windows=pl.concat(all_windows) if all_windows else pl.DataFrame(),
        anomalies=pl.concat(all_anomalies) if all_anomalies else pl.DataFrame(schema=anomaly_lib.ANOMALIES),
        defects=pl.concat(all_defects) if all_defects else pl.DataFrame(schema=grouping.DEFECTS),
        log_events=pl.concat(all_events) if all_events else pl.DataFrame(),
        graph_nodes=nodes,
        graph_edges=edges,
        request_calls=pl.concat(request_parts) if request_parts else pl.DataFrame(schema=graph_lib.REQUEST_CALLS),
        seconds={k: round(v, 2) for k, v in seconds.items()},
    )


# ----------------------------------------------------------------------------------------- matching


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).replace(tzinfo=None)


def _upstream(topology: dict[str, Any], service: str) -> set[str]:
    """Services that reach `service` through calls (its transitive callers)."""
    callers: dict[str, set[str]] = {}
    for edge in topology.get("edges", []):
        callers.setdefault(edge["callee"], set()).add(edge["caller"])
    seen: set[str] = set()
    frontier = [service]
    while frontier:
        node = frontier.pop()
        for caller in callers.get(node, ()):
            if caller not in seen:
                seen.add(caller)
                frontier.append(caller)
    return seen


def _words(text: str | None) -> str:
    """Letters and digits only, lower case: test names differ in case and separators between runners
    ("handles concurrent updates" is Go's "TestHandlesConcurrent/updates")."""
    return "".join(ch for ch in (text or "").lower() if ch.isalnum())


def _ci_fault(fault: dict[str, Any]) -> str | None:
    """The test name a CI-visible fault should surface as, if any."""
    return fault.get("flaky_test") or (fault.get("ci_test") if fault.get("caught_by_ci") else None)


def match_defects(defects: pl.DataFrame, truth: dict[str, Any]) -> pl.DataFrame:
    """Each defect with the fault it belongs to (`fault_id`, null when none) and the decoy it sits on."""
    faults = truth.get("faults", [])
    topology = truth.get("topology", {})
    upstream = {f["fault_id"]: _upstream(topology, f["root_service"]) for f in faults}
    rows = []
    for d in defects.iter_rows(named=True):
        is_test = "|test:" in (d["fingerprint"] or "")
        best, best_overlap = None, timedelta(0)
        for f in faults:
            start, end = _time(f["start"]), _time(f["end"])
            test = _ci_fault(f)
            if is_test:
                if (
                    test
                    and d["service"] == f["root_service"]
                    and _words(test) in _words(d["operation"])
                    and start - CI_MATCH_BEFORE <= d["first_seen"] <= end
                ):
                    best, best_overlap = f["fault_id"], timedelta(days=1)
                continue
            if f.get("kind") == "flaky_test" or f.get("defect_type") == "flaky_test":
                continue
            services = {f["root_service"], *f.get("affected_services", []), *upstream[f["fault_id"]]}
            if d["service"] not in services:
                continue
            lo, hi = max(d["first_seen"], start - MATCH_BEFORE), min(d["last_seen"], end + MATCH_AFTER)
            overlap = hi - lo
            if hi >= lo and (best is None or overlap > best_overlap or d["service"] == f["root_service"]):
                best, best_overlap = f["fault_id"], overlap
        decoy = None
        if best is None:
            for item in truth.get("decoys", []):
                start, end = _time(item["start"]), _time(item["end"])
                near = d["first_seen"] <= end + MATCH_AFTER and d["last_seen"] >= start - MATCH_BEFORE
                if near and (
                    item.get("service") in (None, d["service"]) or item.get("kind") == "traffic_surge"
                ):
                    decoy = item["decoy_id"]
                    break
        rows.append({"defect_id": d["defect_id"], "fault_id": best, "decoy_id": decoy})
    return pl.DataFrame(rows, schema={"defect_id": pl.String, "fault_id": pl.String, "decoy_id": pl.String})


def _pairs(labels: dict[str, str], groups: dict[str, str]) -> tuple[float, float, int, int, int]:
    ids = sorted(labels)
    same_group = same_label = both = 0
    for a, b in combinations(ids, 2):
        g = groups[a] == groups[b]
        t = labels[a] == labels[b] and not labels[a].startswith("none:")
        same_group += g
        same_label += t
        both += g and t
    precision = both / same_group if same_group else 1.0
    recall = both / same_label if same_label else 1.0
    return precision, recall, same_group, same_label, both


def evaluate_run(defects: pl.DataFrame, truth: dict[str, Any]) -> dict[str, Any]:
    """Detection, grouping and type metrics of one run's defects (one row per defect) against its truth."""
    faults = [f for f in truth.get("faults", [])]
    matched = defects.join(match_defects(defects, truth), on="defect_id", how="left")
    metrics: dict[str, Any] = {
        "faults": len(faults),
        "defects": defects.height,
        "incidents": defects["incident_id"].n_unique() if defects.height else 0,
    }
    found = set(matched["fault_id"].drop_nulls().to_list()) if matched.height else set()
    metrics["faults_detected"] = len(found)
    metrics["detection_recall"] = round(len(found) / len(faults), 4) if faults else None
    true_defects = matched.filter(pl.col("fault_id").is_not_null()).height
    metrics["defects_matched"] = true_defects
    metrics["defects_on_decoys"] = matched.filter(
        pl.col("fault_id").is_null() & pl.col("decoy_id").is_not_null()
    ).height
    metrics["defects_unexplained"] = matched.filter(
        pl.col("fault_id").is_null() & pl.col("decoy_id").is_null()
    ).height
    metrics["detection_precision"] = round(true_defects / defects.height, 4) if defects.height else None
    if defects.height:
        per_incident = matched.group_by("incident_id").agg(
            pl.col("fault_id").is_not_null().any().alias("hit")
        )
        metrics["incident_precision"] = round(per_incident["hit"].mean(), 4)
    labels = {
        r["defect_id"]: (r["fault_id"] or f"none:{r['defect_id']}") for r in matched.iter_rows(named=True)
    }
    groups = {r["defect_id"]: r["incident_id"] for r in matched.iter_rows(named=True)}
    precision, recall, grouped_pairs, true_pairs, both_pairs = _pairs(labels, groups)
    metrics.update(
        grouping_pairwise_precision=round(precision, 4),
        grouping_pairwise_recall=round(recall, 4),
        grouping_pairs_predicted=grouped_pairs,
        grouping_pairs_true=true_pairs,
        grouping_pairs_both=both_pairs,
    )
    # Type at the root service.
    per_fault = []
    typed = correct = 0
    for f in faults:
        mine = matched.filter(pl.col("fault_id") == f["fault_id"]).with_columns(
            pl.col("fingerprint").str.contains("|test:", literal=True).alias("_ci")
        )
        # the first production defect on the root service when there is one (a CI failure only
        # otherwise), the one a person sees first; a root with no defect of its own (a changed response
        # contract fails only its callers): the fault's first production defect
        root = mine.filter(pl.col("service") == f["root_service"]).sort(
            ["_ci", "first_seen", "error_count"], descending=[False, False, True]
        )
        if root.height == 0:
            root = mine.filter(~pl.col("_ci")).sort(["first_seen", "error_count"], descending=[False, True])
        row = root.row(0, named=True) if root.height else None
        predicted = row["defect_type"] if row else None
        ok = None
        if row is not None:
            typed += 1
            ok = TYPE_FAMILY.get(predicted, predicted) == TYPE_FAMILY.get(f["defect_type"], f["defect_type"])
            correct += bool(ok)
        per_fault.append(
            {
                "fault_id": f["fault_id"],
                "kind": f["kind"],
                "root": f["root_service"],
                "truth_type": f["defect_type"],
                "detected": f["fault_id"] in found,
                "defects": mine.height,
                "incidents": mine["incident_id"].n_unique() if mine.height else 0,
                "root_defect_type": predicted,
                "type_ok": ok,
                "severity": row["severity"] if row else None,
                "services": sorted(set(mine["service"].to_list())),
            }
        )
    metrics["type_accuracy_root"] = round(correct / typed, 4) if typed else None
    metrics["typed_faults"] = typed
    metrics["per_fault"] = per_fault
    metrics["false_positives"] = [
        {k: r[k] for k in ("service", "defect_type", "first_seen", "last_seen", "decoy_id", "fingerprint")}
        for r in matched.filter(pl.col("fault_id").is_null()).iter_rows(named=True)
    ]
    metrics["severity_counts"] = dict(sorted(Counter(defects["severity"].to_list()).items()))
    return metrics


def training_labels(defects: pl.DataFrame, truth: dict[str, Any]) -> pl.DataFrame:
    """Simulator labels for the type classifier: each defect on a fault's root service (or a CI defect of
    the fault) labelled with the fault's defect type."""
    matched = defects.join(match_defects(defects, truth), on="defect_id", how="left").filter(
        pl.col("fault_id").is_not_null()
    )
    roots = {f["fault_id"]: (f["root_service"], f["defect_type"]) for f in truth.get("faults", [])}
    rows = []
    for r in matched.iter_rows(named=True):
        root, kind = roots[r["fault_id"]]
        if r["service"] == root:
            rows.append({"defect_id": r["defect_id"], "label": kind})
    return pl.DataFrame(rows, schema={"defect_id": pl.String, "label": pl.String})


def cross_run_type_accuracy(
    runs: list[tuple[pl.DataFrame, dict[str, Any]]], *, n_estimators: int = 200
) -> dict[str, Any]:
    """Leave one run out: train the type classifier on the other runs' simulator labels (defects on a
    fault's root service), type the held-out run's labelled defects, and compare with the rules."""
    labelled = []
    for defects, truth in runs:
        labels = training_labels(defects, truth)
        x, y, _ = classify.training_set(defects, labels.rename({"label": "defect_type"}))
        labelled.append((x, y))
    rules_ok = model_ok = total = 0
    skipped = 0
    for i, (x_test, y_test) in enumerate(labelled):
        if x_test.height == 0:
            continue
        train = [(x, y) for j, (x, y) in enumerate(labelled) if j != i and x.height]
        if not train:
            skipped += x_test.height
            continue
        x_train = pl.concat([x for x, _ in train])
        y_train = pl.concat([y for _, y in train])
        truth = [TYPE_FAMILY.get(v, v) for v in y_test.to_list()]
        rules = [TYPE_FAMILY.get(v, v) for v in classify.rule_type(x_test)[0].to_list()]
        try:
            model = classify.DefectTypeClassifier(n_estimators=n_estimators, min_labels=5).fit(
                x_train, y_train
            )
        except classify.ClassifierInputError:
            skipped += x_test.height
            continue
        predicted = [TYPE_FAMILY.get(v, v) for v in model.predict(x_test)[0].to_list()]
        total += len(truth)
        rules_ok += sum(a == b for a, b in zip(rules, truth, strict=True))
        model_ok += sum(a == b for a, b in zip(predicted, truth, strict=True))
    return {
        "labelled_defects": total,
        "skipped": skipped,
        "rules_accuracy": round(rules_ok / total, 4) if total else None,
        "classifier_accuracy": round(model_ok / total, 4) if total else None,
    }


# ------------------------------------------------------------------------------------------- entry


def evaluate_on_simulation(
    landing_dir: str | Path,
    ground_truth_path: str | Path,
    *,
    classifier: classify.DefectTypeClassifier | None = None,
    keep_run: bool = False,
) -> dict[str, Any]:
    """Run the defects stage over a simulated landing directory and score it against the ground truth."""
    from qa_assets.lib.ingest.landing import load_landing_frames

    truth = json.loads(Path(ground_truth_path).read_text())
    began = time.perf_counter()
    frames = load_landing_frames(Path(landing_dir))
    load_seconds = time.perf_counter() - began
    run = run_pipeline(frames, classifier=classifier)
    metrics = evaluate_run(run.latest_defects(), truth)
    metrics["seconds"] = {"load": round(load_seconds, 2), **run.seconds}
    metrics["anomalies_flagged"] = int(run.anomalies["is_anomaly"].sum()) if run.anomalies.height else 0
    metrics["source"] = {
        "landing": str(landing_dir),
        "ground_truth": str(ground_truth_path),
        "generator": truth.get("generator"),
    }
    if keep_run:
        metrics["_run"] = run
    return metrics


# The bars for the evaluation over several runs: (figure, at least / at most, bar).
BARS: tuple[tuple[str, str, float], ...] = (
    ("detection_recall", ">=", 0.95),
    ("false_defects_per_clean_day", "<=", 1.0),
    ("type_macro_f1", ">=", 0.9),
    ("grouping_pairwise_precision", ">=", 0.9),
    ("grouping_pairwise_recall", ">=", 0.9),
)


def pooled_figures(runs: list[dict[str, Any]], clean_runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures over several runs' metrics (`evaluate_run`): detection recall and precision over all
    their faults and defects, grouping precision and recall over all their pairs, macro-F1 of the root
    defect's type over the fault types (a missed fault counts as a wrong type), recall per fault kind;
    and false defects per simulated day over `clean_runs` (runs without faults: every defect is false)."""
    faults = sum(m["faults"] for m in runs)
    detected = sum(m["faults_detected"] for m in runs)
    defects = sum(m["defects"] for m in runs)
    predicted = sum(m["grouping_pairs_predicted"] for m in runs)
    true = sum(m["grouping_pairs_true"] for m in runs)
    both = sum(m["grouping_pairs_both"] for m in runs)
    per_fault = [f for m in runs for f in m["per_fault"]]
    pairs = [
        (
            TYPE_FAMILY.get(f["truth_type"], f["truth_type"]),
            TYPE_FAMILY.get(f["root_defect_type"], f["root_defect_type"]) if f["root_defect_type"] else None,
        )
        for f in per_fault
    ]
    f1 = {}
    for label in sorted({t for t, _ in pairs}):
        tp = sum(t == label and p == label for t, p in pairs)
        fp = sum(t != label and p == label for t, p in pairs)
        fn = sum(t == label and p != label for t, p in pairs)
        f1[label] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    kinds: dict[str, list[bool]] = {}
    for f in per_fault:
        kinds.setdefault(f["kind"], []).append(bool(f["detected"]))
    clean_hours = sum(m["hours"] for m in clean_runs)
    clean_defects = sum(m["defects"] for m in clean_runs)
    return {
        "runs": len(runs),
        "faults": faults,
        "faults_detected": detected,
        "detection_recall": round(detected / faults, 4) if faults else None,
        "detection_precision": (
            round(sum(m["defects_matched"] for m in runs) / defects, 4) if defects else None
        ),
        "grouping_pairwise_precision": round(both / predicted, 4) if predicted else 1.0,
        "grouping_pairwise_recall": round(both / true, 4) if true else 1.0,
        "type_macro_f1": round(sum(f1.values()) / len(f1), 4) if f1 else None,
        "type_f1": {label: round(value, 4) for label, value in f1.items()},
        "recall_per_kind": {kind: [sum(hits), len(hits)] for kind, hits in sorted(kinds.items())},
        "clean_runs": len(clean_runs),
        "clean_hours": clean_hours,
        "clean_defects": clean_defects,
        "false_defects_per_clean_day": round(clean_defects * 24 / clean_hours, 3) if clean_hours else None,
        "clean_false_positives": [fp for m in clean_runs for fp in m["false_positives"]],
    }


def _fmt(value: Any) -> str:
    return "-" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))


def format_pooled(pooled: dict[str, Any]) -> str:
    lines = [
        f"over {pooled['runs']} runs with faults ({pooled['faults']} faults, {pooled['faults_detected']} "
        f"detected) and {pooled['clean_runs']} clean runs ({pooled['clean_hours']:g} h, "
        f"{pooled['clean_defects']} defects)",
        "",
        f"{'figure':<32}{'value':>8}  {'bar':<8}{'':>4}",
        "-" * 56,
    ]
    for key, direction, bar in BARS:
        value = pooled.get(key)
        met = value is not None and (value >= bar if direction == ">=" else value <= bar)
        lines.append(f"{key:<32}{_fmt(value):>8}  {direction} {bar:<5}{'met' if met else 'NOT met':>9}")
    lines.append(f"{'detection_precision':<32}{_fmt(pooled.get('detection_precision')):>8}")
    lines += ["", "type F1 (root defect's type, missed faults count as wrong): " + ", ".join(
        f"{label} {value:.2f}" for label, value in pooled["type_f1"].items())]
    lines += ["recall per fault kind: " + ", ".join(
        f"{kind} {hit}/{total}" for kind, (hit, total) in pooled["recall_per_kind"].items())]
    if pooled["clean_false_positives"]:
        lines += ["", "defects on clean runs:"]
        for fp in pooled["clean_false_positives"]:
            lines.append(f"  {fp['service']:<16}{fp['defect_type']:<20}{fp['first_seen']}  {fp['fingerprint']}")
    return "\n".join(lines)


def format_report(metrics: dict[str, Any]) -> str:
    lines = [
        f"faults {metrics['faults']}  detected {metrics['faults_detected']}  defects {metrics['defects']} "
        f"(matched {metrics['defects_matched']}, on decoys {metrics['defects_on_decoys']}, unexplained "
        f"{metrics['defects_unexplained']})  incidents {metrics['incidents']}",
        "",
        f"{'metric':<32}{'value':>8}",
        "-" * 40,
    ]
    for key in (
        "detection_recall",
        "detection_precision",
        "incident_precision",
        "grouping_pairwise_precision",
        "grouping_pairwise_recall",
        "type_accuracy_root",
    ):
        lines.append(f"{key:<32}{_fmt(metrics.get(key)):>8}")
    lines += [
        "",
        f"{'fault':<6}{'kind':<24}{'root':<16}{'found':<7}{'defects':>8}{'incid.':>7}  "
        f"{'truth type':<20}{'root type':<20}{'sev':<4}",
    ]
    for f in metrics.get("per_fault", []):
        lines.append(
            f"{f['fault_id']:<6}{f['kind']:<24}{f['root']:<16}{'yes' if f['detected'] else 'no':<7}"
            f"{f['defects']:>8}{f['incidents']:>7}  {f['truth_type']:<20}{_fmt(f['root_defect_type']):<20}"
            f"{_fmt(f['severity']):<4}"
        )
    if metrics.get("false_positives"):
        lines += ["", "defects matching no fault:"]
        for fp in metrics["false_positives"]:
            lines.append(
                f"  {fp['service']:<16}{fp['defect_type']:<20}{fp['first_seen']} .. {fp['last_seen']}"
                f"  decoy={fp['decoy_id']}  {fp['fingerprint']}"
            )
    if metrics.get("seconds"):
        lines += ["", "seconds: " + ", ".join(f"{k} {v}" for k, v in metrics["seconds"].items())]
    return "\n".join(lines)


def print_report(metrics: dict[str, Any]) -> None:
    print(format_report(metrics))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--landing", type=Path, help="a simulated landing directory")
    parser.add_argument(
        "--ground-truth", type=Path, help="its ground_truth.json (default: beside the landing dir)"
    )
    parser.add_argument(
        "--simulate", type=Path, help="simulate into this new folder first (landing/ + ground truth)"
    )
    parser.add_argument("--topology", default="shop", help="simulator topology of one run (default: shop)")
    parser.add_argument("--hours", type=float, default=None,
                        help="simulated hours per run (default: 4; 6 with --seeds, which the 'all' scenario needs)")
    parser.add_argument("--scale", default="small")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--faults", default=None,
                        help="simulator scenario (default: 'default'; with --seeds 'all': every fault kind)")
    parser.add_argument("--seeds", type=seed_list, default=None,
                        help="evaluate several simulated runs (every topology of --topologies with each seed) "
                             "plus clean runs, and print the figures over all of them against the issue's bars")
    parser.add_argument("--topologies", default="shop,bank,random:14",
                        help="with --seeds: comma-separated topologies (default: %(default)s)")
    parser.add_argument("--clean-hours", type=float, default=6.0,
                        help="with --seeds: hours of each fault-free run (one per topology) measuring false "
                             "defects per day (default: %(default)s; 0 skips them)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="with --seeds: keep the simulated runs here and reuse them (default: a temporary folder)")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")


def main_many(args: argparse.Namespace) -> int:
    """`qa-assets evaluate defects --seeds ...`: several simulated runs and clean runs, pooled figures."""
    import tempfile

    from qa_assets.evaluation.rca import simulate_runs

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    topologies = [t.strip() for t in args.topologies.split(",") if t.strip()]
    hours = args.hours if args.hours is not None else 6.0
    faults = args.faults or "all"
    runs, clean = [], []
    with tempfile.TemporaryDirectory(prefix="qa-assets-eval-defects-") as scratch:
        workdir = args.workdir or Path(scratch)
        for landing, truth in simulate_runs(workdir, topologies, args.seeds, hours=hours, scale=args.scale,
                                            faults=faults, progress=progress):
            metrics = evaluate_on_simulation(landing, truth)
            runs.append(metrics)
            progress(f"{landing.parent.name}: {metrics['faults_detected']} of {metrics['faults']} faults "
                     f"detected, {metrics['defects']} defects, {metrics['incidents']} incidents")
        if args.clean_hours > 0:
            clean_runs = simulate_runs(workdir, topologies, args.seeds[:1], hours=args.clean_hours,
                                       scale=args.scale, faults="none", progress=progress)
            for landing, truth in clean_runs:
                metrics = evaluate_on_simulation(landing, truth)
                metrics["hours"] = args.clean_hours
                clean.append(metrics)
                progress(f"{landing.parent.name}: {metrics['defects']} defects")
    pooled = pooled_figures(runs, clean)
    if args.json:
        print(json.dumps({"pooled": pooled, "runs": runs, "clean_runs": clean}, indent=2, default=str))
    else:
        print(format_pooled(pooled))
    return 0


def main(args: argparse.Namespace | Iterable[str] | None = None) -> int:
    """`qa-assets evaluate defects` (an argparse namespace) or `python -m` (an argument list)."""
    if not isinstance(args, argparse.Namespace):
        parser = argparse.ArgumentParser(
            prog="python -m qa_assets.evaluation.defects",
            description="Measure defect detection, grouping and typing on a simulated run.",
        )
        add_arguments(parser)
        args = parser.parse_args(list(args) if args is not None else None)
    if args.seeds:
        if args.landing or args.simulate:
            print("qa-assets evaluate defects: --seeds simulates its own runs; drop --landing/--simulate or --seeds",
                  file=sys.stderr)
            return 2
        return main_many(args)
    args.hours = 4.0 if args.hours is None else args.hours
    args.faults = args.faults or "default"
    if not args.simulate and not args.landing:  # nothing given: a fresh simulated run in a scratch folder
        import tempfile

        args.simulate = Path(tempfile.mkdtemp(prefix="qa-assets-eval-defects-"))
        print(f"simulating a {args.topology} run ({args.hours:g} h, {args.scale}, seed {args.seed}) in {args.simulate}")
    if args.simulate:
        from qa_assets.simulate import simulate

        summary = simulate(
            args.simulate / "landing",
            topology=args.topology,
            hours=args.hours,
            scale=args.scale,
            seed=args.seed,
            faults=args.faults,
        )
        landing, truth = summary.landing_dir, summary.ground_truth_path
    else:
        landing = args.landing
        truth = args.ground_truth or args.landing.parent / "ground_truth.json"
    metrics = evaluate_on_simulation(landing, truth)
    if args.json:
        print(json.dumps(metrics, indent=2, default=str))
    else:
        print_report(metrics)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
