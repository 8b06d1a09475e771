"""OTLP/JSON as the OpenTelemetry Collector's ``file`` exporter writes it: one ``Export*ServiceRequest``
per line, resources grouped with their scopes, ids as lower-case hex, times ``*UnixNano`` as strings,
int64 values (``intValue``, ``asInt``, ``count``, ``bucketCounts``) as strings, enums as integers.

Spans are rendered straight to JSON text from the traffic engine's arrays (node by node, a template per
node), because this is where most of the simulator's output volume is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson

from qa_assets.simulate import errors as E
from qa_assets.simulate.outcomes import ExceptionResolver, RequestValues, fill_paths
from qa_assets.simulate.topology import Service, Topology
from qa_assets.simulate.traffic import CLIENT, DATASTORE, SERVER, TraceTree, TreeMinute
from qa_assets.simulate.world import Instance

SPAN_KIND = {SERVER: 2, CLIENT: 3, DATASTORE: 3}
SDK = {
    "java": ("java", "1.44.1", "opentelemetry-javaagent", "2.10.0"),
    "go": ("go", "1.32.0", None, None),
    "python": ("python", "1.28.2", "opentelemetry-distro", "0.49b2"),
    "node": ("nodejs", "1.28.0", "@opentelemetry/auto-instrumentations-node", "0.53.0"),
    "nginx": ("cpp", "1.17.0", "otel-nginx", "1.1.0"),
}
BATCH_SECONDS = 10  # the collector's batch processor flushes on a timer: ~one line per 10 s of spans


def js(value: str) -> str:
    """A JSON string literal."""
    return orjson.dumps(value).decode()


def attr(key: str, value: object) -> str:
    if isinstance(value, bool):
        return '{"key":%s,"value":{"boolValue":%s}}' % (js(key), "true" if value else "false")
    if isinstance(value, (int, np.integer)):
        return '{"key":%s,"value":{"intValue":"%d"}}' % (js(key), value)
    if isinstance(value, float):
        return '{"key":%s,"value":{"doubleValue":%s}}' % (js(key), orjson.dumps(value).decode())
    return '{"key":%s,"value":{"stringValue":%s}}' % (js(key), js(str(value)))


def attrs(pairs: list[tuple[str, object]]) -> str:
    return ",".join(attr(k, v) for k, v in pairs)


def scope_for(service: Service, kind: int, db_system: str | None) -> tuple[str, str]:
    lang = service.language or "go"
    if lang == "java":
        if kind == SERVER:
            return "io.opentelemetry.spring-webmvc-6.0", "2.10.0-alpha"
        if kind == CLIENT:
            return "io.opentelemetry.spring-web-3.1", "2.10.0-alpha"
        return {"redis": "io.opentelemetry.lettuce-5.1", "kafka": "io.opentelemetry.kafka-clients-2.6"}.get(
            db_system or "", "io.opentelemetry.jdbc"
        ), "2.10.0-alpha"
    if lang == "go":
        if kind in (SERVER, CLIENT):
            return "go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp", "0.58.0"
        return {
            "redis": "github.com/redis/go-redis/extra/redisotel",
            "kafka": "github.com/IBM/sarama/otelsarama",
        }.get(db_system or "", "github.com/exaring/otelpgx"), "0.6.2"
    if lang == "python":
        if kind == SERVER:
            return "opentelemetry.instrumentation.flask", "0.49b2"
        if kind == CLIENT:
            return "opentelemetry.instrumentation.requests", "0.49b2"
        return {
            "redis": "opentelemetry.instrumentation.redis",
            "kafka": "opentelemetry.instrumentation.kafka",
        }.get(db_system or "", "opentelemetry.instrumentation.psycopg2"), "0.49b2"
    if lang == "node":
        if kind in (SERVER, CLIENT):
            return "@opentelemetry/instrumentation-http", "0.55.0"
        return {
            "redis": "@opentelemetry/instrumentation-ioredis",
            "kafka": "@opentelemetry/instrumentation-kafkajs",
        }.get(db_system or "", "@opentelemetry/instrumentation-pg"), "0.45.0"
    return "nginx", "1.1.0"


def resource_attributes(
    topology: Topology, service: Service, pod: Instance, version: str, sdk: bool = True
) -> list[tuple[str, object]]:
    pairs: list[tuple[str, object]] = [
        ("service.name", service.name),
        ("service.version", version),
        ("service.namespace", topology.namespace),
        ("service.instance.id", pod.uid),
        ("deployment.environment.name", topology.environment),
        ("host.name", pod.pod),
        ("k8s.namespace.name", topology.namespace),
        ("k8s.pod.name", pod.pod),
    ]
    if not service.is_datastore:
        pairs.append(("k8s.deployment.name", service.name))
    language = service.language or ""
    if sdk and language in SDK:
        sdk_language, sdk_version, distro, distro_version = SDK[language]
        pairs += [
            ("telemetry.sdk.name", "opentelemetry"),
            ("telemetry.sdk.language", sdk_language),
            ("telemetry.sdk.version", sdk_version),
        ]
        if distro:
            pairs += [("telemetry.distro.name", distro), ("telemetry.distro.version", distro_version)]
    return pairs


class ResourceCache:
    """Rendered ``resource`` objects per pod process (they change on deploys and restarts)."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self._cache: dict[tuple[int, str, str, bool], str] = {}

    def get(self, service_index: int, pod: Instance, version: str, sdk: bool = True) -> str:
        key = (service_index, pod.uid, version, sdk)
        if key not in self._cache:
            if len(self._cache) > 20_000:
                self._cache.clear()
            service = self.topology.services[service_index]
            self._cache[key] = '{"attributes":[%s]}' % attrs(
                resource_attributes(self.topology, service, pod, version, sdk)
            )
        return self._cache[key]


