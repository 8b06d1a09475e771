"""Writing artifacts: one file per item under the artifacts folder, deterministic names, an index frame.

Layout (``<stem>`` = slug of the defect id + a hash of the exact id, see ``stable_stem``)::

    regression_tests/test_<stem>.py     pytest module (regression_tests.render_regression_test)
    probes/<stem>.yaml                  blackbox_exporter + Prometheus probe bundle (probes.render_probe)
    postman/<stem>.postman_collection.json  Postman Collection v2.1 of the replayed requests (postman.postman_collection)
    alerts/<stem>.rules.yaml            Prometheus rule file for the metric symptoms (probes.symptom_rules)
    log_checks/<stem>.yaml              log-absence check + Loki rule (probes.log_absence_check)
    tickets/github/<stem>.json          GitHub create-issue payload (tickets.github_issue_payload)
    tickets/jira/<stem>.json            Jira REST v3 create-issue payload (tickets.jira_issue_payload)

Files are written atomically and only when their content changed, so re-running a partition rewrites
nothing and a reader never sees half a file. The index (``ARTIFACTS``) records every path; a defect whose
artifact could not be rendered gets a row with a null path and the reason in ``detail``. Files of defects
from other partitions are left alone (the folder is shared by all partitions), and defects rejected in
triage get none.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl

from qa_assets.lib.artifacts._common import (
    NotRenderable,
    causes_for,
    require_frame,
    stable_stem,
    top_causes,
)
from qa_assets.lib.artifacts.knowledge_base import resolution_changes
from qa_assets.lib.artifacts.postman import collection_json, postman_collection
from qa_assets.lib.artifacts.probes import (
    SymptomMetrics,
    log_absence_check,
    log_absence_yaml,
    probe_yaml,
    render_probe,
    rules_yaml,
    symptom_rules,
)
from qa_assets.lib.artifacts.regression_tests import (
    DEFAULT_LATENCY_MARGIN,
    DEFAULT_MIN_BUDGET_MS,
    DEFAULT_REPLAY_MIN_BUDGET_MS,
    DEFAULT_RERUNS,
    DEFAULT_SAMPLES,
    example_requests,
    flaky_test_case,
    production_window,
    regression_test_kind,
    render_regression_test,
)
from qa_assets.lib.artifacts.tickets import github_issue_payload, jira_issue_payload

ARTIFACTS: dict[str, pl.DataType] = {
    "defect_id": pl.String,
    # regression_test | probe | postman_collection | alert_rules | log_absence_check | github_issue | jira_issue
    "kind": pl.String,
    "path": pl.String,  # absolute path of the file; null when the artifact could not be rendered
    "format": pl.String,  # FORMATS: pytest | blackbox_exporter+prometheus | postman-collection-v2.1 | ...
    "sha256": pl.String,
    "bytes": pl.Int64,
    "detail": pl.String,  # what the artifact checks, or why there is none
}
KIND_FOLDERS = {
    "regression_test": ("regression_tests", "test_", ".py"),
    "probe": ("probes", "", ".yaml"),
    "postman_collection": ("postman", "", ".postman_collection.json"),
    "alert_rules": ("alerts", "", ".rules.yaml"),
    "log_absence_check": ("log_checks", "", ".yaml"),
    "github_issue": ("tickets/github", "", ".json"),
    "jira_issue": ("tickets/jira", "", ".json"),
}
FORMATS = {
    "regression_test": "pytest",
    "probe": "blackbox_exporter+prometheus",
    "postman_collection": "postman-collection-v2.1",
    "alert_rules": "prometheus-rules",
    "log_absence_check": "qa-assets-log-absence-v1",
    "github_issue": "github-rest",
    "jira_issue": "jira-rest-v3-adf",
}


@dataclass(frozen=True)
class ArtifactSettings:
    """Settings of artifact generation (the Dagster resource fills them from its configuration)."""

    jira_project_key: str = "QA"
    jira_issue_type: str = "Bug"
    probe_base_url: str = "http://{service}"  # {service} is replaced by the service name
    probe_interval: str = "30s"
    probe_timeout: str = "5s"
    blackbox_address: str = "blackbox-exporter:9115"
    latency_margin: float = DEFAULT_LATENCY_MARGIN
    min_budget_ms: float = DEFAULT_MIN_BUDGET_MS  # probes and alerts: they cannot tell network time apart
    replay_min_budget_ms: float = DEFAULT_REPLAY_MIN_BUDGET_MS  # regression tests add measured network time
    samples: int = DEFAULT_SAMPLES
    reruns: int = DEFAULT_RERUNS
    baseline_minutes: float = 60.0
    max_examples: int = 3
    symptom_metrics: SymptomMetrics = SymptomMetrics()
    loki_service_label: str = "service_name"


def artifact_path(out_dir: Path | str, kind: str, defect_id: str) -> Path:
    """Where the ``kind`` artifact of ``defect_id`` lives: the same path on every run."""
    if kind not in KIND_FOLDERS:
        raise ValueError(f"unknown artifact kind {kind!r}; use one of {', '.join(KIND_FOLDERS)}")
    folder, prefix, suffix = KIND_FOLDERS[kind]
    return Path(out_dir) / folder / f"{prefix}{stable_stem(defect_id)}{suffix}"


def write_text_file(path: Path, text: str) -> bool:
    """Write atomically (temporary file + rename); returns False when the file already held ``text``."""
    data = text.encode("utf-8")
    if path.exists() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return True


def _row(defect_id: str, kind: str, path: Path | None, text: str | None, detail: str) -> dict[str, Any]:
    data = None if text is None else text.encode("utf-8")
    return {
        "defect_id": defect_id, "kind": kind, "path": None if path is None else str(path.resolve()),
        "format": FORMATS[kind], "sha256": None if data is None else hashlib.sha256(data).hexdigest(),
        "bytes": None if data is None else len(data), "detail": detail,
    }


def _owners(nodes: pl.DataFrame | None) -> dict[str, str]:
    if nodes is None or nodes.height == 0 or not {"node_type", "name", "owner"} <= set(nodes.columns):
        return {}
    rows = nodes.filter((pl.col("node_type") == "service") & pl.col("owner").is_not_null())
    return {r["name"]: r["owner"] for r in rows.select("name", "owner").to_dicts()}


def write_artifacts(
    out_dir: Path | str,
    defects: pl.DataFrame,
    root_causes: pl.DataFrame,
    spans: pl.DataFrame,
    test_cases: pl.DataFrame,
    *,
    nodes: pl.DataFrame | None = None,
    deployments: pl.DataFrame | None = None,
    settings: ArtifactSettings | None = None,
) -> pl.DataFrame:
    """Render and write every artifact of every defect; returns the index (``ARTIFACTS``).

    Per defect: example requests from its service's failing spans (and from its rank-1 cause's service when
    that is another one), a regression test, a probe (HTTP defects), alerting rules for its metric symptoms,
    a log-absence check (defects with a log template; ``deployments`` lets it name the fix's version), and
    GitHub and Jira payloads that link the other artifacts by their path relative to ``out_dir``."""
    settings = settings or ArtifactSettings()
    defects = require_frame(defects, "defects", ("defect_id", "service", "defect_type", "severity",
                                                 "first_seen", "last_seen"), "defects.defects")
    out = Path(out_dir)
    owners = _owners(nodes)
    require_frame(spans, "spans", ("service", "start_time", "http_method"), "raw.spans")
    # the change that ended a resolved defect, as the knowledge base names it: log-absence checks start there
    fixes = {} if deployments is None or "status" not in defects.columns or root_causes is None else (
        resolution_changes(defects, top_causes(root_causes), deployments, timedelta(minutes=2),
                            timedelta(minutes=15)))
    rows: list[dict[str, Any]] = []
    # a loop per defect: each becomes several files; defects per partition are few
    for defect in defects.sort("defect_id").to_dicts():
        defect_id = str(defect["defect_id"])
        if defect.get("status") == "rejected":  # a person said it is no defect: no ticket, no test
            rows.append(_row(defect_id, "regression_test", None, None, "not rendered: rejected in triage"))
            continue
        causes = causes_for(root_causes, defect_id)
        examples: list[dict[str, Any]] = []
        test_case = None
        if defect.get("defect_type") == "flaky_test":
            test_case = flaky_test_case(test_cases, defect)
        elif defect.get("first_seen") is not None:
            replayed = production_window(spans, defect)  # a defect CI found: its version in production
            examples = example_requests(spans, replayed,
                                        baseline_minutes=settings.baseline_minutes,
                                        max_examples=settings.max_examples)
            cause_service = causes[0].get("service") if causes else None
            if cause_service and cause_service != defect.get("service"):
                seen = {(e["service"], e["method"], e["route"]) for e in examples}
                examples += [e for e in example_requests(spans, replayed, service=cause_service,
                                                         baseline_minutes=settings.baseline_minutes,
                                                         max_examples=settings.max_examples)
                             if (e["service"], e["method"], e["route"]) not in seen]
            if not examples and defect.get("operation"):
                # a defect CI found names its test case exactly
                found = flaky_test_case(test_cases, defect, fuzzy=False)
                test_case = found if found and found["failures"] else None
        linked: dict[str, str] = {}

        test_path = artifact_path(out, "regression_test", defect_id)
        try:
            source = render_regression_test(
                defect, causes, examples, test_case=test_case, latency_margin=settings.latency_margin,
                min_budget_ms=settings.replay_min_budget_ms, samples=settings.samples, reruns=settings.reruns)
            write_text_file(test_path, source)
            rows.append(_row(defect_id, "regression_test", test_path, source, regression_test_kind(source)))
            linked["regression_test"] = os.path.relpath(test_path, out)
        except NotRenderable as reason:
            rows.append(_row(defect_id, "regression_test", None, None, f"not rendered: {reason}"))

        if examples:
            probe_path = artifact_path(out, "probe", defect_id)
            text = probe_yaml(render_probe(
                defect, examples, base_url=settings.probe_base_url, interval=settings.probe_interval,
                timeout=settings.probe_timeout, blackbox_address=settings.blackbox_address,
                latency_margin=settings.latency_margin, min_budget_ms=settings.min_budget_ms))
            write_text_file(probe_path, text)
            rows.append(_row(defect_id, "probe", probe_path, text, f"{len(examples)} route(s)"))
            linked["probe"] = os.path.relpath(probe_path, out)
            try:  # the same requests as the HTTP regression test, for Postman / newman
                collection = postman_collection(defect, causes, examples, latency_margin=settings.latency_margin,
                                                min_budget_ms=settings.replay_min_budget_ms)
                postman_path = artifact_path(out, "postman_collection", defect_id)
                text = collection_json(collection)
                write_text_file(postman_path, text)
                rows.append(_row(defect_id, "postman_collection", postman_path, text,
                                 f"{len(collection['item'])} request(s)"))
                linked["postman_collection"] = os.path.relpath(postman_path, out)
            except NotRenderable:
                pass

        if test_case is None:  # a CI-only defect has no production symptom to alert on
            try:
                rules = symptom_rules(defect, examples, metrics=settings.symptom_metrics,
                                      latency_margin=settings.latency_margin, min_budget_ms=settings.min_budget_ms)
                rules_path = artifact_path(out, "alert_rules", defect_id)
                text = rules_yaml(rules, what=f"Metric-symptom alerts generated by qa-assets for defect {defect_id}")
                write_text_file(rules_path, text)
                alerts = [r["alert"] for g in rules["groups"] for r in g["rules"]]
                rows.append(_row(defect_id, "alert_rules", rules_path, text, ", ".join(alerts)))
                linked["alert_rules"] = os.path.relpath(rules_path, out)
            except NotRenderable:
                pass
        try:
            fix = fixes.get(defect_id)
            check = log_absence_check(defect, None if fix is None else {
                "event_id": fix["resolution_change_id"], "service": fix["on"], "version": fix["version"],
                "timestamp": fix["timestamp"]}, service_label=settings.loki_service_label)
            check_path = artifact_path(out, "log_absence_check", defect_id)
            text = log_absence_yaml(check)
            write_text_file(check_path, text)
            after = check["after"]
            rows.append(_row(defect_id, "log_absence_check", check_path, text,
                             f"template {check['template_id']} after {after['service']} "
                             f"{after['version'] or 'the next deployment'}"))
            linked["log_absence_check"] = os.path.relpath(check_path, out)
        except NotRenderable:
            pass

        owner = owners.get(str(defect.get("service")))
        issue = github_issue_payload(defect, causes, linked, example_requests=examples, test_case=test_case,
                                     owner=owner)
        jira = jira_issue_payload(defect, causes, linked, project_key=settings.jira_project_key,
                                  issue_type=settings.jira_issue_type, example_requests=examples,
                                  test_case=test_case, owner=owner)
        for kind, payload in (("github_issue", issue), ("jira_issue", jira)):
            path = artifact_path(out, kind, defect_id)
            text = json.dumps(payload, indent=2, ensure_ascii=False, sort_keys=False) + "\n"
            write_text_file(path, text)
            rows.append(_row(defect_id, kind, path, text, "create-issue request body"))
    return pl.DataFrame(rows, schema=ARTIFACTS)
