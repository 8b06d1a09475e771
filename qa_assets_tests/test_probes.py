"""Probes beside the regression tests: Prometheus rule files for metric symptoms and log-absence checks, as
files the tools load (yaml-loaded here and checked against the rule-file structure), with telemetry escaped
in PromQL and LogQL."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
import yaml

from qa_assets.lib import artifacts as qa
from qa_assets.lib.artifacts.probes import template_regex
from qa_assets.lib.templates.events import LOG_EVENTS
from qa_assets.lib.ingest.tables import conform
from qa_assets_tests.test_artifacts import (
    HOSTILE,
    T0,
    cause,
    causes_frame,
    ci_frame,
    defect,
    defects_frame,
    deployment,
    deployments_frame,
    incident_spans,
)

_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
# PromQL/LogQL double-quoted strings: any escaped character or anything but a quote or backslash
_STRING = r'"((?:\\.|[^"\\])*)"'


def assert_rule_file(document: dict) -> list[dict]:
    """What Prometheus (and Loki's ruler) require of a rule file; returns its rules."""
    assert set(document) == {"groups"} and document["groups"]
    names = [group["name"] for group in document["groups"]]
    assert len(set(names)) == len(names)
    rules = []
    for group in document["groups"]:
        assert set(group) <= {"name", "interval", "limit", "rules"} and group["rules"]
        for rule in group["rules"]:
            assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}
            assert _NAME.match(rule["alert"]) and isinstance(rule["expr"], str) and rule["expr"]
            assert _DURATION.match(rule["for"])
            for mapping in (rule["labels"], rule["annotations"]):
                assert all(_NAME.match(k) and isinstance(v, str) for k, v in mapping.items())
            assert "{{" not in str(rule["annotations"])  # no Go template action from telemetry
            assert "{{" not in str(rule["labels"]).replace('{{ "{{" }}', "")  # only the literal "{{"
            rules.append(rule)
    return rules


def unescape(literal: str) -> str:
    """A Go-escaped string literal's value."""
    return re.sub(r"\\(x[0-9a-f]{2}|.)", lambda m: {"n": "\n", "r": "\r", "t": "\t"}.get(
        m.group(1), chr(int(m.group(1)[1:], 16)) if m.group(1).startswith("x") else m.group(1)), literal)


def expanded(label_value: str) -> str:
    """A rule label value after Prometheus's template expansion (the only action we write is the literal)."""
    return label_value.replace('{{ "{{" }}', "{{")


def label_values(expr: str, label: str) -> set[str]:
    return {unescape(v) for v in re.findall(rf"\b{label}={_STRING}", expr)}


# ------------------------------------------------------------------------------------ symptom alerts


def test_error_defects_get_an_error_ratio_alert_on_their_service():
    d = defect(peak_error_rate=0.4)
    rules = assert_rule_file(yaml.safe_load(qa.rules_yaml(qa.symptom_rules(d), what="x")))
    (rule,) = rules
    assert rule["alert"] == "QaSymptomErrorRatio" and rule["for"] == "5m"
    assert rule["expr"] == (
        'sum(rate(http_server_request_duration_seconds_count{job="catalog",http_response_status_code=~"5.."}[5m]))'
        ' / sum(rate(http_server_request_duration_seconds_count{job="catalog"}[5m])) > 0.2')
    assert rule["labels"] == {"severity": "critical", "defect_id": "d-1", "service": "catalog"}


