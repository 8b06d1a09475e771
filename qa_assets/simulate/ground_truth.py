"""The ground truth: topology, every fault with its cause, change, symptoms and HTTP behaviour, the
decoys, and every change with its role. Written outside the landing directory.

Symptoms are measured from what the simulator actually emitted (per service and minute: server requests,
5xx answers, latency, failed client calls), comparing the fault window with the baseline before it, and
completed with the signals the fault model implies but spans cannot show (memory, restarts, new exception
types)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np

from qa_assets.simulate import errors as E
from qa_assets.simulate.deployments import Change, iso
from qa_assets.simulate.faults import Plan, PlannedFault
from qa_assets.simulate.junit import CATCHING_TESTS, CiRun
from qa_assets.simulate.topology import Endpoint, Topology
from qa_assets.simulate.traffic import DATASTORE, SERVER, TraceTree, TreeMinute

EXAMPLES = {
    "str": "example",
    "int": 2,
    "decimal": 19.99,
    "email": "jane.doe@example.com",
    "card": "4111111111111111",
    "uuid": "3f1c2a9e-5b7d-4e8f-9a0b-1c2d3e4f5a6b",
    "iban": "DE89370400440532013000",
    "ip": "203.0.113.24",
    "jwt": "<jwt>",
    "date": "2026-11-02",
    "datetime": "2026-11-02T10:00:00Z",
    "bool": True,
}


class MinuteStats:
    """Per minute and service, what the emitted spans show."""

    def __init__(self, minutes: int, services: int) -> None:
        shape = (minutes, services)
        self.requests = np.zeros(shape, dtype=np.int64)
        self.errors = np.zeros(shape, dtype=np.int64)  # server spans answering 5xx
        self.rejected = np.zeros(shape, dtype=np.int64)  # server spans answering 4xx
        self.latency_sum = np.zeros(shape)
        self.calls = np.zeros(shape, dtype=np.int64)  # client + datastore spans the service made
        self.call_errors = np.zeros(shape, dtype=np.int64)

    def add(self, minute: int, outcome: TreeMinute) -> None:
        tree = outcome.tree
        for j in range(tree.size):
            if not tree.emit[j]:
                continue
            here = outcome.present[j]
            count = int(here.sum())
            if count == 0:
                continue
            s = int(tree.service[j])
            if tree.kind[j] == SERVER:
                status = outcome.status[j][here]
                self.requests[minute, s] += count
                self.errors[minute, s] += int((status >= 500).sum())
                self.rejected[minute, s] += int(((status >= 400) & (status < 500)).sum())
                self.latency_sum[minute, s] += float(outcome.duration_ms[j][here].sum())
            else:
                self.calls[minute, s] += count
                self.call_errors[minute, s] += int((outcome.code[j][here] != 0).sum())


@dataclass
class Window:
    minutes: int
    requests: float  # per minute
    errors: int
    error_rate: float
    latency_ms: float
    calls: int
    call_errors: int
    call_error_rate: float
    rejected: int
    reject_rate: float


def _window(stats: MinuteStats, s: int, minutes: np.ndarray) -> Window:
    if minutes.size == 0:
        return Window(0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    req = int(stats.requests[minutes, s].sum())
    calls = int(stats.calls[minutes, s].sum())
    errors = int(stats.errors[minutes, s].sum())
    call_errors = int(stats.call_errors[minutes, s].sum())
    rejected = int(stats.rejected[minutes, s].sum())
    return Window(
        minutes=int(minutes.size),
        requests=req / minutes.size,
        errors=errors,
        error_rate=errors / req if req else 0.0,
        latency_ms=float(stats.latency_sum[minutes, s].sum() / req) if req else 0.0,
        calls=calls,
        call_errors=call_errors,
        call_error_rate=call_errors / calls if calls else 0.0,
        rejected=rejected,
        reject_rate=rejected / req if req else 0.0,
    )


def _rose(before: float, during: float, n_before: int, n_during: int, count: int) -> bool:
    """A rate rose beyond chance: 5+ events, above the baseline by 4 standard errors and 1 point."""
    if count < 5 or n_during == 0:
        return False
    floor = max(before, 1.0 / max(n_before, 1))
    return during - before > max(0.01, 4.0 * (floor / n_during) ** 0.5)


def measured_symptoms(
    stats: MinuteStats,
    topology: Topology,
    start: int,
    end: int,
    quiet: np.ndarray,
    relative_traffic: bool = True,
) -> list[dict[str, Any]]:
    """Signals of each service that moved between the baseline before ``start`` and [start, end).

    Throughput is compared as a share of the entry service's traffic (``relative_traffic``), so the daily
    curve does not read as a symptom; decoy surges are described in absolute terms."""
    during = np.arange(start, min(end, stats.requests.shape[0]))
    before = np.arange(max(0, start - max(30, 2 * (end - start))), start)
    before = before[quiet[before]] if before.size else before
    entry = [s.name for s in topology.services].index(topology.entry)
    entry_before, entry_during = _window(stats, entry, before), _window(stats, entry, during)
    found = []
    for s, service in enumerate(topology.services):
        b, d = _window(stats, s, before), _window(stats, s, during)
        n_before, n_during = int(b.requests * b.minutes), int(d.requests * d.minutes)
        if _rose(b.error_rate, d.error_rate, n_before, n_during, d.errors):
            found.append(_symptom(service.name, "server_error_rate", "up", b.error_rate, d.error_rate))
        if _rose(b.reject_rate, d.reject_rate, n_before, n_during, d.rejected):
            found.append(_symptom(service.name, "client_error_responses", "up", b.reject_rate, d.reject_rate))
        if (
            n_during >= 10
            and b.latency_ms
            and d.latency_ms > 1.4 * b.latency_ms
            and d.latency_ms - b.latency_ms > 2.0
        ):
            found.append(_symptom(service.name, "latency", "up", b.latency_ms, d.latency_ms))
        if _rose(b.call_error_rate, d.call_error_rate, b.calls, d.calls, d.call_errors):
            found.append(
                _symptom(service.name, "client_call_errors", "up", b.call_error_rate, d.call_error_rate)
            )
        if b.requests * max(1, b.minutes) < 20 or not service.emits_telemetry:
            continue
        if relative_traffic:
            if s == entry or not entry_before.requests or not entry_during.requests:
                continue
            share_before = b.requests / entry_before.requests
            share_during = d.requests / entry_during.requests
            expected = (
                share_before * entry_during.requests * d.minutes
            )  # requests the service should have seen
            if n_during < 0.75 * expected and expected - n_during > 4.0 * expected**0.5:
                found.append(_symptom(service.name, "throughput_share", "down", share_before, share_during))
        elif d.requests < 0.7 * b.requests or d.requests > 1.5 * b.requests:
            direction = "up" if d.requests > b.requests else "down"
            found.append(_symptom(service.name, "throughput", direction, b.requests, d.requests))
    return found


def _symptom(
    service: str,
    signal: str,
    direction: str,
    before: float | None = None,
    during: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    item: dict[str, Any] = {"service": service, "signal": signal, "direction": direction}
    if before is not None:
        item["baseline"] = round(before, 5)
        item["during"] = round(during or 0.0, 5)
    item.update(extra)
    return item


def modelled_symptoms(fault: PlannedFault, topology: Topology) -> list[dict[str, Any]]:
    """What the fault model implies beyond spans: resources, restarts, new exceptions."""
    service = topology.service(fault.service)
    effect = fault.effect
    kind = fault.kind.name
    found = []
    if effect is None:
        return [_symptom(fault.service, "test_failures", "up", test=fault.flaky_test)]
    if effect.type == "memory_leak":
        found += [_symptom(fault.service, "memory", "up"), _symptom(fault.service, "restarts", "up")]
        exc = E.oom_exception(service)
        found.append(_symptom(fault.service, "new_exception", "up", exception_type=exc.type))
    if effect.type == "crash_loop":
        found += [_symptom(fault.service, "restarts", "up"), _symptom(fault.service, "cpu", "down")]
    if effect.type == "unavailable":
        found.append(_symptom(fault.service, "restarts", "up"))
        for caller in topology.callers_of(fault.service):
            if topology.service(caller).emits_telemetry:
                found.append(_symptom(caller, "new_exception", "up", reason="dependency connection errors"))
    if effect.type == "errors":
        endpoint = service.endpoint(fault.routes[0]) if fault.routes else None
        exc = E.fault_exception(
            service, endpoint, str(effect.params.get("error", "regression")), fault.fault_id
        )
        found.append(
            _symptom(
                fault.service, "new_exception", "up", exception_type=exc.type, exception_message=exc.message
            )
        )
    if effect.type == "contract":
        for caller in topology.callers_of(fault.service):
            caller_service = topology.service(caller)
            if caller_service.emits_telemetry and not caller_service.proxy:
                exc = E.contract_exception(
                    caller_service, None, service, service.endpoint(fault.routes[0]) if fault.routes else None
                )
                found.append(
                    _symptom(
                        caller, "new_exception", "up", exception_type=exc.type, exception_message=exc.message
                    )
                )
    if kind == "latency_regression":
        found.append(_symptom(fault.service, "latency", "up"))
    return found


# ------------------------------------------------------------------------------------- HTTP data


def example_payload(shape: Any) -> Any:
    if isinstance(shape, dict):
        return {k: example_payload(v) for k, v in shape.items()}
    if isinstance(shape, list):
        return [example_payload(shape[0])] if shape else []
    return EXAMPLES.get(str(shape), shape)


def example_path(route: str) -> str:
    out = route
    for name, value in (
        ("{user_id}", "424242"),
        ("{id}", "OLJCESPC7Z" if "product" in route else "7f3e9a12"),
    ):
        out = out.replace(name, value)
    return out


def _expected_latency(topology: Topology, endpoint: Endpoint) -> float:
    total = endpoint.latency_ms
    for call in endpoint.calls:
        callee = topology.service(call.callee)
        if callee.is_datastore:
            total += callee.latency_ms * call.repeat * call.probability
        else:
            total += (
                (_expected_latency(topology, callee.endpoint(call.endpoint or "")) + 0.6)
                * call.repeat
                * call.probability
            )
    return total


def http_symptom(fault: PlannedFault, topology: Topology, trees: list[TraceTree]) -> dict[str, Any] | None:
    """How the fault looks over HTTP, fixed versus faulty, at the root service and at the entry."""
    service = topology.service(fault.service)
    effect = fault.effect
    if effect is None or service.is_datastore and not topology.callers_of(service.name):
        return None
    params = effect.params
    root: dict[str, Any] | None = None
    if not service.is_datastore and service.endpoints:
        endpoint = service.endpoint(fault.routes[0]) if fault.routes else service.endpoints[0]
        fixed_latency = round(_expected_latency(topology, endpoint), 2)
        faulty: dict[str, Any] = {"status": 200, "latency_ms": fixed_latency}
        if effect.type == "errors":
            exc = E.fault_exception(service, endpoint, str(params.get("error", "regression")), fault.fault_id)
            faulty = {
                "status": int(params.get("status", 500)),
                "error_rate": params["rate"],
                "latency_ms": fixed_latency,
                "body_contains": exc.type or exc.message,
            }
        elif effect.type == "latency":
            faulty = {"status": 200, "latency_ms": round(fixed_latency * float(params.get("factor", 3.0)), 2)}
        elif effect.type == "contract":
            field = E.contract_field(endpoint)
            faulty = {
                "status": 200,
                "latency_ms": fixed_latency,
                "response_change": {
                    "field": field,
                    "fixed_type": "number",
                    "faulty_type": "object",
                    "faulty_example": {field: {"value": 12, "scale": 2}},
                },
                "affects_share": params.get("rate"),
            }
        elif effect.type in ("crash_loop", "unavailable"):
            share = "pods_down_share" if effect.type == "crash_loop" else "calls_failing_share"
            faulty = {
                "status": 503,
                share: params.get("fraction", 1.0),
                "latency_ms": fixed_latency,
                "or": "connection refused, reset or timeout",
            }
        elif effect.type == "memory_leak":
            faulty = {
                "status": 200,
                "latency_ms": fixed_latency,
                "degrades_over_time": True,
                "then": {"status": 503, "during": "OOM restarts"},
            }
        root = {
            "service": service.name,
            "method": endpoint.method,
            "route": endpoint.route,
            "example_path": example_path(endpoint.route),
            "example_request": example_payload(endpoint.body) if endpoint.body else None,
            "example_response": example_payload(endpoint.response) if endpoint.response else None,
            "fixed": {"status": 200, "latency_ms": fixed_latency},
            "faulty": faulty,
        }
    entry = _entry_symptom(fault, topology, trees)
    return {"root": root, "entry": entry}


def _entry_symptom(fault: PlannedFault, topology: Topology, trees: list[TraceTree]) -> dict[str, Any] | None:
    index = {s.name: i for i, s in enumerate(topology.services)}
    root = index[fault.service]
    best = None
    for tree in trees:
        hit = (tree.service == root) & (tree.kind == SERVER) | ((tree.callee == root) & (tree.kind != SERVER))
        if fault.routes:
            hit &= np.array([k in fault.routes for k in tree.route_keys]) | (tree.kind == DATASTORE)
        if hit.any() and (best is None or tree.weight > best.weight):
            best = tree
    if best is None:
        return None
    endpoint = best.entry
    return {
        "service": topology.entry,
        "method": endpoint.method,
        "route": endpoint.route,
        "example_path": example_path(endpoint.route),
        "example_request": example_payload(endpoint.body) if endpoint.body else None,
        "fixed": {"status": 200, "latency_ms": round(_expected_latency(topology, endpoint), 2)},
        "faulty": None,  # filled from what the entry service showed during the fault
    }


# --------------------------------------------------------------------------------------- assembly


def fault_truth(
    fault: PlannedFault,
    topology: Topology,
    trees: list[TraceTree],
    stats: MinuteStats,
    quiet: np.ndarray,
    start_ns: int,
    changes: list[Change],
    runs: list[CiRun],
) -> dict[str, Any]:
    service = topology.service(fault.service)
    start = start_ns + fault.start_min * 60_000_000_000
    end = start_ns + fault.end_min * 60_000_000_000
    trigger = next((c for c in changes if c.event_id == fault.change_id), None)
    measured = (
        measured_symptoms(stats, topology, fault.start_min, fault.end_min, quiet) if fault.effect else []
    )
    symptoms = measured + modelled_symptoms(fault, topology)
    ci_builds = [
        r.build_id for r in runs if trigger and r.service == fault.service and r.version == trigger.version
    ]
    caught_test = (
        CATCHING_TESTS.get(fault.kind.name, (None, None, None))[1] if fault.spec.caught_by_ci else None
    )
    truth: dict[str, Any] = {
        "fault_id": fault.fault_id,
        "kind": fault.kind.name,
        "description": fault.kind.description,
        "defect_type": fault.kind.defect_type,
        "cause_kind": fault.kind.cause_kind,
        "root_service": fault.service,
        "root_instrumented": service.emits_telemetry,
        "root_kind": service.kind,
        "start": iso(start),
        "end": iso(end),
        "change_id": fault.change_id,
        "change_kind": trigger.change_kind if trigger else None,
        "resolution_change_id": fault.resolution_change_id,
        "faulty_version": fault.new_version if trigger and trigger.change_kind == "code" else None,
        "previous_version": fault.previous_version if trigger and trigger.change_kind == "code" else None,
        "routes": list(fault.routes),
        "params": {k: v for k, v in (fault.effect.params if fault.effect else fault.kind.effect).items()},
        "caught_by_ci": bool(fault.spec.caught_by_ci and caught_test),
        "ci_test": caught_test,
        "ci_build_ids": ci_builds,
        "flaky_test": fault.flaky_test,
        "symptoms": symptoms,
        "affected_services": sorted({s["service"] for s in symptoms}),
        "http": _with_entry_outcome(http_symptom(fault, topology, trees), measured, topology.entry),
        "blips": [
            {
                "service": b.service,
                "start": iso(start_ns + b.start_min * 60_000_000_000),
                "end": iso(start_ns + b.end_min * 60_000_000_000),
                "factor": round(b.params["factor"], 2),
            }
            for b in fault.blips
        ],
    }
    return truth


def _with_entry_outcome(
    http: dict[str, Any] | None, measured: list[dict[str, Any]], entry: str
) -> dict[str, Any] | None:
    """Describe the faulty entry behaviour by what the entry service's spans showed in the fault window."""
    if not http or not http.get("entry"):
        return http
    seen = {s["signal"]: s for s in measured if s["service"] == entry and "baseline" in s}
    faulty: dict[str, Any] = {"status": 200, "latency_ms": http["entry"]["fixed"]["latency_ms"]}
    if "server_error_rate" in seen:
        faulty.update(status="5xx", error_rate=seen["server_error_rate"]["during"])
    if "latency" in seen:
        faulty["latency_ms"] = seen["latency"]["during"]
    if "server_error_rate" not in seen and "latency" not in seen:
        faulty["note"] = "no change visible at the entry (degraded gracefully or too rare)"
    http["entry"]["faulty"] = faulty
    return http


