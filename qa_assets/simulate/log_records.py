"""Which log records each pod writes in a minute: from its requests (access lines, sampled INFO lines,
errors with exceptions, degraded optional calls, slow requests), from lifecycle events (start-up,
shutdown, config reload, GC pressure, OOM kill, crash loop, outage) and from background work."""

from __future__ import annotations

import numpy as np

from qa_assets.simulate import errors as E
from qa_assets.simulate.logs import (
    SLOW_REQUEST_MS,
    LogRecord,
    ServiceLogProfile,
    client_error_line,
    crash_line,
    error_line,
    oom_line,
    render_templates,
)
from qa_assets.simulate.outcomes import ExceptionResolver, RequestValues, fill_paths
from qa_assets.simulate.templates import Template
from qa_assets.simulate.topology import Topology
from qa_assets.simulate.traffic import SERVER, TreeMinute
from qa_assets.simulate.world import LifecycleEvent, MinuteState

PodKey = tuple[int, int]  # (service index, pod index)


class LogRecordGenerator:
    def __init__(self, topology: Topology, resolver: ExceptionResolver, background_factor: float) -> None:
        self.topology = topology
        self.resolver = resolver
        self.background_factor = background_factor
        self.logs_enabled = np.array([s.log_channel != "none" and s.instrumented for s in topology.services])
        self.profiles = {
            i: ServiceLogProfile(topology, s) for i, s in enumerate(topology.services) if self.logs_enabled[i]
        }

    # ---------------------------------------------------------------------------------- requests

    def from_requests(
        self,
        outcome: TreeMinute,
        minute_ns: int,
        trace_ids: list[str],
        span_ids: np.ndarray,
        values: RequestValues,
        rng: np.random.Generator,
        out: dict[PodKey, list[LogRecord]],
    ) -> None:
        tree = outcome.tree
        end_ns_all = minute_ns + ((outcome.start_ms + outcome.duration_ms) * 1e6).astype(np.int64)
        for j in range(tree.size):
            if tree.kind[j] != SERVER or not tree.emit[j]:
                continue
            svc = int(tree.service[j])
            if not self.logs_enabled[svc]:
                continue
            rows = np.flatnonzero(outcome.present[j])
            if rows.size == 0:
                continue
            profile = self.profiles[svc]
            endpoint = tree.endpoints[j]
            pods = outcome.instance[j, rows]
            ends = end_ns_all[j, rows]
            codes = outcome.code[j, rows]
            status = outcome.status[j, rows]
            if profile.style == "nginx":
                self._access_lines(outcome, j, rows, pods, ends, status, values, out, svc)
                continue
            failed = codes != 0
            for k in np.flatnonzero(failed):
                r = int(rows[k])
                record = self._error_record(
                    outcome,
                    j,
                    r,
                    int(codes[k]),
                    int(status[k]),
                    int(ends[k]),
                    trace_ids[r],
                    span_ids[j, r],
                    profile,
                    endpoint,
                )
                out.setdefault((svc, int(pods[k])), []).append(record)
            sampled = ~failed & (rng.random(rows.size) < endpoint.log_share)
            self._info_lines(
                profile,
                endpoint,
                rows[sampled],
                pods[sampled],
                ends[sampled],
                outcome,
                j,
                trace_ids,
                span_ids,
                values,
                rng,
                out,
                svc,
            )
            slow = ~failed & (outcome.duration_ms[j, rows] > SLOW_REQUEST_MS)
            for k in np.flatnonzero(slow):
                r = int(rows[k])
                message = (
                    f"Slow request {endpoint.method} {endpoint.route} took "
                    f"{int(outcome.duration_ms[j, r])} ms"
                )
                out.setdefault((svc, int(pods[k])), []).append(
                    LogRecord(
                        int(ends[k]),
                        int(pods[k]),
                        "WARN",
                        profile.component("RequestTimingFilter"),
                        message,
                        trace_ids[r],
                        "%016x" % span_ids[j, r],
                        thread=_thread(r),
                    )
                )
            self._degraded_lines(
                outcome, j, rows, pods, end_ns_all, trace_ids, span_ids, rng, out, svc, profile
            )

    def _error_record(
        self,
        outcome: TreeMinute,
        j: int,
        r: int,
        code: int,
        status: int,
        end_ns: int,
        trace_id: str,
        span_id: int,
        profile: ServiceLogProfile,
        endpoint,
    ) -> LogRecord:
        tree = outcome.tree
        cause = int(outcome.cause[j, r])
        child_code = int(outcome.code[cause, r]) if cause >= 0 else 0
        child_status = int(outcome.status[cause, r]) if cause >= 0 else 0
        fault_id = (
            outcome.fault_ids[outcome.fault[j, r]] if code == E.FAULT and outcome.fault[j, r] >= 0 else ""
        )
        exc = self.resolver.for_node(tree, j, code, cause, fault_id, child_code, child_status, r % 2)
        service = profile.service
        pod = int(outcome.instance[j, r])
        if status < 500:  # a rejected request: a warning without a stack trace
            message = (
                f"{endpoint.method} {endpoint.route} rejected with {status}: {exc.message if exc else ''}"
            )
            return LogRecord(
                end_ns,
                pod,
                "WARN",
                profile.component("ValidationHandler"),
                message,
                trace_id,
                "%016x" % span_id,
                thread=_thread(r),
            )
        if code in (E.UPSTREAM_HTTP, E.UPSTREAM_DB) and cause >= 0:
            callee = self.topology.services[int(tree.callee[cause])]
            if service.proxy:  # a gateway passes upstream failures through: a warning, no stack trace
                message = (
                    f"{endpoint.method} {endpoint.route} -> {callee.name} failed with {status}: "
                    f"{exc.message if exc else 'upstream error'}"
                )
                return LogRecord(
                    end_ns,
                    pod,
                    "WARN",
                    profile.component("RoutingFilter"),
                    message,
                    trace_id,
                    "%016x" % span_id,
                    thread=_thread(r),
                )
            message = client_error_line(service, callee.name, tree.route_keys[cause], exc)
        else:
            message = error_line(service, endpoint.method, endpoint.route, exc)
        return LogRecord(
            end_ns,
            pod,
            "ERROR",
            profile.component(f"{service.noun.capitalize()}Controller"),
            message,
            trace_id,
            "%016x" % span_id,
            exception=exc,
            thread=_thread(r),
        )

    def _info_lines(
        self,
        profile: ServiceLogProfile,
        endpoint,
        rows: np.ndarray,
        pods: np.ndarray,
        ends: np.ndarray,
        outcome: TreeMinute,
        j: int,
        trace_ids: list[str],
        span_ids: np.ndarray,
        values: RequestValues,
        rng: np.random.Generator,
        out: dict[PodKey, list[LogRecord]],
        svc: int,
    ) -> None:
        if rows.size == 0:
            return
        pool = profile.requests_for(endpoint.key)
        if not pool:
            return
        weights = np.array([t.weight for t in pool])
        pick = rng.choice(len(pool), size=rows.size, p=weights / weights.sum())
        for t_index in np.unique(pick):
            chosen = pick == t_index
            sel = rows[chosen]
            template = pool[int(t_index)]
            context = {
                "method": [endpoint.method] * sel.size,
                "route": [endpoint.route] * sel.size,
                "path": fill_paths(endpoint.route, values, sel),
                "status": [str(v) for v in outcome.status[j, sel]],
                "duration_ms": [str(max(1, int(v))) for v in outcome.duration_ms[j, sel]],
                "user_id": [values.user_id[r] for r in sel],
                "sku": [values.product[r] for r in sel],
            }
            messages = render_templates(template, rng, sel.size, context)
            component = profile.component(template.component)
            for r, pod, end, message in zip(sel, pods[chosen], ends[chosen], messages):
                out.setdefault((svc, int(pod)), []).append(
                    LogRecord(
                        int(end),
                        int(pod),
                        template.level,
                        component,
                        message,
                        trace_ids[r],
                        "%016x" % span_ids[j, r],
                        thread=_thread(int(r)),
                    )
                )

    def _degraded_lines(
        self,
        outcome: TreeMinute,
        j: int,
        rows: np.ndarray,
        pods: np.ndarray,
        end_ns_all: np.ndarray,
        trace_ids: list[str],
        span_ids: np.ndarray,
        rng: np.random.Generator,
        out: dict[PodKey, list[LogRecord]],
        svc: int,
        profile: ServiceLogProfile,
    ) -> None:
        tree = outcome.tree
        pool = profile.pools["degraded"]
        for c in tree.children[j]:
            if tree.propagate[c] >= 1.0:
                continue
            failed = outcome.present[c, rows] & (outcome.code[c, rows] != 0)
            if not failed.any():
                continue
            callee = self.topology.services[int(tree.callee[c])]
            fitting = [t for t in pool if callee.name in t.text or callee.noun in t.text] or pool[:1]
            if not fitting:
                continue
            template = fitting[0]
            for k in np.flatnonzero(failed):
                r = int(rows[k])
                exc = self.resolver.for_node(tree, c, int(outcome.code[c, r]), -1, "", 0, 0)
                reason = exc.message if exc else f"status {int(outcome.status[c, r])}"
                context = {
                    "callee": [callee.name],
                    "reason": [reason],
                    "session_id": [trace_ids[r][:24]],
                    "email": None,
                }
                context = {k2: v for k2, v in context.items() if v is not None}
                message = render_templates(template, rng, 1, context)[0]
                out.setdefault((svc, int(pods[k])), []).append(
                    LogRecord(
                        int(end_ns_all[c, r]),
                        int(pods[k]),
                        template.level,
                        profile.component(template.component),
                        message,
                        trace_ids[r],
                        "%016x" % span_ids[j, r],
                        thread=_thread(r),
                    )
                )

    def _access_lines(
        self,
        outcome: TreeMinute,
        j: int,
        rows: np.ndarray,
        pods: np.ndarray,
        ends: np.ndarray,
        status: np.ndarray,
        values: RequestValues,
        out: dict[PodKey, list[LogRecord]],
        svc: int,
    ) -> None:
        endpoint = outcome.tree.endpoints[j]
        paths = fill_paths(endpoint.route, values, rows)
        seconds = outcome.duration_ms[j, rows] / 1000.0
        sizes = 2_000 + (np.asarray([hash_len(p) for p in paths]) * 37) % 40_000
        referer = f"https://{self.topology.domain}/"
        for k, r in enumerate(rows):
            answer = int(status[k]) or 502
            request = (
                values.client_ip[r],
                f"{endpoint.method} {paths[k]}",
                answer,
                int(sizes[k]) if answer < 400 else 157,
                float(seconds[k]),
                values.user_agent[r],
                referer,
            )
            out.setdefault((svc, int(pods[k])), []).append(
                LogRecord(int(ends[k]), int(pods[k]), "INFO", "access", "", request=request)
            )

    # --------------------------------------------------------------------------------- lifecycle

    def from_lifecycle(
        self, state: MinuteState, minute_ns: int, rng: np.random.Generator, out: dict[PodKey, list[LogRecord]]
    ) -> None:
        for event in state.lifecycle:
            if not self.logs_enabled[event.service]:
                continue
            profile = self.profiles[event.service]
            if profile.style == "nginx":
                continue
            at = minute_ns + int(event.offset_s * 1e9)
            for record in self._lifecycle_records(event, profile, state, at, rng):
                out.setdefault((event.service, event.instance), []).append(record)

    def _lifecycle_records(
        self,
        event: LifecycleEvent,
        profile: ServiceLogProfile,
        state: MinuteState,
        at: int,
        rng: np.random.Generator,
    ) -> list[LogRecord]:
        service = profile.service
        pod = state.pod(event.service, event.instance)
        if pod is None:
            return []
        kind = event.kind
        context = {
            "version": [pod.version],
            "pod": [pod.pod],
            "rev": [str(event.detail.get("rev", state.config_revisions[event.service]))],
            "pct": [f"{float(event.detail.get('pct', 90.0)):.1f}"],
            "mb": [str(int(float(event.detail.get("mb", pod.memory_mb))))],
            "last_up": [_minutes_before(at, 3)],
        }
        if kind == "oom":
            exc = E.oom_exception(service)
            return [
                LogRecord(
                    at,
                    event.instance,
                    "ERROR",
                    profile.component("Application"),
                    oom_line(service, int(rng.integers(7, 99))),
                    exception=exc if service.language == "java" else None,
                    thread="main",
                )
            ]
        if kind == "crash":
            return [
                LogRecord(
                    at,
                    event.instance,
                    "FATAL",
                    profile.component("Application"),
                    crash_line(service),
                    thread="main",
                )
            ]
        pool = profile.pools.get(kind, [])
        if kind in ("gc", "outage") and pool:
            pool = [pool[int(rng.integers(len(pool)))]]
        records = []
        for i, template in enumerate(pool):
            message = render_templates(template, rng, 1, context)[0]
            records.append(
                LogRecord(
                    at + i * 1_000_000,
                    event.instance,
                    template.level,
                    profile.component(template.component),
                    message,
                    thread="main",
                )
            )
        return records

    # -------------------------------------------------------------------------------- background

    def background(
        self, state: MinuteState, minute_ns: int, rng: np.random.Generator, out: dict[PodKey, list[LogRecord]]
    ) -> None:
        for svc, profile in self.profiles.items():
            if profile.style == "nginx":
                continue
            pool = profile.pools["background"]
            if not pool:
                continue
            rates = np.array([t.weight for t in pool]) * self.background_factor
            pods = state.instances[svc]
            counts = rng.poisson(np.tile(rates, (len(pods), 1)))
            for i in range(len(pods)):
                if pods[i].crash_looping or pods[i].available < 0.5:
                    continue
                for t_index in np.flatnonzero(counts[i]):
                    template: Template = pool[int(t_index)]
                    n = int(counts[i, t_index])
                    messages = render_templates(template, rng, n)
                    times = minute_ns + (rng.random(n) * 60e9).astype(np.int64)
                    component = profile.component(template.component)
                    for at, message in zip(times, messages):
                        out.setdefault((svc, i), []).append(
                            LogRecord(int(at), i, template.level, component, message, thread="scheduling-1")
                        )


def _thread(r: int) -> str:
    return f"http-nio-8080-exec-{r % 200 + 1}"


def hash_len(text: str) -> int:
    return sum(map(ord, text[-6:]))


def _minutes_before(ns: int, minutes: int) -> str:
    value = np.datetime64(ns - minutes * 60_000_000_000, "ns")
    return str(np.datetime_as_string(value, unit="s")).replace("T", " ")