def test_latency_and_resource_defects_get_their_own_symptoms():
    examples = qa.example_requests(incident_spans(), defect())
    slow = qa.symptom_rules(defect(defect_type="latency_regression", peak_error_rate=0.0), examples)
    (latency,) = assert_rule_file(slow)
    budget = max(qa.latency_budget_ms(e) for e in examples)
    assert latency["expr"].endswith(f"> {budget / 1000:.3f}") and "histogram_quantile(0.95" in latency["expr"]
    without_routes = assert_rule_file(qa.symptom_rules(defect(defect_type="latency_regression", peak_error_rate=0.0,
                                                               peak_latency_p95_ms=2000.0)))
    assert without_routes[0]["expr"].endswith("> 1.000")  # half the incident's peak p95
    leak = assert_rule_file(qa.symptom_rules(defect(defect_type="resource_exhaustion", peak_error_rate=None)))
    assert [r["alert"] for r in leak] == ["QaSymptomMemoryGrowth", "QaSymptomRestarts"]
    assert "predict_linear(process_memory_usage_bytes{job=\"catalog\"}[30m], 3600)" in leak[0]["expr"]
    micrometer = qa.SymptomMetrics(service_label="service", request_duration="http_server_requests_seconds",
                                   status_label="status")
    (rule,) = assert_rule_file(qa.symptom_rules(defect(), metrics=micrometer))
    assert 'http_server_requests_seconds_count{service="catalog",status=~"5.."}' in rule["expr"]
    with pytest.raises(qa.NotRenderable, match="no metric symptom"):
        qa.symptom_rules(defect(defect_type="flaky_test", peak_error_rate=None))
    with pytest.raises(qa.ArtifactInputError, match="not a Prometheus label name"):
        qa.symptom_rules(defect(), metrics=qa.SymptomMetrics(service_label='job"}'))


@pytest.mark.parametrize("service", [HOSTILE, 'a"} or vector(1) # ', "back\\slash\\", "tab\there\x01",
                                     "{{{x}}} {{ .Value }}"])
def test_service_names_are_escaped_in_promql(service: str):
    for kind in ("error_spike", "latency_regression", "resource_exhaustion"):
        d = defect(service=service, defect_type=kind, peak_latency_p95_ms=900.0)
        for rule in assert_rule_file(yaml.safe_load(qa.rules_yaml(qa.symptom_rules(d), what=service))):
            # the label value is exactly the service, and nothing else follows it but PromQL we wrote
            assert label_values(rule["expr"], "job") == {service}
            skeleton = re.sub(_STRING, '"S"', rule["expr"])
            assert "vector(1)" not in skeleton and "#" not in skeleton and "\n" not in rule["expr"]
            assert expanded(rule["labels"]["service"]) == service  # exact after template expansion


def test_promql_string_uses_go_escapes():
    assert qa.promql_string('a"b\\c\nd\x00') == '"a\\"b\\\\c\\nd\\x00"'
    assert unescape(qa.promql_string(HOSTILE)[1:-1]) == HOSTILE


# ------------------------------------------------------------------------------------ log absence


def template_defect(**overrides) -> dict:
    return defect(**{"defect_id": "d-log", "defect_type": "new_exception", "template_id": "T42",
                     "template": "payment <*> failed: card (<*>) [declined]?", "status": "resolved",
                     "last_seen": T0 + timedelta(minutes=10), **overrides})


def events(*rows: tuple) -> pl.DataFrame:
    return conform(pl.DataFrame([{"timestamp": at, "service": service, "template_id": tid, "template": text,
                                  "source_file": "app.log", "source_line": i + 1}
                                 for i, (at, service, tid, text) in enumerate(rows)]), LOG_EVENTS)


def test_log_absence_check_names_template_service_and_the_fix_version():
    fix = deployment("fix-1", "catalog", "1.5.1", T0 + timedelta(minutes=12))
    check = qa.log_absence_check(template_defect(), fix)
    loaded = yaml.safe_load(qa.log_absence_yaml(check))
    assert loaded["kind"] == "qa-assets/log-absence/v1"
    assert (loaded["service"], loaded["template_id"], loaded["template"]) == (
        "catalog", "T42", "payment <*> failed: card (<*>) [declined]?")
    assert loaded["after"] == {"service": "catalog", "version": "1.5.1", "change_id": "fix-1",
                               "deployed_at": "2026-03-04T10:12:00", "not_before": "2026-03-04T10:10:00",
                               "grace_minutes": 5.0}
    (rule,) = assert_rule_file(loaded["loki_rules"])
    assert label_values(rule["expr"], "service_name") == {"catalog"}
    regex = unescape(re.search(r"\|~ " + _STRING, rule["expr"]).group(1))
    assert regex == template_regex(loaded["template"])
    assert re.fullmatch(regex, "payment 42 failed: card (visa) [declined]?")
    assert not re.fullmatch(regex, "payment 42 failed: card visa declined")
    with pytest.raises(qa.NotRenderable, match="no log template"):
        qa.log_absence_check(defect(), None)


