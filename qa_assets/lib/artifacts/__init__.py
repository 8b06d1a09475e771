"""The qa_artifacts stage's domain logic: regression tests, probes, tickets, release gate, knowledge base, report.

- `regression_tests`: `example_requests(spans, defect)`, `flaky_test_case(test_cases, defect)`,
  `render_regression_test(defect, root_causes, example_requests)` -> pytest module source.
- `probes`: `render_probe(defect, example_requests)` -> blackbox_exporter/Prometheus bundle; `probe_yaml`.
- `tickets`: `github_issue_payload(...)`, `jira_issue_payload(..., project_key=...)`.
- `release_gate`: `release_readiness(deployments, defects, root_causes, windows, test_cases, policy=GatePolicy())`
  -> `RELEASE_READINESS` frame.
- `knowledge_base`: `knowledge_base(defects, root_causes, feedback, artifact_paths)` -> `KNOWLEDGE_BASE` frame.
- `report`: `kpis(defects, root_causes, deployments, test_cases, feedback)`, `render_report(kpis, frames, out_dir)`.
- `writer`: `write_artifacts(out_dir, defects, root_causes, spans, test_cases)` -> `ARTIFACTS` index frame.
"""

from qa_assets.lib.artifacts._common import ArtifactInputError, NotRenderable, feedback_events
from qa_assets.lib.artifacts.knowledge_base import KNOWLEDGE_BASE, empty_knowledge_base, knowledge_base
from qa_assets.lib.artifacts.probes import probe_yaml, render_probe
from qa_assets.lib.artifacts.regression_tests import (
    example_requests,
    flaky_test_case,
    latency_budget_ms,
    regression_test_kind,
    render_regression_test,
    runner_command,
)
from qa_assets.lib.artifacts.release_gate import (
    RELEASE_READINESS,
    GatePolicy,
    empty_release_readiness,
    release_readiness,
)
from qa_assets.lib.artifacts.report import kpis, mttr_minutes, render_report
from qa_assets.lib.artifacts.tickets import github_issue_payload, jira_issue_payload
from qa_assets.lib.artifacts.writer import (
    ARTIFACTS,
    ArtifactSettings,
    artifact_path,
    write_artifacts,
    write_text_file,
)

__all__ = [
    "ARTIFACTS",
    "KNOWLEDGE_BASE",
    "RELEASE_READINESS",
    "ArtifactInputError",
    "ArtifactSettings",
    "GatePolicy",
    "NotRenderable",
    "artifact_path",
    "empty_knowledge_base",
    "empty_release_readiness",
    "example_requests",
    "feedback_events",
    "flaky_test_case",
    "github_issue_payload",
    "jira_issue_payload",
    "knowledge_base",
    "kpis",
    "latency_budget_ms",
    "mttr_minutes",
    "probe_yaml",
    "regression_test_kind",
    "release_readiness",
    "render_probe",
    "render_regression_test",
    "render_report",
    "runner_command",
    "write_artifacts",
    "write_text_file",
]
