"""Exceptions as real runtimes print them: type, message and stack trace per language and failure kind.

Everything is data keyed by language; ``ErrorCatalog.exception`` renders one for a service, a failure
code and its context (callee, datastore, fault), deterministically (choices hash the names, not the run).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from functools import lru_cache

from qa_assets.simulate.topology import Endpoint, Service

# Failure codes shared by the traffic engine, logs and spans.
OK = 0
BASELINE = 1  # background bug / client abort: a small constant rate
FAULT = 2  # the exception an injected fault introduces
CONTRACT = 3  # the caller could not read a callee's (successful) response
UPSTREAM_HTTP = 4  # a downstream service call failed
UPSTREAM_DB = 5  # a datastore call failed
HTTP_ERROR = 10  # client span: the callee answered with an error status
TIMEOUT = 11  # client span: no answer within the timeout
REFUSED = 12  # client span: connection refused / reset / no healthy upstream
DB_ERROR = 13  # client span: a query failed (baseline)

CODE_NAMES = {
    OK: "ok",
    BASELINE: "baseline",
    FAULT: "fault",
    CONTRACT: "contract",
    UPSTREAM_HTTP: "upstream_http",
    UPSTREAM_DB: "upstream_db",
    HTTP_ERROR: "http_error",
    TIMEOUT: "timeout",
    REFUSED: "refused",
    DB_ERROR: "db_error",
}


@dataclass(frozen=True)
class RenderedException:
    type: str
    message: str
    stacktrace: str  # the full text a runtime prints (first line included)


def stable_index(key: str, n: int) -> int:
    return zlib.crc32(key.encode()) % n if n else 0


# --------------------------------------------------------------------------------------- catalogues
# {placeholders}: callee, host, ip, port, path, method, db, table, field, dto, timeout_s, status, reason

FAULT_EXCEPTIONS: dict[str, dict[str, list[tuple[str, str]]]] = {
    "regression": {
        "java": [
            (
                "java.lang.NullPointerException",
                'Cannot invoke "{pkg_cls}.getQuantity()" because "item" is null',
            ),
            (
                "java.lang.IllegalStateException",
                "Order total mismatch after discount: expected {amount} but was {amount2}",
            ),
            (
                "java.lang.ClassCastException",
                "class java.lang.Integer cannot be cast to class java.lang.Long",
            ),
            ("java.lang.IndexOutOfBoundsException", "Index 0 out of bounds for length 0"),
        ],
        "go": [
            ("runtime.Error", "runtime error: invalid memory address or nil pointer dereference"),
            ("*fmt.wrapError", "compute total: currency mismatch: USD != EUR"),
            ("runtime.boundsError", "runtime error: index out of range [1] with length 1"),
        ],
        "python": [
            ("KeyError", "'shipping_address'"),
            ("TypeError", "unsupported operand type(s) for +: 'decimal.Decimal' and 'float'"),
            ("AttributeError", "'NoneType' object has no attribute 'email'"),
            ("ZeroDivisionError", "division by zero"),
        ],
        "node": [
            ("TypeError", "Cannot read properties of undefined (reading 'units')"),
            ("RangeError", "Invalid currency code : undefined"),
            ("ReferenceError", "conversionRate is not defined"),
        ],
    },
    "config": {
        "java": [
            (
                "java.lang.IllegalArgumentException",
                "Invalid value 'EUR ' for property '{noun}.currency.default'",
            ),
            (
                "com.typesafe.config.ConfigException$Missing",
                "No configuration setting found for key '{noun}.upstream.url'",
            ),
        ],
        "go": [
            (
                "*errors.errorString",
                'config: invalid duration "30" for key "UPSTREAM_TIMEOUT": missing unit in duration',
            ),
            ("*errors.errorString", 'feature flag "{noun}_v2_pricing" enabled but PRICING_TABLE is empty'),
        ],
        "python": [
            ("KeyError", "'FEATURE_FLAGS_URL'"),
            ("ValueError", "invalid literal for int() with base 10: '30s'"),
        ],
        "node": [
            ("Error", "Missing required configuration: {noun_upper}_PROVIDER_URL"),
            ("SyntaxError", "Unexpected token }} in JSON at position 312"),
        ],
    },
    "validation": {
        "java": [
            (
                "jakarta.validation.ConstraintViolationException",
                'create.request.address.zipCode: must match "^[0-9]{{5}}$"',
            )
        ],
        "go": [
            (
                "validator.ValidationErrors",
                "Key: 'Request.Address.ZipCode' Error:Field validation for 'ZipCode' failed on the 'numeric' tag",  # noqa: E501
            )
        ],
        "python": [
            (
                "pydantic_core._pydantic_core.ValidationError",
                "1 validation error for CreateRequest: address.zip_code String should match pattern '^\\d{{5}}$'",  # noqa: E501
            )
        ],
        "node": [("ValidationError", '"amount.units" must be a safe number')],
    },
}

CONTRACT_EXCEPTIONS = {
    "java": (
        "com.fasterxml.jackson.databind.exc.MismatchedInputException",
        "Cannot deserialize value of type `java.math.BigDecimal` from Object value (token `JsonToken.START_OBJECT`)"  # noqa: E501
        ' at [Source: REDACTED; line: 1, column: 37] (through reference chain: {dto}["{field}"])',
    ),
    "go": (
        "*json.UnmarshalTypeError",
        "json: cannot unmarshal object into Go struct field {dto}.{field} of type float64",
    ),
    "python": (
        "pydantic_core._pydantic_core.ValidationError",
        "1 validation error for {dto}: {field} Input should be a valid number [type=float_type, input_type=dict]",  # noqa: E501
    ),
    "node": ("TypeError", "Cannot read properties of undefined (reading '{field}')"),
    "nginx": ("", "upstream sent invalid response"),
}

BASELINE_EXCEPTIONS = {
    "java": [
        ("org.apache.catalina.connector.ClientAbortException", "java.io.IOException: Broken pipe"),
        (
            "java.util.concurrent.TimeoutException",
            "Did not observe any item or terminal signal within 1000ms",
        ),
    ],
    "go": [
        ("*net.OpError", "write tcp {ip}:8080->{ip2}:{eport}: write: broken pipe"),
        ("*errors.errorString", "context canceled"),
    ],
    "python": [
        ("ConnectionResetError", "[Errno 104] Connection reset by peer"),
        ("asyncio.exceptions.CancelledError", ""),
    ],
    "node": [("Error", "socket hang up"), ("Error", "aborted")],
    "nginx": [("", "client prematurely closed connection")],
}

UPSTREAM_HTTP_EXCEPTIONS = {
    "java": {
        HTTP_ERROR: (
            "org.springframework.web.client.HttpServerErrorException$InternalServerError",
            '{status} {reason}: "{{\\"error\\":\\"{reason_lower}\\"}}"',
        ),
        TIMEOUT: (
            "org.springframework.web.client.ResourceAccessException",
            'I/O error on {method} request for "http://{callee}:{port}{path}": Read timed out',
        ),
        REFUSED: (
            "org.springframework.web.client.ResourceAccessException",
            'I/O error on {method} request for "http://{callee}:{port}{path}": Connection refused',
        ),
    },
    "go": {
        HTTP_ERROR: ("*errors.errorString", "{callee}: unexpected status {status} {reason}"),
        TIMEOUT: (
            "*url.Error",
            '{method_title} "http://{callee}:{port}{path}": context deadline exceeded '
            "(Client.Timeout exceeded while awaiting headers)",
        ),
        REFUSED: (
            "*url.Error",
            '{method_title} "http://{callee}:{port}{path}": dial tcp {ip}:{port}: connect: '
            "connection refused",
        ),
    },
    "python": {
        HTTP_ERROR: (
            "requests.exceptions.HTTPError",
            "{status} Server Error: {reason} for url: http://{callee}:{port}{path}",
        ),
        TIMEOUT: (
            "requests.exceptions.ReadTimeout",
            "HTTPConnectionPool(host='{callee}', port={port}): Read timed out. (read timeout={timeout_s})",
        ),
        REFUSED: (
            "requests.exceptions.ConnectionError",
            "HTTPConnectionPool(host='{callee}', port={port}): Max retries exceeded with url: {path} (Caused by "  # noqa: E501
            "NewConnectionError('<urllib3.connection.HTTPConnection object at 0x7f3a2c1b9e50>: Failed to "
            "establish a new connection: [Errno 111] Connection refused'))",
        ),
    },
    "node": {
        HTTP_ERROR: ("HTTPError", "Response code {status} ({reason})"),
        TIMEOUT: ("TimeoutError", "The operation was aborted due to timeout"),
        REFUSED: ("Error", "connect ECONNREFUSED {ip}:{port}"),
    },
    "nginx": {
        HTTP_ERROR: ("", "upstream returned {status}"),
        TIMEOUT: (
            "",
            "upstream timed out (110: Connection timed out) while reading response header from upstream",
        ),
        REFUSED: ("", "connect() failed (111: Connection refused) while connecting to upstream"),
    },
}

UPSTREAM_DB_EXCEPTIONS: dict[tuple[str, str], dict[int, tuple[str, str]]] = {
    ("java", "sql"): {
        REFUSED: (
            "org.springframework.jdbc.CannotGetJdbcConnectionException",
            "Failed to obtain JDBC Connection; nested exception is java.net.ConnectException: Connection refused",  # noqa: E501
        ),
        TIMEOUT: (
            "org.springframework.jdbc.CannotGetJdbcConnectionException",
            "Failed to obtain JDBC Connection; nested exception is java.sql.SQLTransientConnectionException: "
            "HikariPool-1 - Connection is not available, request timed out after {timeout_ms}ms.",
        ),
        DB_ERROR: (
            "org.springframework.dao.QueryTimeoutException",
            "PreparedStatementCallback; SQL [{statement}]; ERROR: canceling statement due to statement timeout",  # noqa: E501
        ),
    },
    ("java", "kv"): {
        REFUSED: (
            "org.springframework.data.redis.RedisConnectionFailureException",
            "Unable to connect to Redis; nested exception is io.lettuce.core.RedisConnectionException: "
            "Unable to connect to {host}:{port}",
        ),
        TIMEOUT: (
            "io.lettuce.core.RedisCommandTimeoutException",
            "Command timed out after {timeout_s} second(s)",
        ),
        DB_ERROR: (
            "io.lettuce.core.RedisCommandExecutionException",
            "LOADING Redis is loading the dataset in memory",
        ),
    },
    ("java", "mq"): {
        REFUSED: (
            "org.apache.kafka.common.errors.TimeoutException",
            "Topic {table} not present in metadata after 60000 ms.",
        ),
        TIMEOUT: (
            "org.apache.kafka.common.errors.TimeoutException",
            "Expiring 1 record(s) for {table}-0:120000 ms has passed since batch creation",
        ),
        DB_ERROR: (
            "org.apache.kafka.common.errors.NotLeaderOrFollowerException",
            "For requests intended only for the leader, this error indicates that the broker is not the current leader.",  # noqa: E501
        ),
    },
    ("go", "sql"): {
        REFUSED: (
            "*pgconn.ConnectError",
            "failed to connect to `host={host} user=app database={db}`: dial error "
            "(dial tcp {ip}:{port}: connect: connection refused)",
        ),
        TIMEOUT: (
            "*pgconn.ConnectError",
            "failed to connect to `host={host} user=app database={db}`: dial error "
            "(timeout: context deadline exceeded)",
        ),
        DB_ERROR: ("*pgconn.PgError", "ERROR: canceling statement due to statement timeout (SQLSTATE 57014)"),
    },
    ("go", "kv"): {
        REFUSED: ("*net.OpError", "dial tcp {ip}:{port}: connect: connection refused"),
        TIMEOUT: ("*errors.errorString", "redis: connection pool timeout"),
        DB_ERROR: ("redis.Error", "LOADING Redis is loading the dataset in memory"),
    },
    ("go", "mq"): {
        REFUSED: (
            "*errors.errorString",
            "kafka: client has run out of available brokers to talk to: dial tcp {ip}:{port}: "
            "connect: connection refused",
        ),
        TIMEOUT: (
            "*errors.errorString",
            "kafka server: Request exceeded the user-specified time limit in the request",
        ),
        DB_ERROR: (
            "*errors.errorString",
            "kafka server: Tried to send a message to a replica that is not the leader",
        ),
    },
    ("python", "sql"): {
        REFUSED: (
            "psycopg2.OperationalError",
            'connection to server at "{host}" ({ip}), port {port} failed: Connection refused',
        ),
        TIMEOUT: (
            "sqlalchemy.exc.TimeoutError",
            "QueuePool limit of size 5 overflow 10 reached, connection timed out, timeout {timeout_s}",
        ),
        DB_ERROR: ("psycopg2.errors.QueryCanceled", "canceling statement due to statement timeout"),
    },
    ("python", "kv"): {
        REFUSED: (
            "redis.exceptions.ConnectionError",
            "Error 111 connecting to {host}:{port}. Connection refused.",
        ),
        TIMEOUT: ("redis.exceptions.TimeoutError", "Timeout reading from socket"),
        DB_ERROR: ("redis.exceptions.BusyLoadingError", "Redis is loading the dataset in memory"),
    },
    ("python", "mq"): {
        REFUSED: ("kafka.errors.NoBrokersAvailable", "NoBrokersAvailable"),
        TIMEOUT: ("kafka.errors.KafkaTimeoutError", "Failed to update metadata after 60.0 secs."),
        DB_ERROR: ("kafka.errors.NotLeaderForPartitionError", "[Error 6] NotLeaderForPartitionError"),
    },
    ("node", "sql"): {
        REFUSED: ("Error", "connect ECONNREFUSED {ip}:{port}"),
        TIMEOUT: ("Error", "Connection terminated due to connection timeout"),
        DB_ERROR: ("error", "canceling statement due to statement timeout"),
    },
    ("node", "kv"): {
        REFUSED: ("Error", "connect ECONNREFUSED {ip}:{port}"),
        TIMEOUT: ("ConnectionTimeoutError", "Connection timeout"),
        DB_ERROR: ("ReplyError", "LOADING Redis is loading the dataset in memory"),
    },
    ("node", "mq"): {
        REFUSED: ("KafkaJSConnectionError", "Connection error: connect ECONNREFUSED {ip}:{port}"),
        TIMEOUT: ("KafkaJSRequestTimeoutError", "Request Produce(key: 0, version: 7) timed out"),
        DB_ERROR: ("KafkaJSProtocolError", "This server is not the leader for that topic-partition"),
    },
}

OOM_EXCEPTIONS = {
    "java": ("java.lang.OutOfMemoryError", "Java heap space"),
    "go": ("runtime.Error", "fatal error: runtime: out of memory"),
    "python": ("MemoryError", ""),
    "node": ("Error", "FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory"),
    "nginx": ("", "out of memory"),
}

REASONS = {
    400: "Bad Request",
    404: "Not Found",
    409: "Conflict",
    422: "Unprocessable Entity",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}

DATASTORE_FAMILY = {
    "postgresql": "sql",
    "mysql": "sql",
    "mongodb": "sql",
    "redis": "kv",
    "memcached": "kv",
    "kafka": "mq",
    "rabbitmq": "mq",
}


# ------------------------------------------------------------------------------------------ naming


def words(route: str) -> list[str]:
    return [w for w in re.split(r"[/{}_\-.]+", route) if w and w not in ("api", "v1", "v2", "id")]


def class_name(service: Service, endpoint: Endpoint | None, suffix: str = "Controller") -> str:
    parts = words(endpoint.route) if endpoint else []
    base = parts[0] if parts else service.noun
    return "".join(w.capitalize() for w in re.split(r"[-_]", base)) + suffix


def handler_name(service: Service, endpoint: Endpoint | None) -> str:
    verbs = {"GET": "get", "POST": "create", "PUT": "update", "DELETE": "delete"}
    parts = words(endpoint.route) if endpoint else [service.noun]
    verb = verbs.get(endpoint.method, "handle") if endpoint else "handle"
    name = parts[-1] if parts else service.noun
    camel = verb + "".join(p.capitalize() for p in re.split(r"[-_]", name))
    if service.language == "python":
        return re.sub(r"(?<!^)(?=[A-Z])", "_", camel).lower()
    return camel


def dto_name(callee: Service, endpoint_key: str | None) -> str:
    route = endpoint_key.split(" ", 1)[1] if endpoint_key else callee.noun
    parts = words(route) or [callee.noun]
    return "".join(p.capitalize() for p in re.split(r"[-_]", parts[-1])) + "Response"


def contract_field(endpoint: Endpoint | None) -> str:
    """A numeric field of the callee's response shape: the one a changed contract breaks."""

    def walk(shape: object, path: str) -> list[str]:
        if isinstance(shape, dict):
            found = []
            for key, value in shape.items():
                found += walk(value, f"{path}.{key}" if path else key)
            return found
        if isinstance(shape, list) and shape:
            return walk(shape[0], path)
        return [path] if shape in ("int", "decimal") else []

    fields = walk(endpoint.response if endpoint else None, "")
    return fields[0].split(".")[-1] if fields else "amount"


