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

Telemetry reaches YAML only through the YAML serializer (quoted as needed) and never reaches PromQL (job
names are slugs); ``{{`` is broken up in annotations, which Prometheus expands as Go templates.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import yaml

from qa_assets.lib.artifacts._common import ArtifactInputError, NotRenderable, one_line, slug
from qa_assets.lib.artifacts.regression_tests import (
    DEFAULT_LATENCY_MARGIN,
    DEFAULT_MIN_BUDGET_MS,
    latency_budget_ms,
)

_METHOD = re.compile(r"^[A-Z]{1,16}$")
_DURATION = re.compile(r"^\d+(ms|s|m|h)$")
SEVERITY_ALERT = {"S1": "critical", "S2": "critical", "S3": "warning", "S4": "info"}


def _seconds(duration: str) -> float:
    value, unit = re.match(r"^(\d+)(ms|s|m|h)$", duration).groups()
    return int(value) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def _template_safe(text: Any, limit: int = 300) -> str:
    # Prometheus expands annotations as Go templates: telemetry must not open an action
    return one_line(text, limit).replace("{{", "{ {").replace("}}", "} }")


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
            "labels": {"severity": severity, "defect_id": str(defect_id)},
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
                "labels": {"severity": "warning", "defect_id": str(defect_id)},
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
