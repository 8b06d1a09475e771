"""The qa_artifacts stage's domain logic: regression tests, probes, tickets, release gate, knowledge base, report.

- `regression_tests`: `example_requests(spans, defect)`, `production_window(spans, defect)` (a CI
  defect's version in production), `flaky_test_case(test_cases, defect)`,
  `render_regression_test(defect, root_causes, example_requests)` -> pytest module source.
- `probes`: `render_probe(defect, example_requests)` -> blackbox_exporter/Prometheus bundle; `probe_yaml`;
  `symptom_rules(defect, example_requests)` -> Prometheus rule file; `log_absence_check(defect, fix)` and
  `log_absence_violations(check, log_events, deployments)` (formats in docs/probes.md).
- `postman`: `postman_collection(defect, root_causes, example_requests)` -> Postman Collection v2.1 (a dict);
  `collection_json`.
- `tickets`: `github_issue_payload(...)`, `jira_issue_payload(..., project_key=...)`.
- `release_gate`: `release_readiness(deployments, defects, root_causes, windows, test_cases, policy=GatePolicy())`
  -> `RELEASE_READINESS` frame.
- `knowledge_base`: `knowledge_base(defects, root_causes, feedback, artifact_paths)` -> `KNOWLEDGE_BASE` frame.
- `report`: `kpis(defects, root_causes, deployments, test_cases, feedback)`, `render_report_files(kpis, frames,
  out_dir)` -> report.md + self-contained report.html (`render_report` returns the markdown path).
- `writer`: `write_artifacts(out_dir, defects, root_causes, spans, test_cases)` -> `ARTIFACTS` index frame.
- `delivery`: the ticket outbox (`OUTBOX`): `review_verdicts`, `plan_outbox`, `deliver_outbox` (GitHub/Jira
  create-then-update with retries), `ticket_decisions` for the decision log.
"""

from qa_assets.lib.artifacts._common import ArtifactInputError, NotRenderable, feedback_events
from qa_assets.lib.artifacts.knowledge_base import KNOWLEDGE_BASE, empty_knowledge_base, knowledge_base
from qa_assets.lib.artifacts.postman import collection_json, postman_collection
from qa_assets.lib.artifacts.probes import (
    SymptomMetrics,
    log_absence_check,
    log_absence_violations,
    log_absence_yaml,
    probe_yaml,
    promql_string,
    render_probe,
    rules_yaml,
    symptom_rules,
)
from qa_assets.lib.artifacts.regression_tests import (
    example_requests,
    flaky_test_case,
    latency_budget_ms,
    production_window,
    regression_test_kind,
    render_regression_test,
    replay_plan,
    request_cases,
    runner_command,
)
from qa_assets.lib.artifacts.release_gate import (
    RELEASE_READINESS,
    GatePolicy,
    empty_release_readiness,
    release_readiness,
)
from qa_assets.lib.artifacts.report import kpis, mttr_minutes, render_report, render_report_files
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
    "SymptomMetrics",
    "artifact_path",
    "collection_json",
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
    "log_absence_check",
    "log_absence_violations",
    "log_absence_yaml",
    "mttr_minutes",
    "postman_collection",
    "probe_yaml",
    "promql_string",
    "production_window",
    "regression_test_kind",
    "release_readiness",
    "render_probe",
    "render_regression_test",
    "render_report",
    "replay_plan",
    "request_cases",
    "render_report_files",
    "rules_yaml",
    "runner_command",
    "symptom_rules",
    "write_artifacts",
    "write_text_file",
]
