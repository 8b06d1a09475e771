"""Writing artifacts: one file per item under the artifacts folder, deterministic names, an index frame.

Layout (``<stem>`` = slug of the defect id + a hash of the exact id, see ``stable_stem``)::

    regression_tests/test_<stem>.py     pytest module (regression_tests.render_regression_test)
    probes/<stem>.yaml                  blackbox_exporter + Prometheus probe bundle (probes.render_probe)
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
from pathlib import Path
from typing import Any

import polars as pl

from qa_assets.lib.artifacts._common import (
    NotRenderable,
    causes_for,
    require_frame,
    stable_stem,
)
from qa_assets.lib.artifacts.probes import probe_yaml, render_probe
from qa_assets.lib.artifacts.regression_tests import (
    DEFAULT_LATENCY_MARGIN,
    DEFAULT_MIN_BUDGET_MS,
    DEFAULT_RERUNS,
    DEFAULT_SAMPLES,
    example_requests,
    flaky_test_case,
    regression_test_kind,
    render_regression_test,
)
from qa_assets.lib.artifacts.tickets import github_issue_payload, jira_issue_payload

ARTIFACTS: dict[str, pl.DataType] = {
    "defect_id": pl.String,
    "kind": pl.String,  # regression_test | probe | github_issue | jira_issue
    "path": pl.String,  # absolute path of the file; null when the artifact could not be rendered
    "format": pl.String,  # pytest | blackbox_exporter+prometheus | github-rest | jira-rest-v3-adf
    "sha256": pl.String,
    "bytes": pl.Int64,
    "detail": pl.String,  # what the artifact checks, or why there is none
}
KIND_FOLDERS = {
    "regression_test": ("regression_tests", "test_", ".py"),
    "probe": ("probes", "", ".yaml"),
    "github_issue": ("tickets/github", "", ".json"),
    "jira_issue": ("tickets/jira", "", ".json"),
}
FORMATS = {
    "regression_test": "pytest",
    "probe": "blackbox_exporter+prometheus",
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
    min_budget_ms: float = DEFAULT_MIN_BUDGET_MS
    samples: int = DEFAULT_SAMPLES
    reruns: int = DEFAULT_RERUNS
    baseline_minutes: float = 60.0
    max_examples: int = 3


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
    settings: ArtifactSettings | None = None,
) -> pl.DataFrame:
    """Render and write every artifact of every defect; returns the index (``ARTIFACTS``).

    Per defect: example requests from its service's failing spans (and from its rank-1 cause's service when
    that is another one), a regression test, a probe (HTTP defects), and GitHub and Jira payloads that link
    the other artifacts by their path relative to ``out_dir``."""
    settings = settings or ArtifactSettings()
    defects = require_frame(defects, "defects", ("defect_id", "service", "defect_type", "severity",
                                                 "first_seen", "last_seen"), "defects.defects")
    out = Path(out_dir)
    owners = _owners(nodes)
    require_frame(spans, "spans", ("service", "start_time", "http_method"), "raw.spans")
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
            examples = example_requests(spans, defect,
                                        baseline_minutes=settings.baseline_minutes,
                                        max_examples=settings.max_examples)
            cause_service = causes[0].get("service") if causes else None
            if cause_service and cause_service != defect.get("service"):
                seen = {(e["service"], e["method"], e["route"]) for e in examples}
                examples += [e for e in example_requests(spans, defect, service=cause_service,
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
                min_budget_ms=settings.min_budget_ms, samples=settings.samples, reruns=settings.reruns)
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
