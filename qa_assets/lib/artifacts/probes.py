"""Synthetic-monitoring probes for a defect's failing routes, as Prometheus blackbox_exporter configuration.

Why blackbox_exporter: it is the standard synthetic monitor of Prometheus shops. It probes continuously at
the scrape interval, its results are plain metrics (``probe_success``, ``probe_duration_seconds``,
``probe_http_status_code``) that existing alerting and dashboards use, and the whole probe is declarative
YAML a platform team reviews and merges. (k6 fits load tests better; it needs a scheduler to monitor.)

A probe is three fragments, each in its tool's own format, kept in one file per defect:

- ``blackbox_exporter.modules``: one ``http`` prober module per route (method, accepted status codes = the
  statuses < 500 the route answered before the incident, timeout), for ``blackbox.yml``;
- ``prometheus.scrape_configs``: one job per route probing the target URL at the interval, with the standard
  blackbox relabelling, for ``prometheus.yml``;
- ``prometheus.rule_groups``: alerts when a probe fails and when its duration exceeds the latency budget
  (pre-incident p95 × margin), for a rules file.

Beside the probe, two more checks per defect (docs/probes.md describes all three formats):

- ``symptom_rules``: a Prometheus rule file (``groups[].rules[]``) alerting on the defect's metric symptoms in
  its service (error ratio, p95 latency, memory growth, restarts), from OpenTelemetry metrics as Prometheus
  names them (``SymptomMetrics``);
- ``log_absence_check``: "template T must not reappear in service S after version V", evaluated over
  ``signals.log_events`` by ``log_absence_violations`` and carried as a Loki ruler alert too.

Telemetry reaches YAML only through the YAML serializer (quoted as needed); it reaches PromQL and LogQL only
as escaped string literals (``promql_string``; probe job names are slugs). Prometheus expands rule labels and
annotations as Go templates: in labels ``{{`` is written as a template literal (``template_literal``, the
value stays exact), in annotations it is broken up.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import polars as pl
import yaml

from qa_assets.lib.artifacts._common import ArtifactInputError, NotRenderable, one_line, require_frame, slug
from qa_assets.lib.artifacts.regression_tests import (
    DEFAULT_LATENCY_MARGIN,
    DEFAULT_MIN_BUDGET_MS,
    latency_budget_ms,
)
from qa_assets.lib.templates.miner import VARIABLE

_METHOD = re.compile(r"^[A-Z]{1,16}$")
_DURATION = re.compile(r"^\d+(ms|s|m|h)$")
SEVERITY_ALERT = {"S1": "critical", "S2": "critical", "S3": "warning", "S4": "info"}


def _seconds(duration: str) -> float:
    value, unit = re.match(r"^(\d+)(ms|s|m|h)$", duration).groups()
    return int(value) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def template_literal(value: Any) -> str:
    """A rule label value that Prometheus's Go-template expansion turns back into ``value`` exactly: every
    ``{{`` becomes the action ``{{ "{{" }}`` (label values are expanded like annotations)."""
    return ("" if value is None else str(value)).replace("{{", '{{ "{{" }}')


def _template_safe(text: Any, limit: int = 300) -> str:
    # Prometheus expands annotations as Go templates: telemetry must not open an action ("{{{" needs two passes)
    text = one_line(text, limit)
    while "{{" in text or "}}" in text:
        text = text.replace("{{", "{ {").replace("}}", "} }")
    return text


def probe_target(base_url: str, service: str | None, path: str) -> str:
    """The probed URL: ``base_url`` with ``{service}`` replaced by the service name, then the path
    (placeholders such as ``{id}`` filled with ``1``, everything percent-encoded)."""
    base = base_url.replace("{service}", quote(slug(service, 63).replace("_", "-"), safe="")).rstrip("/")
    concrete = re.sub(r"\{[^/{}]+\}|(?<=/):[A-Za-z_][A-Za-z0-9_]*", "1", path or "/")
    if not concrete.startswith("/"):
        concrete = "/" + concrete
    return base + quote(concrete, safe="/%:@!$&'()*+,;=-._~")


def render_probe(
    defect: dict[str, Any],
    example_requests: Sequence[dict[str, Any]],
    *,
    base_url: str = "http://{service}",
    interval: str = "30s",
    timeout: str = "5s",
    blackbox_address: str = "blackbox-exporter:9115",
    latency_margin: float = DEFAULT_LATENCY_MARGIN,
    min_budget_ms: float = DEFAULT_MIN_BUDGET_MS,
) -> dict[str, Any]:
    """The probe bundle for one defect (see the module docstring); ``probe_yaml`` writes it.

    ``base_url`` defaults to the in-cluster address convention ``http://<service>``; ``{service}`` in it is
    replaced per route. Raises ``NotRenderable`` when the defect has no failing HTTP request."""
    for name, value in (("interval", interval), ("timeout", timeout)):
        if not _DURATION.match(value):
            raise ArtifactInputError(f"probe {name} {value!r} is not a Prometheus duration like 30s or 1m")
    if _seconds(timeout) > _seconds(interval):
        raise ArtifactInputError(f"probe timeout {timeout} exceeds the interval {interval}: Prometheus rejects it")
    defect_id = defect.get("defect_id")
    if not defect_id:
        raise ArtifactInputError("defect has no defect_id: pass a row of defects.defects")
    stem = slug(defect_id, 40)
    modules: dict[str, Any] = {}
    jobs: list[dict[str, Any]] = []
    rules: list[dict[str, Any]] = []
    severity = SEVERITY_ALERT.get(str(defect.get("severity")), "warning")
    for index, example in enumerate(example_requests, 1):
        method = str(example.get("method") or "").upper()
        route = example.get("route")
        if not _METHOD.match(method) or not route:
            continue
        name = f"qa_{stem}_{index}"
        http: dict[str, Any] = {
            "method": method,
            "valid_status_codes": sorted({int(s) for s in example.get("baseline_statuses") or [] if int(s) < 500}),
            "preferred_ip_protocol": "ip4",
            "headers": {"User-Agent": "qa-assets-probe/1"},
        }
        if not http["valid_status_codes"]:
            del http["valid_status_codes"]  # blackbox's default: any 2xx
        if method in ("POST", "PUT", "PATCH"):
            http["headers"]["Content-Type"] = "application/json"
            http["body"] = "{}"
        modules[name] = {"prober": "http", "timeout": timeout, "http": http}
        target = probe_target(base_url, example.get("service") or defect.get("service"),
                              example.get("path") or str(route))
        job = name.replace("_", "-")
        jobs.append({
            "job_name": job,
            "scrape_interval": interval,
            "scrape_timeout": timeout,
            "metrics_path": "/probe",
            "params": {"module": [name]},
            "static_configs": [{
                "targets": [target],
                "labels": {
                    "defect_id": str(defect_id),
                    "service": str(example.get("service") or defect.get("service") or ""),
                    "route": f"{method} {route}",
                },
            }],
            "relabel_configs": [
                {"source_labels": ["__address__"], "target_label": "__param_target"},
                {"source_labels": ["__param_target"], "target_label": "instance"},
                {"target_label": "__address__", "replacement": blackbox_address},
            ],
        })
        what = _template_safe(f"{method} {route} on {example.get('service') or defect.get('service')}")
        rules.append({
            "alert": "QaProbeFailed",
            "expr": f'probe_success{{job="{job}"}} == 0',
            "for": "2m",
            "labels": {"severity": severity, "defect_id": template_literal(defect_id)},
            "annotations": {
                "summary": f"{what} fails again (regression of defect {_template_safe(defect_id, 80)})",
                "description": _template_safe(
                    "The synthetic probe gets no accepted answer. During the defect the route failed "
                    f"{example.get('failing_count')} requests"
                    + (f" with statuses {example['statuses_seen']}." if example.get("statuses_seen")
                       else " without an HTTP status (timeouts or resets).")
                ),
            },
        })
        budget = latency_budget_ms(example, margin=latency_margin, min_budget_ms=min_budget_ms)
        if budget is not None:
            rules.append({
                "alert": "QaProbeSlow",
                "expr": f'probe_duration_seconds{{job="{job}"}} > {budget / 1000.0:.3f}',
                "for": "5m",
                "labels": {"severity": "warning", "defect_id": template_literal(defect_id)},
                "annotations": {
                    "summary": f"{what} slower than its budget of {budget:.0f} ms",
                    "description": _template_safe(
                        f"Budget = pre-incident p95 {example.get('baseline_p95_ms')} ms × {latency_margin:g} "
                        f"(at least {min_budget_ms:g} ms); during the defect the route took "
                        f"{example.get('latency_ms')} ms."
                    ),
                },
            })
    if not modules:
        raise NotRenderable(f"defect {defect_id!r}: no failing HTTP request to probe")
    return {
        "defect_id": str(defect_id),
        "service": defect.get("service"),
        "blackbox_exporter": {"modules": modules},
        "prometheus": {
            "scrape_configs": jobs,
            "rule_groups": {"groups": [{"name": f"qa-probe-{stem.replace('_', '-')}", "rules": rules}]},
        },
    }


def probe_yaml(probe: dict[str, Any]) -> str:
    """The probe bundle as YAML, with a header saying where each fragment goes."""
    header = (
        "# Synthetic-monitoring probe generated by qa-assets for defect "
        f"{one_line(probe.get('defect_id'), 120)}\n"
        "# blackbox_exporter.modules -> merge into blackbox.yml `modules:`\n"
        "# prometheus.scrape_configs -> append to prometheus.yml `scrape_configs:`\n"
        "# prometheus.rule_groups    -> a rules file listed in prometheus.yml `rule_files:`\n"
    )
    body = yaml.safe_dump(
        {k: probe[k] for k in ("defect_id", "service", "blackbox_exporter", "prometheus")},
        sort_keys=False, allow_unicode=True, width=120,
    )
    return header + body


# ------------------------------------------------------------------------------ metric symptoms

ERROR_TYPES = ("error_spike", "availability", "new_exception", "dependency_failure", "config_error",
               "data_validation")


@dataclass(frozen=True)
class SymptomMetrics:
    """Where the symptom alerts look. The defaults are the OpenTelemetry semantic-convention metrics as
    Prometheus names them when it ingests OTLP (or scrapes the Collector's ``prometheus`` exporter):
    ``http.server.request.duration`` (seconds) → ``http_server_request_duration_seconds``, ``service.name``
    → ``job``. Other naming schemes (Micrometer's ``http_server_requests_seconds``, a ``service`` label)
    are settings (``ArtifactSettings``)."""

    service_label: str = "job"
    request_duration: str = "http_server_request_duration_seconds"  # a histogram (_bucket, _count)
    status_label: str = "http_response_status_code"
    memory: str = "process_memory_usage_bytes"
    restarts: str = "k8s_container_restarts"
    window: str = "5m"


_PROM_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_PROM_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def promql_string(value: Any) -> str:
    """A PromQL / LogQL double-quoted string literal holding ``value`` exactly: backslash, quote and
    control characters escaped (Go escapes, which both parsers read)."""
    out = []
    for ch in "" if value is None else str(value):
        if ch in '\\"':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _check_metrics(metrics: SymptomMetrics) -> None:
    for field in ("request_duration", "memory", "restarts"):
        if not _PROM_NAME.match(getattr(metrics, field)):
            raise ArtifactInputError(f"symptom metric {field}={getattr(metrics, field)!r} is not a Prometheus "
                                     "metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)")
    for field in ("service_label", "status_label"):
        if not _PROM_LABEL.match(getattr(metrics, field)):
            raise ArtifactInputError(f"symptom {field}={getattr(metrics, field)!r} is not a Prometheus label name")
    if not _DURATION.match(metrics.window):
        raise ArtifactInputError(f"symptom window {metrics.window!r} is not a Prometheus duration like 5m")


def symptom_rules(
    defect: dict[str, Any],
    example_requests: Sequence[dict[str, Any]] = (),
    *,
    metrics: SymptomMetrics | None = None,
    latency_margin: float = DEFAULT_LATENCY_MARGIN,
    min_budget_ms: float = DEFAULT_MIN_BUDGET_MS,
    min_error_ratio: float = 0.01,
) -> dict[str, Any]:
    """A Prometheus alerting-rule file (``{"groups": [{"name", "rules": [...]}]}``, what ``rule_files``
    loads and ``promtool check rules`` accepts) for the defect's metric symptoms on its service:

    - errors (``ERROR_TYPES``, or a peak error rate of at least ``min_error_ratio``): the share of 5xx
      answers over ``window`` above half the defect's peak error rate (at least ``min_error_ratio``), for 5m;
    - ``latency_regression``: the service's p95 above the latency budget (the largest route budget,
      pre-incident p95 × margin, or else half the defect's peak p95, at least ``min_budget_ms``), for 5m;
    - ``resource_exhaustion``: memory on course (``predict_linear``) to exceed 1.5 × its 6-hour low within the
      hour, for 15m; any container restart.

    Service names reach PromQL only as escaped string literals (``promql_string``); annotations are
    template-safe. Raises ``NotRenderable`` for a defect with no metric symptom (a flaky test)."""
    metrics = metrics or SymptomMetrics()
    _check_metrics(metrics)
    defect_id = defect.get("defect_id")
    if not defect_id:
        raise ArtifactInputError("defect has no defect_id: pass a row of defects.defects")
    service = defect.get("service")
    if not service:
        raise NotRenderable(f"defect {defect_id!r} names no service to watch")
    kind = str(defect.get("defect_type") or "")
    selector = f"{metrics.service_label}={promql_string(service)}"
    where = _template_safe(service, 120)
    labels = {"severity": SEVERITY_ALERT.get(str(defect.get("severity")), "warning"),
              "defect_id": template_literal(defect_id), "service": template_literal(service)}
    rules: list[dict[str, Any]] = []
    count, window = f"{metrics.request_duration}_count", metrics.window
    peak_errors = defect.get("peak_error_rate")
    if kind in ERROR_TYPES or (peak_errors or 0) >= min_error_ratio:
        ratio = round(min(0.5, max(min_error_ratio, (peak_errors or 0) / 2)), 4)
        rules.append({
            "alert": "QaSymptomErrorRatio",
            "expr": (f'sum(rate({count}{{{selector},{metrics.status_label}=~"5.."}}[{window}]))'
                     f" / sum(rate({count}{{{selector}}}[{window}])) > {ratio:g}"),
            "for": "5m",
            "labels": dict(labels),
            "annotations": {
                "summary": f"{where}: more than {ratio:.1%} of requests fail again "
                           f"(defect {_template_safe(defect_id, 80)})",
                "description": _template_safe(
                    f"The {kind or 'defect'} defect peaked at an error rate of "
                    f"{'unknown' if peak_errors is None else f'{peak_errors:.1%}'}; the alert fires at half of it "
                    f"(at least {min_error_ratio:.1%}) held for 5 minutes."),
            },
        })
    if kind == "latency_regression":
        budgets = [b for b in (latency_budget_ms(e, margin=latency_margin, min_budget_ms=min_budget_ms)
                               for e in example_requests) if b is not None]
        peak = defect.get("peak_latency_p95_ms")
        budget = max(budgets) if budgets else (max(min_budget_ms, float(peak) / 2) if peak else None)
        if budget is not None:
            rules.append({
                "alert": "QaSymptomLatencyP95",
                "expr": (f"histogram_quantile(0.95, sum by (le) (rate({metrics.request_duration}_bucket"
                         f"{{{selector}}}[{window}]))) > {budget / 1000.0:.3f}"),
                "for": "5m",
                "labels": dict(labels),
                "annotations": {
                    "summary": f"{where}: p95 latency above {budget:.0f} ms again "
                               f"(defect {_template_safe(defect_id, 80)})",
                    "description": _template_safe(
                        f"During the defect the p95 reached {peak} ms. Budget: "
                        + ("the routes' pre-incident p95 × " f"{latency_margin:g}" if budgets else "half that peak")
                        + f", at least {min_budget_ms:g} ms."),
                },
            })
    if kind == "resource_exhaustion":
        memory = f"{metrics.memory}{{{selector}}}"
        rules.append({
            "alert": "QaSymptomMemoryGrowth",
            "expr": f"predict_linear({memory}[30m], 3600) > 1.5 * min_over_time({memory}[6h])",
            "for": "15m",
            "labels": dict(labels),
            "annotations": {
                "summary": f"{where}: memory grows as before defect {_template_safe(defect_id, 80)}",
                "description": "At the rate of the last 30 minutes, memory exceeds 1.5 times its 6-hour low "
                               "within the hour: the growth that ended in resource exhaustion.",
            },
        })
        rules.append({
            "alert": "QaSymptomRestarts",
            "expr": f"increase({metrics.restarts}{{{selector}}}[15m]) > 0",
            "for": "0m",
            "labels": dict(labels),
            "annotations": {"summary": f"{where} restarted (defect {_template_safe(defect_id, 80)} ended in restarts)",
                            "description": "A container of the service restarted in the last 15 minutes."},
        })
    if not rules:
        raise NotRenderable(f"defect {defect_id!r} ({kind or 'no type'}): no metric symptom to alert on")
    stem = slug(defect_id, 40).replace("_", "-")
    return {"groups": [{"name": f"qa-symptoms-{stem}", "rules": rules}]}


def rules_yaml(rules: dict[str, Any], *, what: str) -> str:
    """A rule file as YAML with a header saying where it goes."""
    header = (f"# {one_line(what, 200)}\n"
              "# A Prometheus rule file: list it in prometheus.yml `rule_files:`; "
              "`promtool check rules` validates it.\n")
    return header + yaml.safe_dump(rules, sort_keys=False, allow_unicode=True, width=120)


# ------------------------------------------------------------------------------ log absence

LOG_ABSENCE_KIND = "qa-assets/log-absence/v1"
_RE2_SPECIAL = re.compile(r"([\\.+*?()|\[\]{}^$])")


def template_regex(template: str) -> str:
    """An RE2 regular expression (Loki, Prometheus) matching the lines of a mined template: literal text
    escaped, each ``<*>`` any text."""
    parts = str(template).split(VARIABLE)
    return ".*?".join(_RE2_SPECIAL.sub(r"\\\1", part) for part in parts)


def log_absence_check(
    defect: dict[str, Any],
    fix: dict[str, Any] | None = None,
    *,
    service_label: str = "service_name",
    grace_minutes: float = 5.0,
) -> dict[str, Any]:
    """A log-absence check: "template T must not reappear in service S after version V" (docs/probes.md).

    ``fix`` is the deployment that ended the defect (``event_id``, ``service``, ``version``, ``timestamp``)
    when known; without one the check arms at the first deployment of the defect's service after its
    ``last_seen`` (``log_absence_violations`` finds it). Lines in the ``grace_minutes`` after the fix was
    deployed do not count (requests in flight, the rollout itself). The check also carries a Loki ruler alert for the
    same condition (``service_label`` is Loki's stream label for the service; OTLP ingestion names it
    ``service_name``). Raises ``NotRenderable`` for a defect without a log template."""
    defect_id = defect.get("defect_id")
    if not defect_id:
        raise ArtifactInputError("defect has no defect_id: pass a row of defects.defects")
    template, template_id, service = defect.get("template"), defect.get("template_id"), defect.get("service")
    if not template or not template_id or not service:
        raise NotRenderable(f"defect {defect_id!r}: no log template to watch for")
    if not _PROM_LABEL.match(service_label):
        raise ArtifactInputError(f"service_label {service_label!r} is not a Loki label name")
    last_seen = defect.get("last_seen") or defect.get("first_seen")
    after: dict[str, Any] = {
        "service": str((fix or {}).get("service") or service),
        "version": None if fix is None else fix.get("version"),
        "change_id": None if fix is None else fix.get("event_id"),
        "deployed_at": None if fix is None or fix.get("timestamp") is None else fix["timestamp"].isoformat(),
        "not_before": None if last_seen is None else last_seen.isoformat(),
        "grace_minutes": grace_minutes,
    }
    stem = slug(defect_id, 40).replace("_", "-")
    expr = (f"sum(count_over_time({{{service_label}={promql_string(service)}}} |~ "
            f"{promql_string(template_regex(template))} [5m])) > 0")
    where = _template_safe(service, 120)
    return {
        "kind": LOG_ABSENCE_KIND,
        "defect_id": str(defect_id),
        "service": str(service),
        "template_id": str(template_id),
        "template": str(template),
        "after": after,
        "loki_rules": {"groups": [{"name": f"qa-log-absence-{stem}", "rules": [{
            "alert": "QaLogTemplateReappeared",
            "expr": expr,
            "for": "0m",
            "labels": {"severity": SEVERITY_ALERT.get(str(defect.get("severity")), "warning"),
                       "defect_id": template_literal(defect_id), "service": template_literal(service),
                       "template_id": template_literal(template_id)},
            "annotations": {
                "summary": f"{where} logs template {_template_safe(template_id, 40)} again (defect "
                           f"{_template_safe(defect_id, 80)})",
                "description": _template_safe(f"The line that marked the defect is back: {template}", 400),
            },
        }]}]},
    }


def log_absence_yaml(check: dict[str, Any]) -> str:
    header = (f"# Log-absence check generated by qa-assets for defect {one_line(check.get('defect_id'), 120)}\n"
              "# Format: docs/probes.md. loki_rules -> a Loki ruler rule file (Prometheus rule-file format, LogQL).\n")
    return header + yaml.safe_dump(check, sort_keys=False, allow_unicode=True, width=120)


LOG_ABSENCE_RESULT: dict[str, pl.DataType] = {
    "timestamp": pl.Datetime("us"),
    "service": pl.String,
    "template_id": pl.String,
    "template": pl.String,
    "source_file": pl.String,
    "source_line": pl.Int64,
}


def log_absence_violations(check: dict[str, Any], log_events: pl.DataFrame,
                           deployments: pl.DataFrame | None = None) -> dict[str, Any]:
    """Evaluate a log-absence check against ``signals.log_events``.

    Returns ``status`` (``pending``: the fix is not deployed yet; ``pass``; ``fail``), ``armed_at`` (when the
    fix was deployed; lines count from ``after.grace_minutes`` later), ``version`` and ``violations`` (the
    offending log events, ``LOG_ABSENCE_RESULT``). The fix
    is the check's ``after.version`` of ``after.service`` (its first deployment), else that service's first
    deployment after ``after.not_before``."""
    if check.get("kind") != LOG_ABSENCE_KIND:
        raise ArtifactInputError(f"not a log-absence check (kind {check.get('kind')!r}, expected {LOG_ABSENCE_KIND})")
    require_frame(log_events, "log_events", ("timestamp", "service", "template_id", "template"), "signals.log_events")
    after = check.get("after") or {}
    armed_at = datetime.fromisoformat(after["deployed_at"]) if after.get("deployed_at") else None
    version = after.get("version")
    if armed_at is None and deployments is not None and deployments.height:
        require_frame(deployments, "deployments", ("timestamp", "service", "version"), "raw.deployments")
        candidates = deployments.filter(pl.col("service") == after.get("service"))
        if version is not None:
            candidates = candidates.filter(pl.col("version") == version)
        elif after.get("not_before"):
            candidates = candidates.filter(pl.col("timestamp") > datetime.fromisoformat(after["not_before"]))
        first = candidates.sort("timestamp").head(1)
        if first.height:
            armed_at, version = first["timestamp"][0], first["version"][0]
    empty = pl.DataFrame(schema=LOG_ABSENCE_RESULT)
    if armed_at is None:
        return {"status": "pending", "armed_at": None, "version": version, "violations": empty}
    counted_from = armed_at + timedelta(minutes=float(after.get("grace_minutes") or 0))
    matches = log_events.filter(
        (pl.col("service") == check["service"]) & (pl.col("timestamp") >= counted_from)
        & ((pl.col("template_id") == check["template_id"]) | (pl.col("template") == check["template"]))
    )
    violations = matches.select([pl.col(c).cast(t) if c in matches.columns else pl.lit(None, t).alias(c)
                                 for c, t in LOG_ABSENCE_RESULT.items()]).sort("timestamp")
    return {"status": "fail" if violations.height else "pass", "armed_at": armed_at, "version": version,
            "violations": violations}
