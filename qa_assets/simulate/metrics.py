"""Metrics as a pod's SDK and the cluster's collector report them, once a minute.

- SDK (instrumented services): ``http.server.request.duration``, ``http.client.request.duration`` and
  ``db.client.operation.duration`` histograms, cumulative since the process started (a restart starts a new
  series with a new ``startTimeUnixNano``).
- Platform (every workload and datastore, the uninstrumented one included): ``container.cpu.usage``,
  ``container.memory.working_set``, ``k8s.container.memory_limit`` and ``k8s.container.restarts`` gauges
  from kubeletstats / k8s_cluster receivers.
Histograms are aggregated from the traffic engine's arrays with numpy, not per request.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from qa_assets.simulate import errors as E
from qa_assets.simulate.otlp import ResourceCache, attrs, js, scope_for
from qa_assets.simulate.topology import Topology
from qa_assets.simulate.traffic import CLIENT, DATASTORE, SERVER, TreeMinute
from qa_assets.simulate.world import MinuteState

BOUNDS_S = np.array([0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0])
BOUNDS_JSON = "[" + ",".join(f"{b:g}" for b in BOUNDS_S) + "]"
HISTOGRAMS = {
    SERVER: ("http.server.request.duration", "Duration of HTTP server requests."),
    CLIENT: ("http.client.request.duration", "Duration of HTTP client requests."),
    DATASTORE: ("db.client.operation.duration", "Duration of database client operations."),
}


@dataclass
class Series:
    count: int = 0
    total: float = 0.0
    low: float = float("inf")
    high: float = 0.0
    buckets: np.ndarray = field(default_factory=lambda: np.zeros(len(BOUNDS_S) + 1, dtype=np.int64))


class MetricsState:
    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.series: dict[tuple[int, str, int, str], Series] = {}  # (service, pod uid, kind, attrs json)
        self.requests_per_pod: dict[tuple[int, int], int] = {}
        self.expected_load = np.ones(len(topology.services))
        self._attr_cache: dict[tuple, str] = {}

    # --------------------------------------------------------------------------------- accumulate

    def add(self, outcome: TreeMinute, state: MinuteState) -> None:
        tree = outcome.tree
        n_buckets = len(BOUNDS_S) + 1
        for j in range(tree.size):
            rows = np.flatnonzero(outcome.present[j])
            if rows.size == 0:
                continue
            kind = int(tree.kind[j])
            svc = int(tree.service[j])
            pods = outcome.instance[j, rows].astype(np.int64)
            if kind == SERVER:
                for i, c in enumerate(np.bincount(pods).tolist()):
                    if c:
                        self.requests_per_pod[(svc, i)] = self.requests_per_pod.get((svc, i), 0) + c
            elif kind == DATASTORE:
                target = int(tree.callee[j])
                self.requests_per_pod[(target, 0)] = self.requests_per_pod.get((target, 0), 0) + int(
                    rows.size
                )
            if not tree.emit[j]:
                continue
            seconds = outcome.duration_ms[j, rows] / 1000.0
            # one series per (pod, status, failure code): group with numpy, then merge each group
            combined = (pods * 1024 + outcome.status[j, rows].astype(np.int64)) * 32 + outcome.code[j, rows]
            groups, inverse = np.unique(combined, return_inverse=True)
            counts = np.bincount(inverse)
            sums = np.bincount(inverse, weights=seconds)
            lows = np.full(groups.size, np.inf)
            np.minimum.at(lows, inverse, seconds)
            highs = np.zeros(groups.size)
            np.maximum.at(highs, inverse, seconds)
            buckets = np.bincount(
                inverse * n_buckets + np.searchsorted(BOUNDS_S, seconds, side="left"),
                minlength=groups.size * n_buckets,
            ).reshape(groups.size, n_buckets)
            for g, value in enumerate(groups.tolist()):
                pod_index, rest = divmod(value, 1024 * 32)
                status, code = divmod(rest, 32)
                label = self._label_cached(tree, j, kind, status, code)
                uid = state.instances[svc][pod_index].uid
                series = self.series.setdefault((svc, uid, kind, label), Series())
                series.count += int(counts[g])
                series.total += float(sums[g])
                series.low = min(series.low, float(lows[g]))
                series.high = max(series.high, float(highs[g]))
                series.buckets += buckets[g]

    def _label_cached(self, tree, j: int, kind: int, status: int, code: int) -> str:
        key = (id(tree), j, status, code)
        label = self._attr_cache.get(key)
        if label is None:
            label = self._attr_cache[key] = self._label(tree, j, kind, status, code)
        return label

    def _label(self, tree, j: int, kind: int, status: int, code: int) -> str:
        services = self.topology.services
        if kind == SERVER:
            endpoint = tree.endpoints[j]
            pairs = [
                ("http.request.method", endpoint.method),
                ("http.route", endpoint.route),
                ("http.response.status_code", int(status)),
            ]
            if status >= 500:
                pairs.append(("error.type", str(status)))
            return attrs(pairs)
        callee = services[int(tree.callee[j])]
        if kind == CLIENT:
            endpoint = tree.endpoints[j]
            pairs = [
                ("http.request.method", endpoint.method),
                ("server.address", callee.name),
                ("server.port", callee.port),
            ]
            if status:
                pairs.append(("http.response.status_code", int(status)))
            if code in (E.TIMEOUT, E.REFUSED):
                pairs.append(("error.type", "timeout" if code == E.TIMEOUT else "connection_refused"))
            elif status >= 400:
                pairs.append(("error.type", str(status)))
            return attrs(pairs)
        call = tree.calls[j]
        pairs = [
            ("db.system", callee.db_system or ""),
            ("db.operation.name", call.operation or ""),
            ("server.address", callee.name),
        ]
        if code:
            pairs.append(
                (
                    "error.type",
                    {E.TIMEOUT: "timeout", E.REFUSED: "connection_refused"}.get(code, "query_error"),
                )
            )
        return attrs(pairs)

    # ------------------------------------------------------------------------------------- export

    def export(
        self, state: MinuteState, minute_end_ns: int, resources: ResourceCache, rng: np.random.Generator
    ) -> tuple[list[str], int]:
        """One ``ExportMetricsServiceRequest`` line per minute and the number of data points in it."""
        topology = self.topology
        alive: dict[tuple[int, str], int] = {}
        for s, pods in enumerate(state.instances):
            for i, pod in enumerate(pods):
                alive[(s, pod.uid)] = i
        self.series = {k: v for k, v in self.series.items() if (k[0], k[1]) in alive}
        by_pod: dict[tuple[int, str], list[tuple[int, str, Series]]] = {}
        for (s, uid, kind, label), series in self.series.items():
            by_pod.setdefault((s, uid), []).append((kind, label, series))
        resource_parts = []
        points = 0
        for s, service in enumerate(topology.services):
            pods = state.instances[s]
            for i, pod in enumerate(pods):
                version = state.versions[s]
                if service.emits_telemetry and (s, pod.uid) in by_pod:
                    grouped: dict[int, list[str]] = {}
                    for kind, label, series in by_pod[(s, pod.uid)]:
                        grouped.setdefault(kind, []).append(
                            self._histogram_point(series, label, pod.started_ns, minute_end_ns)
                        )
                    scopes = []
                    for kind in sorted(grouped):
                        name, description = HISTOGRAMS[kind]
                        scope_name, scope_version = scope_for(service, kind, None)
                        metric = (
                            '{"name":"%s","description":"%s","unit":"s","histogram":{"dataPoints":[%s],'
                            '"aggregationTemporality":2}}' % (name, description, ",".join(grouped[kind]))
                        )
                        scopes.append(
                            '{"scope":{"name":%s,"version":%s},"metrics":[%s]}'
                            % (js(scope_name), js(scope_version), metric)
                        )
                        points += len(grouped[kind])
                    resource_parts.append(
                        '{"resource":%s,"scopeMetrics":[%s]}'
                        % (resources.get(s, pod, version), ",".join(scopes))
                    )
                infra, count = self._platform_metrics(s, i, pod, minute_end_ns, rng)
                points += count
                resource_parts.append(
                    '{"resource":%s,"scopeMetrics":[%s]}' % (resources.get(s, pod, version, sdk=False), infra)
                )
        self._update_load()
        return ['{"resourceMetrics":[%s]}' % ",".join(resource_parts)], points

    @staticmethod
    def _histogram_point(series: Series, label: str, start_ns: int, end_ns: int) -> str:
        buckets = ",".join(f'"{c}"' for c in series.buckets.tolist())
        return (
            '{"startTimeUnixNano":"%d","timeUnixNano":"%d","count":"%d","sum":%s,"bucketCounts":[%s],'
            '"explicitBounds":%s,"min":%s,"max":%s,"attributes":[%s]}'
            % (
                start_ns,
                end_ns,
                series.count,
                _num(series.total),
                buckets,
                BOUNDS_JSON,
                _num(series.low),
                _num(series.high),
                label,
            )
        )

    def _platform_metrics(
        self, s: int, i: int, pod, end_ns: int, rng: np.random.Generator
    ) -> tuple[str, int]:
        service = self.topology.services[s]
        served = self.requests_per_pod.get((s, i), 0)
        load = served / max(1.0, self.expected_load[s])
        if pod.crash_looping:
            cpu = float(rng.uniform(0.005, 0.04))
        else:
            busy = 0.35 + 0.65 * min(4.0, load)
            gc = 1.0 + max(0.0, pod.memory_mb / service.memory_limit_mb - 0.8) * 4.0
            cpu = max(0.002, service.cpu_base * busy * gc * float(rng.lognormal(0, 0.08)))
        memory = int(pod.memory_mb * 1024 * 1024)
        limit = int(service.memory_limit_mb * 1024 * 1024)
        container = "[%s]" % attrs([("k8s.container.name", service.name)])
        kubelet = (
            '{"name":"container.cpu.usage","unit":"{cpu}","gauge":{"dataPoints":[{"timeUnixNano":"%d",'
            '"asDouble":%s,"attributes":%s}]}},'
            '{"name":"container.memory.working_set","unit":"By","gauge":{"dataPoints":[{"timeUnixNano":"%d",'
            '"asInt":"%d","attributes":%s}]}}'
            % (end_ns, _num(round(cpu, 5)), container, end_ns, memory, container)
        )
        cluster = (
            '{"name":"k8s.container.memory_limit","unit":"By","gauge":{"dataPoints":[{"timeUnixNano":"%d",'
            '"asInt":"%d","attributes":%s}]}},'
            '{"name":"k8s.container.restarts","unit":"{restart}","gauge":{"dataPoints":[{"timeUnixNano":"%d",'
            '"asInt":"%d","attributes":%s}]}}' % (end_ns, limit, container, end_ns, pod.restarts, container)
        )
        text = (
            '{"scope":{"name":"github.com/open-telemetry/opentelemetry-collector-contrib/receiver/'
            'kubeletstatsreceiver","version":"0.114.0"},"metrics":[%s]},'
            '{"scope":{"name":"github.com/open-telemetry/opentelemetry-collector-contrib/receiver/'
            'k8sclusterreceiver","version":"0.114.0"},"metrics":[%s]}' % (kubelet, cluster)
        )
        return text, 4

    def _update_load(self) -> None:
        per_service: dict[int, list[int]] = {}
        for (s, _i), count in self.requests_per_pod.items():
            per_service.setdefault(s, []).append(count)
        for s, counts in per_service.items():
            mean = float(np.mean(counts))
            self.expected_load[s] = (
                0.97 * self.expected_load[s] + 0.03 * mean if self.expected_load[s] > 1 else mean
            )
        self.requests_per_pod = {}


def _num(value: float) -> str:
    if value == float("inf"):
        return "0"
    return js_number(value)


def js_number(value: float) -> str:
    text = repr(float(value))
    return text if "e" not in text and "inf" not in text and "nan" not in text else f"{value:.9f}"