# ------------------------------------------------------------------------------------- stack traces


def _java_trace(service: Service, endpoint: Endpoint | None, exc_type: str, message: str, depth: int) -> str:
    pkg = service.package or f"com.example.{service.name}"
    cls = class_name(service, endpoint)
    svc_cls = class_name(service, endpoint, "Service")
    handler = handler_name(service, endpoint)
    head = f"{exc_type}: {message}" if message else exc_type
    lines = [
        head,
        f"\tat {pkg}.service.{svc_cls}.{handler}({svc_cls}.java:{87 + depth * 13})",
        f"\tat {pkg}.web.{cls}.{handler}({cls}.java:{41 + depth * 7})",
        "\tat java.base/jdk.internal.reflect.DirectMethodHandleAccessor.invoke(DirectMethodHandleAccessor.java:103)",  # noqa: E501
        "\tat org.springframework.web.method.support.InvocableHandlerMethod.doInvoke(InvocableHandlerMethod.java:255)",  # noqa: E501
        "\tat org.springframework.web.servlet.DispatcherServlet.doDispatch(DispatcherServlet.java:1089)",
        "\tat org.springframework.web.servlet.FrameworkServlet.service(FrameworkServlet.java:885)",
        "\tat jakarta.servlet.http.HttpServlet.service(HttpServlet.java:658)",
        f"\t... {52 + depth} more",
    ]
    return "\n".join(lines)