def test_log_absence_check_passes_fails_or_waits_for_the_fix():
    check = qa.log_absence_check(template_defect(), None)  # no fix known when the check was written
    template = "payment <*> failed: card (<*>) [declined]?"
    deploys = deployments_frame(deployment("old", "catalog", "1.4.0", T0 - timedelta(hours=1)),
                                deployment("fix", "catalog", "1.5.1", T0 + timedelta(minutes=20)))
    before_fix = events((T0 + timedelta(minutes=15), "catalog", "T42", template),
                        (T0 + timedelta(minutes=22), "catalog", "T42", template))  # in flight during the rollout
    assert qa.log_absence_violations(check, before_fix, deploys.head(1))["status"] == "pending"
    result = qa.log_absence_violations(check, before_fix, deploys)
    assert (result["status"], result["version"], result["violations"].height) == ("pass", "1.5.1", 0)
    back = pl.concat([before_fix, events((T0 + timedelta(minutes=30), "catalog", "T42", template),
                                         (T0 + timedelta(minutes=31), "search", "T42", template))])
    result = qa.log_absence_violations(check, back, deploys)
    assert result["status"] == "fail"
    assert result["violations"].select("timestamp", "service").rows() == [(T0 + timedelta(minutes=30), "catalog")]
    named = qa.log_absence_check(template_defect(), deployment("fix", "catalog", "1.5.1", T0 + timedelta(minutes=20)))
    assert qa.log_absence_violations(named, back)["status"] == "fail"  # the fix is in the check itself


@pytest.mark.parametrize("text", [HOSTILE, 'x"} |= "" or {a="b', "\\d+ <*> \\"])
def test_telemetry_is_escaped_in_logql(text: str):
    check = qa.log_absence_check(template_defect(service=text, template=f"{text} <*> end"), None)
    (rule,) = assert_rule_file(yaml.safe_load(qa.log_absence_yaml(check))["loki_rules"])
    assert label_values(rule["expr"], "service_name") == {text}
    skeleton = re.sub(_STRING, '"S"', rule["expr"])
    assert skeleton == 'sum(count_over_time({service_name="S"} |~ "S" [5m])) > 0'
    regex = unescape(re.search(r"\|~ " + _STRING, rule["expr"]).group(1))
    assert re.fullmatch(regex, f"{text} anything at all end", re.S)


# ------------------------------------------------------------------------------------ written files


def test_write_artifacts_adds_rule_files_and_log_checks(tmp_path: Path):
    out = tmp_path / "artifacts"
    defects = defects_frame(defect(), template_defect())
    causes = causes_frame(cause("d-1", "c-2", "catalog"), cause("d-log", None, "catalog"))
    deploys = deployments_frame(deployment("fix", "catalog", "1.5.1", T0 + timedelta(minutes=9)))
    index = qa.write_artifacts(out, defects, causes, incident_spans(), ci_frame(), deployments=deploys)
    rows = {(r["defect_id"], r["kind"]): r for r in index.to_dicts()}
    rules_path = Path(rows[("d-1", "alert_rules")]["path"])
    assert rules_path.name.endswith(".rules.yaml") and rules_path.parent.name == "alerts"
    assert_rule_file(yaml.safe_load(rules_path.read_text(encoding="utf-8")))
    check = yaml.safe_load(Path(rows[("d-log", "log_absence_check")]["path"]).read_text(encoding="utf-8"))
    assert check["after"]["version"] == "1.5.1"  # the deploy that ended it, as the knowledge base finds it
    assert ("d-1", "log_absence_check") not in rows  # no template, no check
    issue = Path(rows[("d-log", "github_issue")]["path"]).read_text(encoding="utf-8")
    assert "Log-absence check" in issue and "Prometheus alerting rules" in issue
