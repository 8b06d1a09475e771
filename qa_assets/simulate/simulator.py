"""``simulate``: write a landing directory of production-like telemetry with injected faults, and the
ground truth beside it.

The window is generated minute by minute; each minute's spans, logs and metrics are appended to hourly
files and dropped, so memory stays flat however many hours are asked for. Every random draw comes from
a generator seeded by (seed, purpose, minute), so the same arguments give byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import yaml

from qa_assets.simulate import faults as F
from qa_assets.simulate.catalog import TIER_ANNOTATION, write_catalog
from qa_assets.simulate.deployments import cdevent, schedule_changes
from qa_assets.simulate.ground_truth import MinuteStats, build_ground_truth
from qa_assets.simulate.identifiers import hex_ids
from qa_assets.simulate.junit import plan_ci_runs, write_junit
from qa_assets.simulate.log_records import LogRecordGenerator
from qa_assets.simulate.logs import LOG_FORMATS, LogRecord, otlp_log_record, render_json, render_text
from qa_assets.simulate.metrics import MetricsState
from qa_assets.simulate.otlp import ResourceCache, SpanEncoder, SpanSink, js
from qa_assets.simulate.outcomes import ExceptionResolver, request_values
from qa_assets.simulate.topology import Topology, get_topology
from qa_assets.simulate.traffic import baseline_error_rates, build_trees, node_parameters, simulate_tree
from qa_assets.simulate.world import World
from qa_assets.simulate.writer import HourlyFiles

DEFAULT_START = dt.datetime(2026, 11, 2, tzinfo=dt.timezone.utc)
# mean requests per minute entering the system (the daily curve swings around it)
SCALES = {"tiny": 6, "small": 60, "medium": 300, "large": 1500}


class SimulationError(ValueError):
    """Arguments the simulator cannot honour; the message says what to change."""


@dataclass
class SimulationSummary:
    landing_dir: Path
    ground_truth_path: Path
    topology: str
    seed: int
    scale: str
    requests_per_minute: float
    start: dt.datetime
    end: dt.datetime
    faults: list[str]
    decoys: list[str]
    counts: dict[str, int] = field(default_factory=dict)
    files: int = 0
    seconds: float = 0.0

    @property
    def records(self) -> int:
        return (
            self.counts.get("spans", 0)
            + self.counts.get("log_records", 0)
            + self.counts.get("metric_points", 0)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "landing_dir": str(self.landing_dir),
            "ground_truth": str(self.ground_truth_path),
            "topology": self.topology,
            "seed": self.seed,
            "scale": self.scale,
            "requests_per_minute": self.requests_per_minute,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "faults": self.faults,
            "decoys": self.decoys,
            "counts": self.counts,
            "records": self.records,
            "files": self.files,
            "seconds": round(self.seconds, 2),
        }


# ------------------------------------------------------------------------------------------ traffic


def diurnal_profile() -> np.ndarray:
    """Relative traffic per minute of the day (mean 1): a quiet night, a lunch bump and an evening peak."""
    hours = np.arange(1440) / 60.0

    def bump(centre: float, width: float) -> np.ndarray:
        distance = np.minimum(np.abs(hours - centre), 24 - np.abs(hours - centre))
        return np.exp(-0.5 * (distance / width) ** 2)

    shape = 0.18 + 0.55 * bump(12.5, 2.2) + 0.9 * bump(20.0, 2.4) + 0.25 * bump(9.0, 1.5)
    return shape / shape.mean()


def _scale_rpm(scale: str | float | int) -> tuple[str, float]:
    if isinstance(scale, (int, float)) and not isinstance(scale, bool):
        if scale <= 0:
            raise SimulationError(f"scale must be a positive number of requests per minute, got {scale}")
        return f"{scale:g}rpm", float(scale)
    if isinstance(scale, str) and scale in SCALES:
        return scale, float(SCALES[scale])
    try:
        value = float(str(scale))
    except ValueError:
        raise SimulationError(
            f"unknown scale {scale!r}: use {', '.join(SCALES)} or requests per minute"
        ) from None
    return _scale_rpm(value)


def _parse_start(start: dt.datetime | str | None) -> dt.datetime:
    if start is None:
        return DEFAULT_START
    if isinstance(start, str):
        try:
            start = dt.datetime.fromisoformat(start.replace("Z", "+00:00"))
        except ValueError:
            raise SimulationError(
                f"start {start!r} is not an ISO date-time like 2026-11-02T00:00:00Z"
            ) from None
    if start.tzinfo is None:
        start = start.replace(tzinfo=dt.timezone.utc)
    start = start.astimezone(dt.timezone.utc)
    return start.replace(second=0, microsecond=0)


def _scenario(
    faults: str | list[F.ScenarioItem] | None, scenario: str | None, rng: np.random.Generator, hours: float
) -> tuple[str, list[F.ScenarioItem]]:
    if scenario:
        return scenario, F.scenario_items(scenario, rng, hours)
    if faults is None:
        return "default", F.scenario_items("default", rng, hours)
    if isinstance(faults, str):
        return faults, F.scenario_items(faults, rng, hours)
    return "custom", list(faults)


# ------------------------------------------------------------------------------------------- output


def _write_config(landing: Path, topology: Topology) -> None:
    formats = {
        s.name: LOG_FORMATS[s.log_style]
        for s in topology.services
        if s.log_channel == "text" and s.instrumented and s.log_style in LOG_FORMATS
    }
    text = (
        "# Per-service settings the ingestion reads for this landing directory.\n"
        "# log_formats: the logparser-style format of each service's plain-text logs (logs/<service>/).\n"
        + yaml.safe_dump({"log_formats": formats}, sort_keys=True, width=200)
    )
    (landing / "qa-assets.yaml").write_text(text, encoding="utf-8")


def _write_deployments(landing: Path, topology: Topology, changes: list, start_ns: int) -> int:
    """Code releases one event per file (as a CD tool's webhook archive), config changes as JSON lines."""
    folder = landing / "deployments"
    folder.mkdir(parents=True, exist_ok=True)
    config_lines: dict[str, list[str]] = {}
    for change in changes:
        event = cdevent(topology, change, start_ns)
        stamp = event["context"]["timestamp"]
        if change.change_kind == "config":
            config_lines.setdefault(stamp[:10], []).append(orjson.dumps(event).decode())
        else:
            name = (
                f"{stamp[:19].replace(':', '').replace('-', '')}-{change.service}-{change.event_type}-"
                f"{change.event_id[:8]}.json"
            )
            (folder / name).write_bytes(orjson.dumps(event, option=orjson.OPT_INDENT_2) + b"\n")
    for day, lines in config_lines.items():
        (folder / f"config-changes-{day}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(changes)


def _hour_key(minute_ns: int) -> str:
    return dt.datetime.fromtimestamp(minute_ns // 1_000_000_000, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H")


def _write_logs(
    files: HourlyFiles,
    hour: str,
    topology: Topology,
    state,
    records: dict[tuple[int, int], list[LogRecord]],
    resources: ResourceCache,
) -> tuple[int, list[str]]:
    """Render each pod's records in its channel; returns (records, OTLP log lines)."""
    otlp_parts: list[str] = []
    count = 0
    stamp = hour.replace("T", "-")
    for (s, i), items in sorted(records.items()):
        service = topology.services[s]
        pod = state.pod(s, i)
        if pod is None:
            continue
        items.sort(key=lambda r: r.ts_ns)
        count += len(items)
        if service.log_channel == "text":
            lines = render_text(service.log_style or "", items, service)
            files.write(hour, f"logs/{service.name}/{pod.pod}.{stamp}.log", lines, compress=False)
        elif service.log_channel == "jsonl":
            lines = render_json(service.log_style or "", items, service, pod.pod)
            files.write(hour, f"logs/{service.name}/{pod.pod}.{stamp}.jsonl", lines, compress=False)
        elif service.log_channel == "otlp":
            scopes: dict[str, list[str]] = {}
            for record in items:
                scopes.setdefault(record.component, []).append(otlp_log_record(record, service))
            scope_text = ",".join(
                '{"scope":{"name":%s},"logRecords":[%s]}' % (js(name), ",".join(rows))
                for name, rows in scopes.items()
            )
            otlp_parts.append(
                '{"resource":%s,"scopeLogs":[%s]}' % (resources.get(s, pod, pod.version), scope_text)
            )
    lines = ['{"resourceLogs":[%s]}' % ",".join(otlp_parts)] if otlp_parts else []
    return count, lines


# ------------------------------------------------------------------------------------------ simulate


def simulate(
    landing_dir: str | Path,
    *,
    topology: str | Topology = "shop",
    hours: float = 24,
    start: dt.datetime | str | None = None,
    scale: str | float = "small",
    seed: int = 0,
    faults: str | list[F.ScenarioItem] | None = "default",
    scenario: str | None = None,
    ground_truth: str | Path | None = None,
    gzip: bool = False,
    n_services: int | None = None,
) -> SimulationSummary:
    """Write telemetry of ``topology`` over ``hours`` from ``start`` into ``landing_dir`` and the ground
    truth to ``ground_truth`` (default ``<landing>/../ground_truth.json``).

    ``faults``: ``default`` | ``none`` | ``all`` | ``random`` | ``rca`` | ``decoys`` | a fault kind, or a
    list of ``FaultSpec`` / ``DecoySpec``; ``scenario`` names one of those too and wins over ``faults``.
    ``scale``: ``tiny`` | ``small`` | ``medium`` | ``large`` or mean requests per minute.
    """
    began = time.perf_counter()
    if hours <= 0:
        raise SimulationError(f"hours must be positive, got {hours}")
    landing = Path(landing_dir)
    truth_path = Path(ground_truth) if ground_truth else landing.parent / "ground_truth.json"
    if truth_path.resolve().is_relative_to(landing.resolve()):
        raise SimulationError(f"ground truth {truth_path} must be outside the landing directory {landing}")
    if landing.exists() and any(landing.iterdir()):
        raise SimulationError(f"landing directory {landing} is not empty; choose a new one or empty it first")
    landing.mkdir(parents=True, exist_ok=True)
    topo = topology if isinstance(topology, Topology) else get_topology(topology, seed, n_services)
    scale_name, rpm = _scale_rpm(scale)
    begin = _parse_start(start)
    total = max(1, int(round(hours * 60)))
    start_ns = int(begin.timestamp()) * 1_000_000_000

    plan_rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    scenario_name, items = _scenario(faults, scenario, plan_rng, hours)
    plan = F.plan_scenario(items, topo, total, plan_rng)
    changes, initial_versions = schedule_changes(topo, plan, total, begin, plan_rng)
    runs = plan_ci_runs(topo, changes, plan, start_ns, seed)

    write_catalog(landing, topo)
    _write_config(landing, topo)
    _write_deployments(landing, topo, changes, start_ns)
    junit_files, test_cases = write_junit(landing, topo, runs)

    world = World(topo, plan, changes, initial_versions, start_ns, seed)
    trees = build_trees(topo)
    shares = np.array([t.weight for t in trees]) / sum(t.weight for t in trees)
    resolver = ExceptionResolver(topo, plan)
    spans = SpanEncoder(topo, resolver)
    resources = ResourceCache(topo)
    log_records = LogRecordGenerator(topo, resolver, background_factor=float(np.clip(rpm / 200.0, 0.12, 1.0)))
    metrics = MetricsState(topo)
    baseline = baseline_error_rates(topo, seed)
    proxies = np.array([s.proxy for s in topo.services])
    entry_index = [s.name for s in topo.services].index(topo.entry)
    stats = MinuteStats(total, len(topo.services))
    files = HourlyFiles(landing, compress=gzip)
    profile = diurnal_profile()
    counts = {"spans": 0, "log_records": 0, "metric_points": 0, "traces": 0}
    drift = 0.0
    noise_rng = np.random.default_rng(np.random.SeedSequence([seed, 3]))
    ext = "jsonl"

    for minute in range(total):
        minute_ns = start_ns + minute * 60_000_000_000
        hour = _hour_key(minute_ns)
        state = world.step(minute)
        rng = np.random.default_rng(np.random.SeedSequence([seed, 2, minute]))
        drift = 0.92 * drift + float(noise_rng.normal(0, 0.035))
        day_minute = (begin.hour * 60 + begin.minute + minute) % 1440
        weekday = (begin.weekday() + (begin.hour * 60 + begin.minute + minute) // 1440) % 7
        rate = rpm * profile[day_minute] * (0.8 if weekday >= 5 else 1.0) * math.exp(drift) * state.traffic
        sink = SpanSink()
        records: dict[tuple[int, int], list[LogRecord]] = {}
        for t_index, tree in enumerate(trees):
            n = int(rng.poisson(rate * shares[t_index]))
            if n == 0:
                continue
            params = node_parameters(tree, state, baseline)
            outcome = simulate_tree(tree, n, state, params, rng, proxies)
            trace_ids = hex_ids(rng, n, 16)
            span_ids = rng.integers(1, 2**63 - 1, size=(tree.size, n), dtype=np.int64)
            values = request_values(rng, n)
            spans.encode(outcome, minute_ns, trace_ids, span_ids, values, entry_index, sink)
            log_records.from_requests(outcome, minute_ns, trace_ids, span_ids, values, rng, records)
            metrics.add(outcome, state)
            stats.add(minute, outcome)
            counts["traces"] += n
        log_records.from_lifecycle(state, minute_ns, rng, records)
        log_records.background(state, minute_ns, rng, records)
        resource_map = {
            (s, i): resources.get(s, state.instances[s][i], state.versions[s]) for s, i in sink.pods()
        }
        files.write(hour, f"otlp/traces-{hour}.{ext}", sink.lines(resource_map, spans.scopes))
        counts["spans"] += len(sink)
        logged, otlp_logs = _write_logs(files, hour, topo, state, records, resources)
        files.write(hour, f"otlp/logs-{hour}.{ext}", otlp_logs)
        counts["log_records"] += logged
        metric_lines, points = metrics.export(state, minute_ns + 60_000_000_000, resources, rng)
        files.write(hour, f"otlp/metrics-{hour}.{ext}", metric_lines)
        counts["metric_points"] += points
    files.close()

    counts["deployment_events"] = len(changes)
    counts["junit_files"] = junit_files
    counts["test_cases"] = test_cases
    end = begin + dt.timedelta(minutes=total)
    generator = {
        "name": "qa_assets.simulate",
        "topology": topo.name,
        "seed": seed,
        "scale": scale_name,
        "requests_per_minute": rpm,
        "start": begin.isoformat().replace("+00:00", "Z"),
        "end": end.isoformat().replace("+00:00", "Z"),
        "hours": hours,
        "scenario": scenario_name,
        "tier_annotation": TIER_ANNOTATION,
        "config_change_marker": {"customData.changeKind": "config"},
    }
    truth = build_ground_truth(
        topology=topo,
        plan=plan,
        changes=changes,
        runs=runs,
        trees=trees,
        stats=stats,
        start=begin,
        total_minutes=total,
        generator=generator,
        counts=counts,
    )
    truth_path.parent.mkdir(parents=True, exist_ok=True)
    truth_path.write_bytes(orjson.dumps(truth, option=orjson.OPT_INDENT_2) + b"\n")
    return SimulationSummary(
        landing_dir=landing,
        ground_truth_path=truth_path,
        topology=topo.name,
        seed=seed,
        scale=scale_name,
        requests_per_minute=rpm,
        start=begin,
        end=end,
        faults=[f.fault_id for f in plan.faults],
        decoys=[d.decoy_id for d in plan.decoys],
        counts=counts,
        files=sum(1 for p in landing.rglob("*") if p.is_file()),
        seconds=time.perf_counter() - began,
    )
