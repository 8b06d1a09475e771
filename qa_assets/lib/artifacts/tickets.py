"""Tracker tickets for a defect: GitHub Issues and Jira payloads with reproducible steps from the evidence.

- ``github_issue_payload``: the JSON body of ``POST /repos/{owner}/{repo}/issues`` (GitHub REST "Create an
  issue"): ``title`` (required), ``body`` (GitHub-flavoured markdown), ``labels``.
- ``jira_issue_payload``: the JSON body of ``POST /rest/api/3/issue`` (Jira Cloud REST v3 "Create issue"):
  ``fields.project.key``, ``fields.issuetype.name``, ``fields.summary``, ``fields.priority.name``,
  ``fields.labels`` and ``fields.description`` as an Atlassian Document Format (ADF) document.
  v3 with ADF was chosen over v2's wiki markup because ADF is structured JSON: telemetry goes into text
  nodes (with a ``code`` mark) and code blocks, so it cannot be read as markup at all, whereas wiki markup
  has no complete escaping rules.

Telemetry in the GitHub body only appears in code spans and fenced blocks (``md_code``/``md_fence``) or as
escaped prose (``md_text``); mentions are broken so a ticket never pings someone named in a log line.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from qa_assets.lib.artifacts._common import (
    ArtifactInputError,
    iso,
    label,
    md_code,
    md_defang,
    md_fence,
    md_text,
    number,
    one_line,
    parse_json,
)
from qa_assets.lib.artifacts.regression_tests import (
    DEFAULT_LATENCY_MARGIN,
    DEFAULT_MIN_BUDGET_MS,
    latency_budget_ms,
)

JIRA_PRIORITY = {"S1": "Highest", "S2": "High", "S3": "Medium", "S4": "Low"}  # Jira's default scheme
_JIRA_KEY = re.compile(r"^[A-Z][A-Z0-9_]{0,9}$")
TITLE_LIMIT = 250  # Jira summaries stop at 255 characters; GitHub titles read best short too
ARTIFACT_NAMES = {
    "regression_test": "Regression test",
    "probe": "Synthetic probe (blackbox_exporter)",
    "postman_collection": "Postman collection (v2.1) of the replayed requests",
    "alert_rules": "Prometheus alerting rules (metric symptoms)",
    "log_absence_check": "Log-absence check (template must not reappear)",
    "github_issue": "GitHub issue payload",
    "jira_issue": "Jira issue payload",
}


def ticket_title(defect: dict[str, Any]) -> str:
    subject = defect.get("title") or f"{defect.get('defect_type') or 'defect'} in {defect.get('service')}"
    return one_line(f"[{defect.get('severity') or 'S?'}] {defect.get('service')}: {subject}", TITLE_LIMIT)


def ticket_labels(defect: dict[str, Any], extra: Sequence[str] = ()) -> list[str]:
    labels = ["qa-assets", "defect", f"severity:{defect.get('severity') or 'unknown'}",
              f"type:{defect.get('defect_type') or 'unknown'}", f"service:{defect.get('service') or 'unknown'}"]
    if defect.get("status") == "regression":
        labels.append("regression")
    labels.extend(extra)
    return list(dict.fromkeys(label(x) for x in labels))


def _artifact_list(artifacts: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None) -> list[tuple[str, str]]:
    """(kind, path) pairs from a {kind: path} mapping or rows with kind and path (the artifact index)."""
    if not artifacts:
        return []
    if isinstance(artifacts, Mapping):
        pairs = [(str(k), str(v)) for k, v in artifacts.items() if v]
    else:
        pairs = [(str(a.get("kind")), str(a.get("path"))) for a in artifacts if a.get("path")]
    return sorted(pairs)


def _regression_path(artifacts: list[tuple[str, str]]) -> str | None:
    return next((p for k, p in artifacts if k == "regression_test"), None)


# --------------------------------------------------------------------------------- the shared content


def _facts(defect: dict[str, Any]) -> list[tuple[str, Any]]:
    facts = [
        ("Defect", defect.get("defect_id")),
        ("Service", defect.get("service")),
        ("Type", defect.get("defect_type")),
        ("Severity", defect.get("severity")),
        ("Status", defect.get("status")),
        ("Classification confidence", number(defect.get("confidence"), 3)),
        ("First seen (UTC)", iso(defect.get("first_seen"))),
        ("Last seen (UTC)", iso(defect.get("last_seen"))),
        ("Operation", defect.get("operation")),
        ("Exception", defect.get("exception_type")),
        ("Errors", defect.get("error_count")),
        ("Affected requests", defect.get("affected_requests")),
        ("Peak error rate", number(defect.get("peak_error_rate"), 4)),
        ("Peak p95 latency (ms)", number(defect.get("peak_latency_p95_ms"), 1)),
        ("Tier", defect.get("tier")),
        ("Incident", defect.get("incident_id")),
        ("Fingerprint", defect.get("fingerprint")),
    ]
    return [(k, v) for k, v in facts if v is not None and v != ""]


def _steps(defect: dict[str, Any], examples: Sequence[dict[str, Any]], artifacts: list[tuple[str, str]],
           test_case: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Reproduction steps as structured items (rendered to markdown and ADF): text parts and commands."""
    steps: list[dict[str, Any]] = []
    test_path = _regression_path(artifacts)
    if test_case:
        failed_on = test_case.get("failed_versions") or test_case.get("versions") or []
        steps.append({"text": ["Check out ", ("code", defect.get("service") or "the service"), " at a version the "
                               "test failed on: ", ("code", ", ".join(failed_on) or "?"), "."]})
        record = (f"it failed {test_case.get('failures')} of {test_case.get('runs')} recorded runs"
                  + (", and passed in others of the same version (flaky)." if test_case.get("flaky") else "."))
        steps.append({"text": ["Run the CI test ", ("code", test_case.get("name")), " (suite ",
                               ("code", test_case.get("suite")), ", class ", ("code", test_case.get("classname")),
                               f") repeatedly: {record}"]})
        if test_case.get("message"):
            steps.append({"text": ["Last failure message:"], "block": str(test_case["message"]), "lang": ""})
    for example in examples:
        path = example.get("path") or example.get("route") or "/"
        method = str(example.get("method") or "GET")
        budget = latency_budget_ms(example, margin=DEFAULT_LATENCY_MARGIN, min_budget_ms=DEFAULT_MIN_BUDGET_MS)
        version = example.get("service_version")
        steps.append({"text": ["Against a deployment of ", ("code", example.get("service")),
                               *([" running version ", ("code", version)] if version else []),
                               ", send ", ("code", f"{method} {example.get('route')}"), ":"],
                      "block": ("curl -sS -o /dev/null -w '%{http_code} %{time_total}s\\n' "
                                f"-X {shlex.quote(method)} \"$QA_TARGET_BASE_URL\"{shlex.quote(str(path))}"),
                      "lang": "sh"})
        expected = "a status below 500" + (f" within {budget:.0f} ms" if budget is not None else "")
        statuses = (f"statuses {example['statuses_seen']}" if example.get("statuses_seen")
                    else "failures without an HTTP status (timeouts or resets)")
        seen = (f"{statuses} in {example.get('failing_count')} requests "
                f"between {example.get('first_failure')} and {example.get('last_failure')} UTC, median "
                f"{example.get('latency_ms')} ms (before the incident: p95 {example.get('baseline_p95_ms')} ms)")
        after: list[Any] = [f"Expected: {expected}. Seen during the defect: {seen}."]
        if example.get("exception_types"):
            after += [" Exceptions: ", ("code", ", ".join(example["exception_types"])), "."]
        if example.get("trace_ids"):
            after += [" Example traces: ", ("code", ", ".join(example["trace_ids"])), "."]
        steps[-1]["after"] = after
    if not examples and defect.get("template"):
        steps.append({"text": ["Run the workload that reaches ", ("code", defect.get("operation") or
                                                                  defect.get("service")),
                               " and look for this log template in its logs (", ("code", "<*>"),
                               " marks variable parts):"],
                      "block": str(defect["template"]), "lang": ""})
    if test_path:
        env = "QA_REPO_DIR=/path/to/checkout" if test_case else (
            "QA_TARGET_BASE_URL=https://staging.example.com" if examples else "QA_TARGET_LOG_PATH=/path/to/logs")
        steps.append({"text": ["Or run the generated regression test (it fails while the defect is present):"],
                      "block": f"{env} python -m pytest {shlex.quote(test_path)} -q", "lang": "sh"})
    return steps