def _python_trace(
    service: Service, endpoint: Endpoint | None, exc_type: str, message: str, depth: int
) -> str:
    pkg = service.package or service.name.replace("-", "_")
    handler = handler_name(service, endpoint)
    lines = [
        "Traceback (most recent call last):",
        '  File "/usr/local/lib/python3.12/site-packages/flask/app.py", line 880, in full_dispatch_request',
        "    rv = self.dispatch_request()",
        f'  File "/app/{pkg}/api.py", line {54 + depth * 9}, in {handler}',
        f"    result = service.{handler}(payload)",
        f'  File "/app/{pkg}/service.py", line {112 + depth * 17}, in {handler}',
        "    return self._process(request)",
        f"{exc_type}: {message}" if message else exc_type,
    ]
    return "\n".join(lines)


def _go_trace(service: Service, endpoint: Endpoint | None, exc_type: str, message: str, depth: int) -> str:
    pkg = service.package or f"github.com/example/{service.name}"
    handler = handler_name(service, endpoint)
    cap = handler[:1].upper() + handler[1:]
    lines = [
        f"{pkg}/internal/server.(*Server).{cap}",
        f"\t/src/internal/server/handlers.go:{120 + depth * 11}",
        "net/http.HandlerFunc.ServeHTTP",
        "\t/usr/local/go/src/net/http/server.go:2220",
        "go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp.(*middleware).serveHTTP",
        "\t/go/pkg/mod/go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp@v0.58.0/handler.go:179",
        "net/http.serverHandler.ServeHTTP",
        "\t/usr/local/go/src/net/http/server.go:3210",
    ]
    return "\n".join(lines)