@dataclass
class NodeTemplate:
    name: str
    kind: int
    scope: int  # index into SpanEncoder.scopes
    static_attrs: str
    route: str  # for url.path / url.full
    url_prefix: str  # "http://callee:port" for client spans


class SpanEncoder:
    """Turns ``TreeMinute`` outcomes into span JSON text grouped by resource, scope and batch."""

    def __init__(self, topology: Topology, resolver: ExceptionResolver) -> None:
        self.topology = topology
        self.resolver = resolver
        self.scopes: list[tuple[str, str]] = []
        self._scope_index: dict[tuple[str, str], int] = {}
        self._templates: dict[int, list[NodeTemplate]] = {}
        self._exception_text: dict[int, tuple[str, str]] = {}

    def _scope(self, scope: tuple[str, str]) -> int:
        if scope not in self._scope_index:
            self._scope_index[scope] = len(self.scopes)
            self.scopes.append(scope)
        return self._scope_index[scope]

    def templates(self, tree: TraceTree) -> list[NodeTemplate]:
        key = id(tree)
        if key not in self._templates:
            self._templates[key] = [self._node_template(tree, j) for j in range(tree.size)]
        return self._templates[key]

    def _node_template(self, tree: TraceTree, j: int) -> NodeTemplate:
        services = self.topology.services
        service = services[int(tree.service[j])]
        kind = int(tree.kind[j])
        if kind == SERVER:
            endpoint = tree.endpoints[j]
            assert endpoint is not None
            pairs: list[tuple[str, object]] = [
                ("http.request.method", endpoint.method),
                ("http.route", endpoint.route),
                ("url.scheme", "http"),
                (
                    "server.address",
                    service.name if service.name != self.topology.entry else self.topology.domain,
                ),
                ("server.port", service.port if service.name != self.topology.entry else 443),
                ("network.protocol.version", "1.1"),
            ]
            return NodeTemplate(
                f"{endpoint.method} {endpoint.route}",
                2,
                self._scope(scope_for(service, SERVER, None)),
                attrs(pairs),
                endpoint.route,
                "",
            )
        callee = services[int(tree.callee[j])]
        call = tree.calls[j]
        assert call is not None
        if kind == CLIENT:
            endpoint = tree.endpoints[j]
            assert endpoint is not None
            pairs = [
                ("http.request.method", endpoint.method),
                ("server.address", callee.name),
                ("server.port", callee.port),
                ("peer.service", callee.name),
            ]
            name = f"HTTP {endpoint.method}" if service.language == "go" else endpoint.method
            return NodeTemplate(
                name,
                3,
                self._scope(scope_for(service, CLIENT, None)),
                attrs(pairs),
                endpoint.route,
                f"http://{callee.name}:{callee.port}",
            )
        system = callee.db_system or ""
        operation = call.operation or ""
        if callee.kind == "queue":
            destination = call.table or callee.name
            pairs = [
                ("messaging.system", system),
                ("messaging.destination.name", destination),
                ("messaging.operation.type", "send"),
                ("messaging.operation.name", operation),
                ("server.address", callee.name),
                ("server.port", callee.port),
                ("peer.service", callee.name),
            ]
            return NodeTemplate(
                f"{operation} {destination}",
                4,
                self._scope(scope_for(service, DATASTORE, system)),
                attrs(pairs),
                "",
                "",
            )
        pairs = [("db.system", system)]
        if callee.db_namespace:
            pairs.append(("db.namespace", callee.db_namespace))
        pairs.append(("db.operation.name", operation))
        if call.table and system != "redis":
            pairs.append(("db.collection.name", call.table))
        if call.statement:
            pairs.append(("db.query.text", call.statement))
        pairs += [
            ("server.address", callee.name),
            ("server.port", callee.port),
            ("peer.service", callee.name),
        ]
        name = f"{operation} {call.table}" if call.table and system != "redis" else operation
        return NodeTemplate(name, 3, self._scope(scope_for(service, DATASTORE, system)), attrs(pairs), "", "")

    def _exception_json(self, exc: E.RenderedException | None, time_ns: int) -> tuple[str, str]:
        if exc is None:
            return "", ""
        key = id(exc)
        if key not in self._exception_text:
            body = attrs(
                [
                    ("exception.type", exc.type or "Error"),
                    ("exception.message", exc.message),
                    ("exception.stacktrace", exc.stacktrace),
                ]
            )
            self._exception_text[key] = (body, js(exc.message[:300]))
        body, message = self._exception_text[key]
        return (
            ',"events":[{"timeUnixNano":"%d","name":"exception","attributes":[%s]}]' % (time_ns, body),
            message,
        )

    def encode(
        self,
        outcome: TreeMinute,
        minute_ns: int,
        trace_ids: list[str],
        span_ids: np.ndarray,
        values: RequestValues,
        entry_index: int,
        sink: "SpanSink",
    ) -> int:
        """Render every emitted span of the outcome into ``sink``; returns how many."""
        tree = outcome.tree
        templates = self.templates(tree)
        start_ns_all = minute_ns + (outcome.start_ms * 1e6).astype(np.int64)
        end_ns_all = start_ns_all + np.maximum(1000, (outcome.duration_ms * 1e6).astype(np.int64))
        emitted = 0
        for j in range(tree.size):
            if not tree.emit[j]:
                continue
            rows = np.flatnonzero(outcome.present[j])
            if rows.size == 0:
                continue
            emitted += rows.size
            t = templates[j]
            svc = int(tree.service[j])
            p = int(tree.parent[j])
            start = start_ns_all[j, rows]
            end = end_ns_all[j, rows]
            batch = np.clip((end - minute_ns) // (BATCH_SECONDS * 1_000_000_000), 0, 5)
            keys = sink.keys(batch, svc, outcome.instance[j, rows], t.scope)
            code = outcome.code[j, rows]
            has_parent = p >= 0 and not tree.new_root[j]
            if tree.new_root[j]:
                traces = [
                    f"{a:016x}{b:016x}"
                    for a, b in zip(span_ids[j, rows].tolist(), span_ids[p, rows].tolist())
                ]
            else:
                traces = [trace_ids[r] for r in rows.tolist()]
            paths = fill_paths(t.route, values, rows) if t.route else None
            is_entry = j == 0 and svc == entry_index
            ok = code == 0
            if ok.any():
                sink.add(
                    keys[ok],
                    self._ok_spans(
                        t,
                        ok,
                        rows,
                        traces,
                        span_ids[j, rows],
                        span_ids[p, rows] if has_parent else None,
                        start,
                        end,
                        paths,
                        values,
                        is_entry,
                        outcome.status[j, rows],
                    ),
                )
            for k in np.flatnonzero(~ok).tolist():
                r = int(rows[k])
                parent = ',"parentSpanId":"%016x"' % span_ids[p, r] if has_parent else ""
                dynamic = self._dynamic_attrs(
                    t, k, paths, int(outcome.status[j, r]), int(code[k]), values, r, is_entry
                )
                extra, events, status_json = self._failure(
                    tree, outcome, j, r, int(code[k]), int(outcome.status[j, r]), int(end[k])
                )
                head = '{"traceId":"%s","spanId":"%016x"' % (traces[k], span_ids[j, r])
                body = (
                    ',"name":%s,"kind":%d,"startTimeUnixNano":"%d","endTimeUnixNano":"%d",'
                    '"attributes":[%s%s%s]%s,"status":{%s}}'
                    % (
                        js(t.name),
                        t.kind,
                        start[k],
                        end[k],
                        t.static_attrs,
                        dynamic,
                        extra,
                        events,
                        status_json,
                    )
                )
                text = head + parent + body
                sink.add(keys[[k]], [text])
        return emitted

    def _ok_spans(
        self,
        t: NodeTemplate,
        ok: np.ndarray,
        rows: np.ndarray,
        traces: list[str],
        own: np.ndarray,
        parents: np.ndarray | None,
        start: np.ndarray,
        end: np.ndarray,
        paths: list[str] | None,
        values: RequestValues,
        is_entry: bool,
        status: np.ndarray,
    ) -> list[str]:
        """The common case, one format string per node: spans that succeeded."""
        index = np.flatnonzero(ok)
        pick = index.tolist()
        head = '{"traceId":"%s","spanId":"%016x"' + (',"parentSpanId":"%016x"' if parents is not None else "")
        head += ',"name":' + js(t.name).replace("%", "%%") + ',"kind":%d' % t.kind
        head += ',"startTimeUnixNano":"%d","endTimeUnixNano":"%d"'
        columns: list[list] = [[traces[k] for k in pick], own[index].tolist()]
        if parents is not None:
            columns.append(parents[index].tolist())
        columns += [start[index].tolist(), end[index].tolist()]
        dynamic = ""
        if t.kind == 2:
            dynamic += ',{"key":"url.path","value":{"stringValue":"%s"}}'
            columns.append([paths[k] for k in pick] if paths else [t.route] * len(pick))
            if is_entry:
                dynamic += (
                    ',{"key":"client.address","value":{"stringValue":"%s"}},'
                    '{"key":"user_agent.original","value":{"stringValue":%s}}'
                )
                chosen = rows[index].tolist()
                columns.append([values.client_ip[r] for r in chosen])
                columns.append([_json_text(values.user_agent[r]) for r in chosen])
            dynamic += ',{"key":"http.response.status_code","value":{"intValue":"%d"}}'
            columns.append(status[index].tolist())
        elif t.url_prefix:
            dynamic += (
                ',{"key":"url.full","value":{"stringValue":"'
                + t.url_prefix.replace("%", "%%")
                + '%s"}},{"key":"http.response.status_code","value":{"intValue":"%d"}}'
            )
            columns.append([paths[k] for k in pick] if paths else [""] * len(pick))
            columns.append(status[index].tolist())
        fmt = head + ',"attributes":[' + t.static_attrs.replace("%", "%%") + dynamic + '],"status":{}}'
        return [fmt % row for row in zip(*columns)]

    def _dynamic_attrs(
        self,
        t: NodeTemplate,
        k: int,
        paths: list[str] | None,
        status: int,
        code: int,
        values: RequestValues,
        r: int,
        is_entry: bool,
    ) -> str:
        parts = []
        if t.kind == 2:
            parts.append(
                ',{"key":"url.path","value":{"stringValue":%s}}' % js(paths[k] if paths else t.route)
            )
            if is_entry:
                parts.append(',{"key":"client.address","value":{"stringValue":"%s"}}' % values.client_ip[r])
                parts.append(
                    ',{"key":"user_agent.original","value":{"stringValue":%s}}' % js(values.user_agent[r])
                )
            parts.append(',{"key":"http.response.status_code","value":{"intValue":"%d"}}' % status)
            if status >= 500:
                parts.append(',{"key":"error.type","value":{"stringValue":"%d"}}' % status)
        elif t.url_prefix:
            parts.append(
                ',{"key":"url.full","value":{"stringValue":%s}}'
                % js(t.url_prefix + (paths[k] if paths else ""))
            )
            if status:
                parts.append(',{"key":"http.response.status_code","value":{"intValue":"%d"}}' % status)
            if code == E.HTTP_ERROR:
                parts.append(',{"key":"error.type","value":{"stringValue":"%d"}}' % status)
        return "".join(parts)

    def _failure(
        self, tree: TraceTree, outcome: TreeMinute, j: int, r: int, code: int, status: int, end_ns: int
    ) -> tuple[str, str, str]:
        """(extra attributes, events, status body) of a span."""
        if code == 0:
            return "", "", ""
        kind = tree.kind[j]
        if kind == SERVER:
            if status < 500:  # a 4xx answer: the server did its job, the span status stays unset
                return "", "", ""
            cause = int(outcome.cause[j, r])
            child_code = int(outcome.code[cause, r]) if cause >= 0 else 0
            child_status = int(outcome.status[cause, r]) if cause >= 0 else 0
            fault_id = (
                outcome.fault_ids[outcome.fault[j, r]] if code == E.FAULT and outcome.fault[j, r] >= 0 else ""
            )
            exc = self.resolver.for_node(tree, j, int(code), cause, fault_id, child_code, child_status, r % 2)
            events, message = self._exception_json(exc, end_ns)
            return "", events, ('"message":%s,"code":2' % message) if message else '"code":2'
        if code == E.HTTP_ERROR:
            return "", "", '"code":2'
        exc = self.resolver.for_node(tree, j, int(code), -1, "", 0, 0)
        events, message = self._exception_json(exc, end_ns)
        error_type = exc.type if exc is not None and exc.type else "Error"
        extra = ',{"key":"error.type","value":{"stringValue":%s}}' % js(error_type)
        return extra, events, ('"message":%s,"code":2' % message) if message else '"code":2'


_JSON_TEXT: dict[str, str] = {}


def _json_text(value: str) -> str:
    text = _JSON_TEXT.get(value)
    if text is None:
        text = _JSON_TEXT[value] = js(value)
    return text


class SpanSink:
    """One minute of rendered spans with their (batch, service, pod, scope) group keys."""

    def __init__(self) -> None:
        self._keys: list[np.ndarray] = []
        self._texts: list[str] = []

    @staticmethod
    def keys(batch: np.ndarray, service: int, pods: np.ndarray, scope: int) -> np.ndarray:
        return ((batch.astype(np.int64) * 4096 + service) * 4096 + pods.astype(np.int64)) * 4096 + scope

    def add(self, keys: np.ndarray, texts: list[str]) -> None:
        self._keys.append(keys)
        self._texts.extend(texts)

    def __len__(self) -> int:
        return len(self._texts)

    def pods(self) -> list[tuple[int, int]]:
        if not self._texts:
            return []
        keys = np.unique(np.concatenate(self._keys) // 4096)
        return [(int(k // 4096 % 4096), int(k % 4096)) for k in keys]

    def lines(self, resources: dict[tuple[int, int], str], scopes: list[tuple[str, str]]) -> list[str]:
        """One ``ExportTraceServiceRequest`` per batch: resources, each with its scopes and their spans."""
        if not self._texts:
            return []
        keys = np.concatenate(self._keys)
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        bounds = np.flatnonzero(np.diff(sorted_keys)) + 1
        starts = np.concatenate(([0], bounds))
        stops = np.concatenate((bounds, [len(keys)]))
        texts = self._texts
        scope_json = ['{"scope":{"name":%s,"version":%s},"spans":[' % (js(n), js(v)) for n, v in scopes]
        lines: list[str] = []
        batch_parts: list[str] = []
        resource_parts: list[str] = []
        current_batch = current_pod = None
        for a, b in zip(starts.tolist(), stops.tolist()):
            key = int(sorted_keys[a])
            scope = key % 4096
            pod_key = key // 4096
            batch = pod_key // (4096 * 4096)
            service, pod = pod_key // 4096 % 4096, pod_key % 4096
            if pod_key != current_pod:
                if resource_parts:
                    batch_parts.append(
                        '{"resource":%s,"scopeSpans":[%s]}'
                        % (
                            resources[(int(current_pod // 4096 % 4096), int(current_pod % 4096))],
                            ",".join(resource_parts),
                        )
                    )
                resource_parts = []
                current_pod = pod_key
            if batch != current_batch:
                if batch_parts:
                    lines.append('{"resourceSpans":[%s]}' % ",".join(batch_parts))
                batch_parts = []
                current_batch = batch
            resource_parts.append(scope_json[scope] + ",".join(texts[i] for i in order[a:b].tolist()) + "]}")
            del service, pod
        batch_parts.append(
            '{"resource":%s,"scopeSpans":[%s]}'
            % (
                resources[(int(current_pod // 4096 % 4096), int(current_pod % 4096))],
                ",".join(resource_parts),
            )
        )
        lines.append('{"resourceSpans":[%s]}' % ",".join(batch_parts))
        return lines