def _cause_rows(root_causes: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for cause in sorted(root_causes, key=lambda c: (c.get("rank") is None, c.get("rank") or 0))[:5]:
        rows.append({
            "rank": cause.get("rank"), "service": cause.get("service"), "cause_kind": cause.get("cause_kind"),
            "change_id": cause.get("change_id"), "confidence": number(cause.get("confidence"), 3),
            "score": number(cause.get("score"), 3),
        })
    return rows


def _evidence_text(defect: dict[str, Any]) -> str | None:
    evidence = parse_json(defect.get("evidence"))
    if evidence is None:
        return None
    return json.dumps(evidence, indent=2, sort_keys=True, default=str, ensure_ascii=False)[:20_000]


# --------------------------------------------------------------------------------- GitHub


def _md_parts(parts: Sequence[Any]) -> str:
    out = []
    for part in parts:
        if isinstance(part, tuple):
            out.append(md_code(part[1]))
        else:
            out.append(md_text(part))
    return "".join(out)


def github_issue_payload(
    defect: dict[str, Any],
    root_causes: Sequence[dict[str, Any]],
    artifacts: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None,
    *,
    example_requests: Sequence[dict[str, Any]] = (),
    test_case: dict[str, Any] | None = None,
    owner: str | None = None,
    extra_labels: Sequence[str] = (),
) -> dict[str, Any]:
    """``{"title", "body", "labels"}`` for GitHub's create-an-issue endpoint."""
    if not defect.get("defect_id"):
        raise ArtifactInputError("defect has no defect_id: pass a row of defects.defects")
    pairs = _artifact_list(artifacts)
    lines = [f"qa-assets detected a defect in {md_code(defect.get('service'))}"
             + (f" (owner {md_code(owner)})" if owner else "")
             + f": severity {md_code(defect.get('severity'))}, type {md_code(defect.get('defect_type'))}.", ""]
    if defect.get("title"):
        lines += [f"**Summary:** {md_code(defect['title'], 300)}", ""]
    lines += ["| | |", "| --- | --- |"]
    lines += [f"| {md_text(k)} | {md_code(v)} |" for k, v in _facts(defect)]
    if defect.get("template"):
        lines += ["", "Log template (`<*>` marks variable parts):", "", md_fence(defect["template"])]
    lines += ["", "## Steps to reproduce", ""]
    steps = _steps(defect, example_requests, pairs, test_case)
    if not steps:
        lines.append("No failing request or CI test was captured; see the evidence below.")
    for number_, step in enumerate(steps, 1):
        lines.append(f"{number_}. {_md_parts(step['text'])}")
        if step.get("block") is not None:
            lines += ["", "   " + md_fence(step["block"], step.get("lang", "")).replace("\n", "\n   "), ""]
        if step.get("after"):
            lines += [f"   {_md_parts(step['after'])}", ""]
    causes = _cause_rows(root_causes)
    lines += ["", "## Likely root cause", ""]
    if causes:
        lines += ["| rank | service | kind | change | confidence |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {c['rank']} | {md_code(c['service'])} | {md_code(c['cause_kind'])} | "
                  f"{md_code(c['change_id']) if c['change_id'] else '—'} | {c['confidence']} |" for c in causes]
        explanation = next((c.get("explanation") for c in root_causes if c.get("rank") == causes[0]["rank"]), None)
        if explanation:
            # markdown from the RCA stage (escaped there); quoted to mark its origin, HTML and mentions defanged
            lines += ["", *("> " + line for line in md_defang(explanation).splitlines())]
    else:
        lines.append("Root-cause analysis named no candidate.")
    if pairs:
        lines += ["", "## Artifacts", ""]
        lines += [f"- {md_text(ARTIFACT_NAMES.get(k, k))}: {md_code(p, 400)}" for k, p in pairs]
    evidence = _evidence_text(defect)
    if evidence:
        lines += ["", "<details><summary>Defect evidence (JSON)</summary>", "", md_fence(evidence, "json"), "",
                  "</details>"]
    lines += ["", f"<sub>Generated by qa-assets. Defect {md_code(defect['defect_id'])}.</sub>"]
    extra = list(extra_labels) + ([f"team:{owner}"] if owner else [])
    return {"title": ticket_title(defect), "body": "\n".join(lines), "labels": ticket_labels(defect, extra)}


# --------------------------------------------------------------------------------- Jira (ADF)


def _adf_text(text: Any, *, code: bool = False, strong: bool = False) -> dict[str, Any] | None:
    value = "" if text is None else str(text)
    if value == "":
        return None  # ADF rejects empty text nodes
    node: dict[str, Any] = {"type": "text", "text": value}
    if code:
        node["marks"] = [{"type": "code"}]  # code combines with no other mark but link
    elif strong:
        node["marks"] = [{"type": "strong"}]
    return node


def _adf_paragraph(parts: Sequence[Any]) -> dict[str, Any]:
    content = []
    for part in parts:
        node = _adf_text(one_line(part[1]), code=True) if isinstance(part, tuple) else _adf_text(part)
        if node:
            content.append(node)
    return {"type": "paragraph", "content": content}


def _adf_heading(text: str, level: int = 3) -> dict[str, Any]:
    return {"type": "heading", "attrs": {"level": level}, "content": [_adf_text(text)]}


def _adf_code_block(text: str, language: str = "") -> dict[str, Any]:
    node: dict[str, Any] = {"type": "codeBlock", "content": [_adf_text(text or " ")]}
    if language:
        node["attrs"] = {"language": language}
    return node


def _adf_list(kind: str, items: Sequence[list[dict[str, Any]]]) -> dict[str, Any]:
    return {"type": kind, "content": [{"type": "listItem", "content": list(item)} for item in items]}


def jira_issue_payload(
    defect: dict[str, Any],
    root_causes: Sequence[dict[str, Any]],
    artifacts: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None,
    *,
    project_key: str,
    issue_type: str = "Bug",
    example_requests: Sequence[dict[str, Any]] = (),
    test_case: dict[str, Any] | None = None,
    priorities: Mapping[str, str] | None = None,
    owner: str | None = None,
    extra_labels: Sequence[str] = (),
) -> dict[str, Any]:
    """``{"fields": {...}}`` for Jira Cloud's REST v3 create-issue endpoint (description in ADF).

    ``project_key`` comes from a setting (e.g. ``QA_JIRA_PROJECT_KEY``); ``priorities`` maps severities to
    the priority names of the Jira site (default: Highest, High, Medium, Low)."""
    if not project_key or not _JIRA_KEY.match(project_key):
        raise ArtifactInputError(
            f"Jira project key {project_key!r} is not a project key (upper-case letters, digits, _; "
            "starting with a letter, e.g. QA): set the Jira project key setting"
        )
    if not defect.get("defect_id"):
        raise ArtifactInputError("defect has no defect_id: pass a row of defects.defects")
    pairs = _artifact_list(artifacts)
    content: list[dict[str, Any]] = [_adf_paragraph([
        "qa-assets detected a defect in ", ("code", defect.get("service")),
        *([" (owner ", ("code", owner), ")"] if owner else []),
        ": severity ", ("code", defect.get("severity")), ", type ", ("code", defect.get("defect_type")), ".",
    ])]
    if defect.get("title"):
        content.append(_adf_paragraph(["Summary: ", ("code", defect["title"])]))
    content.append(_adf_list("bulletList", [[_adf_paragraph([f"{k}: ", ("code", v)])] for k, v in _facts(defect)]))
    if defect.get("template"):
        content += [_adf_paragraph(["Log template (<*> marks variable parts):"]),
                    _adf_code_block(str(defect["template"]))]
    content.append(_adf_heading("Steps to reproduce"))
    steps = _steps(defect, example_requests, pairs, test_case)
    if steps:
        items = []
        for step in steps:
            item = [_adf_paragraph(step["text"])]
            if step.get("block") is not None:
                item.append(_adf_code_block(step["block"], step.get("lang", "")))
            if step.get("after"):
                item.append(_adf_paragraph(step["after"]))
            items.append(item)
        content.append(_adf_list("orderedList", items))
    else:
        content.append(_adf_paragraph(["No failing request or CI test was captured; see the evidence below."]))
    content.append(_adf_heading("Likely root cause"))
    causes = _cause_rows(root_causes)
    if causes:
        content.append(_adf_list("orderedList", [[_adf_paragraph([
            ("code", c["service"]), " — ", ("code", c["cause_kind"]),
            *([", change ", ("code", c["change_id"])] if c["change_id"] else []),
            f", confidence {c['confidence']}",
        ])] for c in causes]))
    else:
        content.append(_adf_paragraph(["Root-cause analysis named no candidate."]))
    if pairs:
        content.append(_adf_heading("Artifacts"))
        content.append(_adf_list("bulletList", [[_adf_paragraph([f"{ARTIFACT_NAMES.get(k, k)}: ", ("code", p)])]
                                                for k, p in pairs]))
    evidence = _evidence_text(defect)
    if evidence:
        content += [_adf_heading("Defect evidence (JSON)"), _adf_code_block(evidence, "json")]
    priority = (priorities or JIRA_PRIORITY).get(str(defect.get("severity")), "Medium")
    extra = list(extra_labels) + ([f"team:{owner}"] if owner else [])
    return {
        "fields": {
            "project": {"key": project_key},
            "issuetype": {"name": issue_type},
            "summary": ticket_title(defect),
            "description": {"type": "doc", "version": 1, "content": content},
            "priority": {"name": priority},
            "labels": ticket_labels(defect, extra),
        }
    }