def _node_trace(service: Service, endpoint: Endpoint | None, exc_type: str, message: str, depth: int) -> str:
    handler = handler_name(service, endpoint)
    module = words(endpoint.route)[0] if endpoint and words(endpoint.route) else service.noun
    head = f"{exc_type}: {message}" if message else exc_type
    lines = [
        head,
        f"    at {handler} (/app/src/handlers/{module}.js:{31 + depth * 5}:{17 + depth})",
        f"    at /app/src/routes.js:{58 + depth}:11",
        "    at Layer.handle [as handle_request] (/app/node_modules/express/lib/router/layer.js:95:5)",
        "    at next (/app/node_modules/express/lib/router/route.js:149:13)",
        "    at process.processTicksAndRejections (node:internal/process/task_queues:95:5)",
    ]
    return "\n".join(lines)


TRACE_RENDERERS = {"java": _java_trace, "python": _python_trace, "go": _go_trace, "node": _node_trace}


def render_stack(
    service: Service, endpoint: Endpoint | None, exc_type: str, message: str, depth: int = 0
) -> str:
    renderer = TRACE_RENDERERS.get(service.language or "")
    if renderer is None:
        return f"{exc_type}: {message}" if exc_type else message
    return renderer(service, endpoint, exc_type, message, depth)