def change_truth(change: Change, start_ns: int, harmful: set[str]) -> dict[str, Any]:
    return {
        "event_id": change.event_id,
        "event_type": change.event_type,
        "change_kind": change.change_kind,
        "service": change.service,
        "version": change.version,
        "previous_version": change.previous_version,
        "config_revision": change.config_revision,
        "time": iso(change.timestamp_ns(start_ns)),
        "role": change.role,
        "fault_id": change.fault_id,
        "decoy_id": change.decoy_id,
        "harmful": change.event_id in harmful,
    }


def build_ground_truth(
    *,
    topology: Topology,
    plan: Plan,
    changes: list[Change],
    runs: list[CiRun],
    trees: list[TraceTree],
    stats: MinuteStats,
    start: dt.datetime,
    total_minutes: int,
    generator: dict[str, Any],
    counts: dict[str, int],
) -> dict[str, Any]:
    start_ns = int(start.timestamp()) * 1_000_000_000
    quiet = np.ones(total_minutes, dtype=bool)
    for fault in plan.faults:
        if fault.effect is not None:
            first, last = max(0, fault.start_min), min(total_minutes, fault.end_min + 10)
            quiet[first:last] = False
    for decoy in plan.decoys:
        if decoy.effect is not None:
            first, last = max(0, decoy.start_min), min(total_minutes, decoy.end_min + 5)
            quiet[first:last] = False
    harmful = {f.change_id for f in plan.faults if f.change_id and f.kind.in_production}
    decoys = []
    for decoy in plan.decoys:
        item: dict[str, Any] = {
            "decoy_id": decoy.decoy_id,
            "kind": decoy.kind,
            "service": decoy.service,
            "start": iso(start_ns + decoy.start_min * 60_000_000_000),
            "end": iso(start_ns + decoy.end_min * 60_000_000_000),
            "change_id": decoy.change_id,
            "before_fault": decoy.before_fault,
        }
        if decoy.effect is not None:
            item["factor"] = round(float(decoy.effect.params.get("factor", 1.0)), 2)
            item["observed"] = measured_symptoms(
                stats, topology, decoy.start_min, decoy.end_min, quiet, relative_traffic=False
            )
        decoys.append(item)
    for fault in plan.faults:
        for blip in fault.blips:
            decoys.append(
                {
                    "decoy_id": blip.source,
                    "kind": "latency_blip",
                    "service": blip.service,
                    "start": iso(start_ns + blip.start_min * 60_000_000_000),
                    "end": iso(start_ns + blip.end_min * 60_000_000_000),
                    "during_fault": fault.fault_id,
                    "factor": round(blip.params["factor"], 2),
                }
            )
    return {
        "schema_version": 1,
        "generator": generator,
        "topology": topology.to_dict(),
        "faults": [
            fault_truth(f, topology, trees, stats, quiet, start_ns, changes, runs) for f in plan.faults
        ],
        "decoys": decoys,
        "changes": [change_truth(c, start_ns, harmful) for c in changes],
        "ci_runs": [
            {
                "build_id": r.build_id,
                "service": r.service,
                "version": r.version,
                "attempt": r.attempt,
                "failed_tests": [c.name for c in r.cases if c.status == "failed"],
            }
            for r in runs
        ],
        "dropped_scenario_items": plan.dropped,
        "counts": counts,
    }
