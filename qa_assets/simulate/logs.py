"""Application logs: records from requests, lifecycle events and background work, rendered the way each
service's stack writes them.

Three channels: plain text with a per-service ``log_format`` (Java/logback, Go, Python logging, nginx
access log, PostgreSQL), JSON lines in the dialect of the service's logging library (zap, pino, logstash
encoder, python-json-logger, ECS) and OTLP log records. Text services print multi-line stack traces whose
continuation lines do not match their format, as real ones do.

``write_sample_log`` writes a large single-format log quickly, for the template-mining benchmark.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from qa_assets.simulate import errors as E
from qa_assets.simulate import identifiers as ids
from qa_assets.simulate.errors import RenderedException
from qa_assets.simulate.otlp import attrs, js
from qa_assets.simulate.templates import (
    CLIENT_ERROR_LINES,
    ERROR_LINES,
    OOM_LINES,
    STARTUP_CRASH_LINES,
    Template,
    percent_format,
    templates_for,
)
from qa_assets.simulate.topology import Service, Topology, plural

# logparser-style formats of the text styles (the ingestion reads them from qa-assets.yaml)
LOG_FORMATS = {
    "java": r"<Date> <Time> <Level> \[<Thread>\] <Component>: <Content>",
    "logback": r"<Date> <Time> \[<Thread>\] <Level> <Component> - <Content>",
    "go": r"<Date> <Time> \[<Level>\] <Component>: <Content>",
    "python": r"<Date> <Time> - <Component> - <Level> - <Content>",
    "nginx": r"<Client> - <User> \[<Date>:<Time> <Timezone>\] <Content>",
    "postgres": r"<Date> <Time> <Timezone> \[<Pid>\] <Level>:  <Content>",
}
LEVEL_WORDS = {
    "java": {"DEBUG": "DEBUG", "INFO": "INFO", "WARN": "WARN", "ERROR": "ERROR", "FATAL": "ERROR"},
    "logback": {"DEBUG": "DEBUG", "INFO": "INFO ", "WARN": "WARN ", "ERROR": "ERROR", "FATAL": "ERROR"},
    "go": {"DEBUG": "DEBUG", "INFO": "INFO", "WARN": "WARN", "ERROR": "ERROR", "FATAL": "FATAL"},
    "python": {"DEBUG": "DEBUG", "INFO": "INFO", "WARN": "WARNING", "ERROR": "ERROR", "FATAL": "CRITICAL"},
    "postgres": {
        "DEBUG": "DEBUG",
        "INFO": "LOG",
        "LOG": "LOG",
        "WARN": "WARNING",
        "ERROR": "ERROR",
        "FATAL": "FATAL",
    },
}
SEVERITY_NUMBER = {"TRACE": 1, "DEBUG": 5, "INFO": 9, "LOG": 9, "WARN": 13, "ERROR": 17, "FATAL": 21}
PINO_LEVEL = {"DEBUG": 20, "INFO": 30, "LOG": 30, "WARN": 40, "ERROR": 50, "FATAL": 60}
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
SLOW_REQUEST_MS = 1000.0


@dataclass
class LogRecord:
    ts_ns: int
    instance: int
    level: str  # DEBUG | INFO | WARN | ERROR | FATAL (postgres: LOG too)
    component: str
    message: str
    trace_id: str = ""
    span_id: str = ""
    exception: RenderedException | None = None
    thread: str = ""
    request: tuple[str, str, int, int, float, str, str] | None = (
        None  # nginx: ip, method+path, status, bytes, s, ua, ref
    )


# ----------------------------------------------------------------------------------- service profile


def _abbreviate(package: str) -> str:
    parts = package.split(".")
    return ".".join([p[0] for p in parts[:-1]] + parts[-1:]) if len(parts) > 1 else package


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class ServiceLogProfile:
    """Everything about how one service logs: templates with its names filled in, component names."""

    def __init__(self, topology: Topology, service: Service) -> None:
        self.service = service
        self.style = service.log_style or ""
        self.channel = service.log_channel
        statics = {
            "noun": service.noun,
            "nouns": plural(service.noun),
            "Noun": service.noun.capitalize(),
            "service": service.name,
            "service_port": str(service.port),
            "limit_mb": str(int(service.memory_limit_mb)),
            "db": service.db_namespace or "app",
            "table": plural(service.noun),
            "caller": (topology.callers_of(service.name) or ["app"])[0],
        }

        def fill(text: str) -> str:
            for key, value in statics.items():
                text = text.replace("{" + key + "}", value)
            return text

        def compile_pool(when: str) -> list[Template]:
            return [
                Template(fill(t.text), t.level, t.when, t.weight, t.routes, fill(t.component))
                for t in templates_for(service.archetype, when)
            ]

        self.pools = {
            when: compile_pool(when)
            for when in ("request", "background", "degraded", "startup", "shutdown", "config", "gc", "outage")
        }
        self._components: dict[str, str] = {}

    def requests_for(self, endpoint_key: str) -> list[Template]:
        return [t for t in self.pools["request"] if not t.routes or any(r in endpoint_key for r in t.routes)]

    def component(self, hint: str) -> str:
        if hint in self._components:
            return self._components[hint]
        service = self.service
        language = service.language
        base = hint or f"{service.noun.capitalize()}Service"
        line = 20 + zlib.crc32(f"{service.name}:{base}".encode()) % 400
        if language == "java":
            name = f"{_abbreviate(service.package)}.{base}" if "." not in base else base
        elif language == "go":
            name = base if base.endswith(".go") else f"{_snake(base).replace('.', '_')}.go"
            name = f"{name}:{line}"
        elif language == "python":
            name = base if "." in base else f"{service.package}.{_snake(base)}"
        else:
            name = base
        self._components[hint] = name
        return name


# ------------------------------------------------------------------------------------ rendering


def render_templates(
    template: Template, rng: np.random.Generator, n: int, context: dict[str, list[str]] | None = None
) -> list[str]:
    """``n`` messages of one template; placeholders come from ``context`` first, then the generators."""
    fmt = percent_format(template.text)
    names = template.placeholders
    if not names:
        return [fmt % ()] * n
    columns = []
    for name in names:
        if context and name in context:
            columns.append(context[name])
        else:
            base = name.rstrip("0123456789") if name not in ids.GENERATORS else name
            if base in ("card_brand",):
                columns.append([("Visa", "Mastercard", "Amex")[i] for i in rng.integers(0, 3, n)])
            elif base == "last4":
                columns.append([f"{v:04d}" for v in rng.integers(0, 10000, n)])
            elif base == "source":
                columns.append([("cache", "database")[i] for i in rng.integers(0, 2, n)])
            elif base == "word":
                columns.append(
                    [
                        ("clothing", "accessories", "footwear", "hair", "decor", "kitchen")[i]
                        for i in rng.integers(0, 6, n)
                    ]
                )
            elif base in ids.GENERATORS:
                columns.append(ids.generate(base, rng, n))
            else:
                columns.append([name] * n)
    return [fmt % row for row in zip(*columns)]


def _timestamps(ts_ns: list[int]) -> list[str]:
    """ISO text with microseconds for every timestamp, vectorised."""
    return list(np.datetime_as_string(np.array(ts_ns, dtype="datetime64[ns]"), unit="us"))


def _text_head(style: str, iso: str, level: str, component: str, thread: str, pid: int) -> str:
    date, clock = iso[:10], iso[11:19]
    frac = iso[20:26]
    if style == "java":
        return f"{date} {clock},{frac[:3]} {LEVEL_WORDS['java'][level]} [{thread or 'main'}] {component}: "
    if style == "logback":
        return (
            f"{date} {clock}.{frac[:3]} [{thread or 'main'}] {LEVEL_WORDS['logback'][level]} {component} - "
        )
    if style == "go":
        return f"{date.replace('-', '/')} {clock}.{frac} [{LEVEL_WORDS['go'][level]}] {component}: "
    if style == "python":
        return f"{date} {clock},{frac[:3]} - {component} - {LEVEL_WORDS['python'][level]} - "
    if style == "postgres":
        return f"{date} {clock}.{frac[:3]} UTC [{pid}] {LEVEL_WORDS['postgres'].get(level, level)}:  "
    raise ValueError(f"unknown text log style {style!r}")


def _continuation(style: str, exc: RenderedException) -> list[str]:
    """Lines printed after the log line for an exception (they do not match the log format)."""
    if style in ("java", "logback", "python"):
        return exc.stacktrace.split("\n")
    if style == "go" and exc.type.startswith("runtime."):
        frames = exc.stacktrace.split("\n")
        return ["", "goroutine 4817 [running]:"] + frames
    return []


def render_text(style: str, records: list[LogRecord], service: Service) -> list[str]:
    """Text lines (with trailing newlines) for one pod's records, in order."""
    if style == "nginx":
        return _render_nginx(records)
    isos = _timestamps([r.ts_ns for r in records])
    out = []
    pid_base = 1000 + zlib.crc32(service.name.encode()) % 50000
    for record, iso in zip(records, isos):
        pid = pid_base + (record.ts_ns // 7_000_000_000) % 97
        head = _text_head(style, iso, record.level, record.component, record.thread, int(pid))
        out.append(head + record.message + "\n")
        if record.exception is not None:
            out.extend(line + "\n" for line in _continuation(style, record.exception))
    return out


def _render_nginx(records: list[LogRecord]) -> list[str]:
    isos = _timestamps([r.ts_ns for r in records])
    out = []
    for record, iso in zip(records, isos):
        if record.request is None:
            continue
        ip, request_line, status, size, seconds, agent, referer = record.request
        stamp = f"{iso[8:10]}/{MONTHS[int(iso[5:7]) - 1]}/{iso[:4]}:{iso[11:19]} +0000"
        upstream = max(0.0, seconds - 0.001)
        out.append(
            f'{ip} - - [{stamp}] "{request_line} HTTP/1.1" {status} {size} "{referer}" "{agent}" '
            f'rt={seconds:.3f} uct="0.000" uht="{upstream:.3f}" urt="{upstream:.3f}"\n'
        )
    return out


def render_json(dialect: str, records: list[LogRecord], service: Service, pod: str) -> list[str]:
    isos = _timestamps([r.ts_ns for r in records])
    out = []
    for record, iso in zip(records, isos):
        out.append(orjson.dumps(_json_object(dialect, record, iso, service, pod)).decode() + "\n")
    return out


def _json_object(dialect: str, r: LogRecord, iso: str, service: Service, pod: str) -> dict:
    exc = r.exception
    if dialect == "zap":
        doc: dict = {
            "level": r.level.lower() if r.level != "LOG" else "info",
            "ts": round(r.ts_ns / 1e9, 6),
            "caller": r.component,
            "msg": r.message,
        }
        if r.trace_id:
            doc.update(trace_id=r.trace_id, span_id=r.span_id)
        if exc:
            doc.update(error=exc.message, stacktrace=exc.stacktrace)
        return doc
    if dialect == "pino":
        doc = {
            "level": PINO_LEVEL.get(r.level, 30),
            "time": r.ts_ns // 1_000_000,
            "pid": 1,
            "hostname": pod,
            "name": service.name,
            "msg": r.message,
        }
        if r.trace_id:
            doc.update(trace_id=r.trace_id, span_id=r.span_id, trace_flags="01")
        if exc:
            doc["err"] = {"type": exc.type or "Error", "message": exc.message, "stack": exc.stacktrace}
        return doc
    if dialect == "logstash":
        doc = {
            "@timestamp": f"{iso[:23]}+00:00",
            "@version": "1",
            "message": r.message,
            "logger_name": r.component,
            "thread_name": r.thread or "main",
            "level": r.level,
            "level_value": {"DEBUG": 10000, "INFO": 20000, "WARN": 30000, "ERROR": 40000}.get(r.level, 20000),
        }
        if r.trace_id:
            doc.update(traceId=r.trace_id, spanId=r.span_id)
        if exc:
            doc["stack_trace"] = exc.stacktrace
        return doc
    if dialect == "python-json":
        doc = {
            "timestamp": f"{iso}+00:00",
            "levelname": LEVEL_WORDS["python"].get(r.level, r.level),
            "name": r.component,
            "message": r.message,
            "otelServiceName": service.name,
        }
        if r.trace_id:
            doc.update(otelTraceID=r.trace_id, otelSpanID=r.span_id)
        if exc:
            doc["exc_info"] = exc.stacktrace
        return doc
    if dialect == "ecs":
        doc = {
            "@timestamp": f"{iso[:23]}Z",
            "log.level": r.level.lower(),
            "message": r.message,
            "ecs.version": "1.6.0",
            "service.name": service.name,
            "log.logger": r.component,
            "process.thread.name": r.thread or "main",
        }
        if r.trace_id:
            doc.update({"trace.id": r.trace_id, "span.id": r.span_id})
        if exc:
            doc.update(
                {"error.type": exc.type, "error.message": exc.message, "error.stack_trace": exc.stacktrace}
            )
        return doc
    raise ValueError(f"unknown JSON log dialect {dialect!r}")


def otlp_log_record(r: LogRecord, service: Service) -> str:
    severity_text = {"python": LEVEL_WORDS["python"].get(r.level, r.level), "node": r.level.lower()}.get(
        service.language or "", r.level
    )
    attributes = []
    if r.exception is not None:
        attributes = [
            ("exception.type", r.exception.type or "Error"),
            ("exception.message", r.exception.message),
            ("exception.stacktrace", r.exception.stacktrace),
        ]
    if r.thread and service.language == "java":
        attributes.append(("thread.name", r.thread))
    parts = [
        '"timeUnixNano":"%d","observedTimeUnixNano":"%d"' % (r.ts_ns, r.ts_ns + 1_500_000),
        '"severityNumber":%d,"severityText":%s' % (SEVERITY_NUMBER.get(r.level, 9), js(severity_text)),
        '"body":{"stringValue":%s}' % js(r.message),
    ]
    if attributes:
        parts.append('"attributes":[%s]' % attrs(attributes))
    if r.trace_id:
        parts.append('"traceId":"%s","spanId":"%s","flags":1' % (r.trace_id, r.span_id))
    return "{" + ",".join(parts) + "}"


# ------------------------------------------------------------------------------- special messages


def error_line(service: Service, method: str, route: str, exc: RenderedException | None) -> str:
    template = ERROR_LINES.get(service.language or "", ERROR_LINES["go"])
    return template.format(
        method=method,
        route=route,
        exc_type=exc.type if exc else "Error",
        exc_message=(exc.message if exc else "internal error") or (exc.type if exc else ""),
    )


def client_error_line(service: Service, callee: str, callee_route: str, exc: RenderedException | None) -> str:
    language = service.language or "go"
    if language == "python":
        return CLIENT_ERROR_LINES["python"] % (callee, exc.message if exc else "error")
    return CLIENT_ERROR_LINES.get(language, CLIENT_ERROR_LINES["go"]).format(
        callee=callee, callee_route=callee_route, exc_message=exc.message if exc else "error"
    )


def oom_line(service: Service, pid: int) -> str:
    return OOM_LINES.get(service.language or "", OOM_LINES["go"]).format(pid=pid)


def crash_line(service: Service) -> str:
    return STARTUP_CRASH_LINES.get(service.language or "", STARTUP_CRASH_LINES["go"]).format(
        noun=service.noun, noun_upper=service.noun.upper()
    )


# ------------------------------------------------------------------------------- sample log (bench)

SAMPLE_FORMAT = LOG_FORMATS["java"]


def write_sample_log(path: Path, lines: int, seed: int) -> str:
    """Write a realistic multi-service plain-text log of exactly ``lines`` lines in one format and return
    that ``log_format``.

    Lines come from the request, background, lifecycle and error templates of every service of the shop and
    bank topologies (hundreds of templates with identifiers, amounts, durations, addresses and personal
    data); each line is a header line (no stack-trace continuations), so line count equals record count.
    """
    from qa_assets.simulate.topology import get_topology

    rng = np.random.default_rng(np.random.SeedSequence([seed, 9_001]))
    pool: list[tuple[Template, str]] = []  # template, component
    weights: list[float] = []
    for topology_name in ("shop", "bank"):
        topology = get_topology(topology_name)
        for service in topology.workloads:
            package = _abbreviate(f"com.example.{service.name.replace('-', '')}")
            profile = ServiceLogProfile(topology, service)
            for when, templates in profile.pools.items():
                for template in templates:
                    hint = (template.component or f"{service.noun.capitalize()}Service").split(".")[-1]
                    pool.append(
                        (template, f"{package}.{hint.replace('_', '').capitalize() if '_' in hint else hint}")
                    )
                    weights.append(template.weight * (1.0 if when == "request" else 0.2))
            for family in ("regression", "config", "validation"):
                for exc_type, message in E.FAULT_EXCEPTIONS[family].get(service.language or "", []):
                    text = f"Request processing failed: {exc_type}: " + message.replace("{{", "{").replace(
                        "}}", "}"
                    )
                    text = (
                        text.replace("{", "{{")
                        .replace("}", "}}")
                        .replace("{{pkg_cls}}", "{sku}")
                        .replace("{{amount}}", "{amount}")
                        .replace("{{amount2}}", "{amount}")
                        .replace("{{noun}}", service.noun)
                        .replace("{{noun_upper}}", service.noun.upper())
                    )
                    pool.append((Template(text, "ERROR"), f"{package}.RequestHandler"))
                    weights.append(0.02)
    probabilities = np.array(weights) / np.sum(weights)
    choice = rng.choice(len(pool), size=lines, p=probabilities)
    messages = np.empty(lines, dtype=object)
    order = np.argsort(choice, kind="stable")
    bounds = np.searchsorted(choice[order], np.arange(len(pool) + 1))
    routes = ("/api/v1/orders/{id}", "/api/v1/accounts", "/cart", "/product/{id}", "/api/v1/payments")
    # request-level values the topology would provide, made up here for the sample
    for t_index in range(len(pool)):
        rows = order[bounds[t_index] : bounds[t_index + 1]]
        if rows.size == 0:
            continue
        n = rows.size
        template = pool[t_index][0]
        makers = {
            "method": lambda: [("GET", "POST", "PUT")[i] for i in rng.integers(0, 3, n)],
            "route": lambda: [routes[i] for i in rng.integers(0, len(routes), n)],
            "path": lambda: [f"/api/v1/items/{v}" for v in rng.integers(1000, 99999, n)],
            "status": lambda: [
                ("200", "201", "404", "500")[i] for i in rng.choice(4, n, p=[0.8, 0.1, 0.07, 0.03])
            ],
            "callee": lambda: [("inventory", "ledger", "catalog", "auth")[i] for i in rng.integers(0, 4, n)],
            "reason": lambda: [
                ("context deadline exceeded", "connection refused", "503 Service Unavailable")[i]
                for i in rng.integers(0, 3, n)
            ],
            "version": lambda: [f"1.{v}.{v % 7}" for v in rng.integers(0, 40, n)],
            "pod": lambda: ids.random_strings(rng, n, 5, ids.LOWER_ALNUM),
            "rev": lambda: [f"r{v}" for v in rng.integers(40, 400, n)],
            "last_up": lambda: ["2026-11-02 03:12:45 UTC"] * n,
        }
        context = {name: makers[name]() for name in template.placeholders if name in makers}
        messages[rows] = render_templates(template, rng, n, context)
    level_words = LEVEL_WORDS["java"]
    middle = np.array([f" {level_words.get(t.level, 'INFO')} [" for t, _ in pool], dtype=object)[choice]
    tail = np.array([f"] {component}: " for _, component in pool], dtype=object)[choice]
    # timestamps: ascending, ~25 lines a second; seconds are formatted once each
    stamps_ns = np.datetime64("2026-11-02T00:00:00", "ns").astype(np.int64) + np.cumsum(
        rng.exponential(40_000_000, lines).astype(np.int64)
    )
    seconds, second_index = np.unique(stamps_ns // 1_000_000_000, return_inverse=True)
    second_text = np.array(
        [f"{t[:10]} {t[11:19]}," for t in np.datetime_as_string(seconds.astype("datetime64[s]"))],
        dtype=object,
    )[second_index]
    millis = np.array([f"{i:03d}" for i in range(1000)], dtype=object)[(stamps_ns // 1_000_000) % 1000]
    thread_names = np.array(
        [f"http-nio-8080-exec-{i}" for i in range(1, 201)]
        + ["scheduling-1", "main", "kafka-producer-network-thread"],
        dtype=object,
    )
    threads = thread_names[np.minimum(rng.integers(0, 230, lines), len(thread_names) - 1)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    chunk = 250_000
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for begin in range(0, lines, chunk):
            end = min(lines, begin + chunk)
            handle.write(
                "".join(
                    f"{a}{b}{c}{d}{e}{f}\n"
                    for a, b, c, d, e, f in zip(
                        second_text[begin:end],
                        millis[begin:end],
                        middle[begin:end],
                        threads[begin:end],
                        tail[begin:end],
                        messages[begin:end],
                    )
                )
            )
    return SAMPLE_FORMAT