# ---------------------------------------------------------------------------------------- catalogue


class _Defaults(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _fill(template: str, context: dict[str, object]) -> str:
    return template.format_map(_Defaults({k: str(v) for k, v in context.items()}))


@lru_cache(maxsize=4096)
def fault_exception(
    service: Service, endpoint: Endpoint | None, family: str, fault_id: str
) -> RenderedException:
    """The new exception a fault introduces (fixed per fault, so it forms one new template)."""
    pool = FAULT_EXCEPTIONS[family].get(service.language or "", FAULT_EXCEPTIONS[family]["go"])
    exc_type, message = pool[stable_index(f"{fault_id}:{service.name}", len(pool))]
    context = {
        "pkg_cls": f"{service.package}.model.LineItem",
        "noun": service.noun,
        "noun_upper": service.noun.upper(),
        "amount": "129.90",
        "amount2": "116.91",
    }
    message = _fill(message, context)
    return RenderedException(exc_type, message, render_stack(service, endpoint, exc_type, message, 1))


@lru_cache(maxsize=4096)
def contract_exception(
    caller: Service, endpoint: Endpoint | None, callee: Service, callee_endpoint: Endpoint | None
) -> RenderedException:
    exc_type, message = CONTRACT_EXCEPTIONS.get(caller.language or "", CONTRACT_EXCEPTIONS["go"])
    context = {
        "dto": dto_name(callee, callee_endpoint.key if callee_endpoint else None),
        "field": contract_field(callee_endpoint),
    }
    message = _fill(message, context)
    return RenderedException(exc_type, message, render_stack(caller, endpoint, exc_type, message, 2))


@lru_cache(maxsize=4096)
def baseline_exception(service: Service, endpoint: Endpoint | None, variant: int) -> RenderedException:
    pool = BASELINE_EXCEPTIONS.get(service.language or "", BASELINE_EXCEPTIONS["go"])
    exc_type, message = pool[variant % len(pool)]
    message = _fill(message, {"ip": "10.42.3.17", "ip2": "10.42.0.1", "eport": 51234 + variant})
    return RenderedException(exc_type, message, render_stack(service, endpoint, exc_type, message, 0))


@lru_cache(maxsize=4096)
def upstream_exception(
    caller: Service,
    endpoint: Endpoint | None,
    callee: Service,
    callee_key: str | None,
    code: int,
    status: int,
    timeout_ms: float,
    statement: str | None = None,
    table: str | None = None,
    callee_ip: str = "10.42.0.10",
) -> RenderedException:
    """What the caller throws when a call to ``callee`` failed with client ``code``."""
    language = caller.language or "go"
    method, path = callee_key.split(" ", 1) if callee_key else ("GET", "/")
    context = {
        "callee": callee.name,
        "host": callee.name,
        "port": callee.port,
        "ip": callee_ip,
        "method": method,
        "method_title": method.title(),
        "path": path,
        "status": status,
        "reason": REASONS.get(status, "Error"),
        "reason_lower": REASONS.get(status, "error").lower().replace(" ", "_"),
        "timeout_s": f"{timeout_ms / 1000:g}",
        "timeout_ms": int(timeout_ms),
        "db": callee.db_namespace or "app",
        "statement": statement or "",
        "table": table or callee.name,
    }
    if callee.is_datastore:
        family = DATASTORE_FAMILY.get(callee.db_system or "", "sql")
        table_for = UPSTREAM_DB_EXCEPTIONS.get((language, family), UPSTREAM_DB_EXCEPTIONS[("go", family)])
        exc_type, message = table_for[code if code in table_for else REFUSED]
    else:
        table_for = UPSTREAM_HTTP_EXCEPTIONS.get(language, UPSTREAM_HTTP_EXCEPTIONS["go"])
        exc_type, message = table_for[code if code in table_for else HTTP_ERROR]
    if status and status != 500 and "InternalServerError" in exc_type:
        exc_type = exc_type.replace("InternalServerError", REASONS.get(status, "Error").replace(" ", ""))
        if status < 500:
            exc_type = exc_type.replace("HttpServerErrorException", "HttpClientErrorException")
    message = _fill(message, context)
    return RenderedException(exc_type, message, render_stack(caller, endpoint, exc_type, message, 3))


@lru_cache(maxsize=256)
def oom_exception(service: Service) -> RenderedException:
    exc_type, message = OOM_EXCEPTIONS.get(service.language or "", OOM_EXCEPTIONS["go"])
    return RenderedException(exc_type, message, render_stack(service, None, exc_type, message, 4))
