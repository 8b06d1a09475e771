"""The simulated system: services, their endpoints and the calls between them.

Topologies are data: the hand-made ones live in ``topologies/*.yaml`` and are loaded into the frozen
dataclasses below; ``random_topology`` builds a layered one from a seed and a generic vocabulary. The
rest of the simulator only reads these objects, so a new topology needs no code.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import yaml

TOPOLOGY_DIR = Path(__file__).parent / "topologies"

DATASTORE_KINDS = ("database", "cache", "queue")
LANGUAGES = ("java", "go", "python", "node", "nginx")

# Resource defaults per language / datastore system: memory in MiB, CPU in cores at mean load.
RUNTIME_DEFAULTS: dict[str, dict[str, float]] = {
    "java": {"memory_base_mb": 560, "memory_limit_mb": 1024, "cpu_base": 0.35},
    "go": {"memory_base_mb": 48, "memory_limit_mb": 256, "cpu_base": 0.08},
    "python": {"memory_base_mb": 170, "memory_limit_mb": 512, "cpu_base": 0.2},
    "node": {"memory_base_mb": 140, "memory_limit_mb": 512, "cpu_base": 0.15},
    "nginx": {"memory_base_mb": 24, "memory_limit_mb": 128, "cpu_base": 0.05},
    "postgresql": {"memory_base_mb": 900, "memory_limit_mb": 4096, "cpu_base": 0.6},
    "mysql": {"memory_base_mb": 1100, "memory_limit_mb": 4096, "cpu_base": 0.5},
    "mongodb": {"memory_base_mb": 1300, "memory_limit_mb": 4096, "cpu_base": 0.5},
    "redis": {"memory_base_mb": 110, "memory_limit_mb": 1024, "cpu_base": 0.1},
    "memcached": {"memory_base_mb": 90, "memory_limit_mb": 1024, "cpu_base": 0.05},
    "kafka": {"memory_base_mb": 1400, "memory_limit_mb": 4096, "cpu_base": 0.3},
    "rabbitmq": {"memory_base_mb": 300, "memory_limit_mb": 2048, "cpu_base": 0.2},
}

# How each language's services log when a topology does not say: (channel, style).
DEFAULT_LOGGING = {
    "java": ("text", "java"),
    "go": ("text", "go"),
    "python": ("text", "python"),
    "node": ("jsonl", "pino"),
    "nginx": ("text", "nginx"),
}


class TopologyError(ValueError):
    """A topology definition that cannot be simulated; the message says what to fix."""


@dataclass(frozen=True, eq=False)  # identity hash: instances are unique and cached on
class Call:
    """One downstream call made while serving an endpoint."""

    callee: str
    endpoint: str | None = None  # "GET /route" on a service callee
    operation: str | None = None  # db operation (SELECT, HGETALL, publish) on a datastore callee
    statement: str | None = None  # parameterised query text for databases / caches
    table: str | None = None  # db.collection.name / messaging destination
    probability: float = 1.0
    repeat: int = 1
    parallel: bool = False  # starts together with the previous call
    propagate: float = 1.0  # chance that a failed call fails the caller's request (0 = graceful degradation)
    timeout_ms: float = 3000.0


@dataclass(frozen=True, eq=False)
class Endpoint:
    method: str
    route: str
    latency_ms: float  # median own processing time, excluding downstream calls
    weight: float = 0.0  # share of external traffic (entry service only)
    calls: tuple[Call, ...] = ()
    body: dict[str, Any] | None = None  # example request payload shape
    response: dict[str, Any] | None = None  # example response shape (the contract callers rely on)
    log_share: float = 0.4  # fraction of requests that write an INFO log line

    @property
    def key(self) -> str:
        return f"{self.method} {self.route}"


@dataclass(frozen=True, eq=False)
class Service:
    name: str
    kind: str = "service"  # service | database | cache | queue
    language: str | None = None
    instrumented: bool = True
    log_channel: str = "none"  # text | jsonl | otlp | none
    log_style: str | None = None  # text style (java, logback, go, python, nginx, postgres) or JSON dialect
    archetype: str = "generic"  # which log template family the service uses
    noun: str = "item"  # domain noun for generic templates and test names
    owner: str = "team-platform"
    tier: int = 2
    replicas: int = 2
    description: str = ""
    component_type: str = "service"  # Backstage spec.type
    lifecycle: str = "production"
    db_system: str | None = None  # postgresql, redis, kafka ... for datastores
    db_namespace: str | None = None
    latency_ms: float = 1.0  # datastores: median operation latency
    port: int = 8080
    proxy: bool = False  # passes the upstream status through (a gateway) instead of answering 500
    package: str = ""  # code namespace used in stack traces and logger names
    endpoints: tuple[Endpoint, ...] = ()
    memory_base_mb: float = 200.0
    memory_limit_mb: float = 512.0
    cpu_base: float = 0.2

    @property
    def is_datastore(self) -> bool:
        return self.kind in DATASTORE_KINDS

    @property
    def emits_telemetry(self) -> bool:
        """Spans and logs; metrics come from the platform for every workload."""
        return self.instrumented and not self.is_datastore

    def endpoint(self, key: str) -> Endpoint:
        for endpoint in self.endpoints:
            if endpoint.key == key:
                return endpoint
        raise TopologyError(f"service {self.name!r} has no endpoint {key!r}")


@dataclass(frozen=True, eq=False)
class Topology:
    name: str
    system: str
    namespace: str
    domain: str
    entry: str
    services: tuple[Service, ...]
    environment: str = "production"
    deprecated_components: tuple[str, ...] = ()  # in the catalog, no longer running
    catalog_missing_edges: tuple[tuple[str, str], ...] = ()  # real calls the catalog forgot
    catalog_stale_edges: tuple[tuple[str, str], ...] = ()  # catalog dependencies that no longer exist

    @cached_property
    def by_name(self) -> dict[str, Service]:
        return {service.name: service for service in self.services}

    def service(self, name: str) -> Service:
        try:
            return self.by_name[name]
        except KeyError:
            raise TopologyError(f"topology {self.name!r} has no service {name!r}") from None

    @cached_property
    def edges(self) -> tuple[tuple[str, str], ...]:
        """Distinct (caller, callee) pairs in definition order."""
        seen: dict[tuple[str, str], None] = {}
        for service in self.services:
            for endpoint in service.endpoints:
                for call in endpoint.calls:
                    seen[(service.name, call.callee)] = None
        return tuple(seen)

    def callers_of(self, name: str) -> list[str]:
        return [caller for caller, callee in self.edges if callee == name]

    def callees_of(self, name: str) -> list[str]:
        return [callee for caller, callee in self.edges if caller == name]

    @property
    def workloads(self) -> tuple[Service, ...]:
        return tuple(s for s in self.services if not s.is_datastore)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "system": self.system,
            "environment": self.environment,
            "entry": self.entry,
            "services": [
                {
                    "name": s.name,
                    "kind": s.kind,
                    "language": s.language,
                    "instrumented": s.instrumented and not s.is_datastore,
                    "emits_logs": s.log_channel != "none" and s.instrumented,
                    "log_channel": s.log_channel if s.instrumented else "none",
                    "log_style": s.log_style if s.instrumented else None,
                    "db_system": s.db_system,
                    "owner": s.owner,
                    "tier": s.tier,
                    "replicas": s.replicas,
                    "endpoints": [e.key for e in s.endpoints],
                }
                for s in self.services
            ],
            "edges": [{"caller": a, "callee": b, "callee_kind": self.service(b).kind} for a, b in self.edges],
            "catalog": {
                "deprecated_components": list(self.deprecated_components),
                "missing_edges": [list(e) for e in self.catalog_missing_edges],
                "stale_edges": [list(e) for e in self.catalog_stale_edges],
            },
        }


# --------------------------------------------------------------------------------------------- loading


def _parse_call(raw: Any, where: str) -> Call:
    if isinstance(raw, str):
        parts = raw.split(None, 2)
        if len(parts) != 3:
            raise TopologyError(f"{where}: call {raw!r} must read 'callee METHOD /route'")
        return Call(callee=parts[0], endpoint=f"{parts[1]} {parts[2]}")
    if not isinstance(raw, dict) or "to" not in raw:
        raise TopologyError(f"{where}: call {raw!r} must be 'callee METHOD /route' or a mapping with 'to'")
    return Call(
        callee=raw["to"],
        endpoint=raw.get("endpoint"),
        operation=raw.get("op"),
        statement=raw.get("statement"),
        table=raw.get("table"),
        probability=float(raw.get("p", 1.0)),
        repeat=int(raw.get("repeat", 1)),
        parallel=bool(raw.get("parallel", False)),
        propagate=float(raw.get("propagate", 1.0)),
        timeout_ms=float(raw.get("timeout_ms", 3000.0)),
    )


def _parse_endpoint(raw: dict[str, Any], where: str) -> Endpoint:
    try:
        method, route = raw["endpoint"].split(None, 1)
    except (KeyError, ValueError, AttributeError):
        raise TopologyError(f"{where}: endpoint needs 'endpoint: METHOD /route', got {raw!r}") from None
    return Endpoint(
        method=method,
        route=route,
        latency_ms=float(raw.get("latency_ms", 5.0)),
        weight=float(raw.get("weight", 0.0)),
        calls=tuple(_parse_call(c, f"{where} {method} {route}") for c in raw.get("calls", [])),
        body=raw.get("body"),
        response=raw.get("response"),
        log_share=float(raw.get("log_share", 0.4)),
    )


def _service_from_dict(raw: dict[str, Any]) -> Service:
    name = raw["name"]
    kind = raw.get("kind", "service")
    language = raw.get("language")
    runtime = RUNTIME_DEFAULTS.get(raw.get("db_system") or language or "", {})
    channel, style = DEFAULT_LOGGING.get(language or "", ("none", None))
    if kind in DATASTORE_KINDS:
        channel, style = "none", None
    logs = raw.get("logs", {})
    fields = {
        "name": name,
        "kind": kind,
        "language": language,
        "instrumented": bool(raw.get("instrumented", True)),
        "log_channel": logs.get("channel", channel),
        "log_style": logs.get("style", style),
        "archetype": raw.get("archetype", "generic"),
        "noun": raw.get("noun", name.split("-")[0]),
        "owner": raw.get("owner", "team-platform"),
        "tier": int(raw.get("tier", 2)),
        "replicas": int(raw.get("replicas", 2)),
        "description": raw.get("description", ""),
        "component_type": raw.get("component_type", "service"),
        "lifecycle": raw.get("lifecycle", "production"),
        "db_system": raw.get("db_system"),
        "db_namespace": raw.get("db_namespace"),
        "latency_ms": float(raw.get("latency_ms", 1.0)),
        "port": int(raw.get("port", 8080)),
        "proxy": bool(raw.get("proxy", False)),
        "package": raw.get("package", f"com.example.{name.replace('-', '')}"),
        "endpoints": tuple(_parse_endpoint(e, name) for e in raw.get("endpoints", [])),
    }
    for key in ("memory_base_mb", "memory_limit_mb", "cpu_base"):
        fields[key] = float(raw.get(key, runtime.get(key, getattr(Service, key))))
    return Service(**fields)


def topology_from_dict(raw: dict[str, Any]) -> Topology:
    services = tuple(_service_from_dict(s) for s in raw["services"])
    topology = Topology(
        name=raw["name"],
        system=raw.get("system", raw["name"]),
        namespace=raw.get("namespace", raw["name"]),
        domain=raw.get("domain", f"{raw['name']}.example.com"),
        entry=raw["entry"],
        services=services,
        environment=raw.get("environment", "production"),
        deprecated_components=tuple(raw.get("deprecated_components", [])),
        catalog_missing_edges=tuple(tuple(e) for e in raw.get("catalog_missing_edges", [])),
        catalog_stale_edges=tuple(tuple(e) for e in raw.get("catalog_stale_edges", [])),
    )
    validate_topology(topology)
    return topology


def load_topology_file(path: Path) -> Topology:
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise TopologyError(f"cannot read topology file {path}: {exc}") from exc
    return topology_from_dict(raw)


def builtin_topologies() -> list[str]:
    return sorted(p.stem for p in TOPOLOGY_DIR.glob("*.yaml")) + ["random"]


def get_topology(name: str, seed: int = 0, n_services: int | None = None) -> Topology:
    """A built-in topology by name, ``random`` (seeded), or a path to a YAML file."""
    if name == "random" or name.startswith("random:"):
        count = n_services or (int(name.split(":", 1)[1]) if ":" in name else 14)
        return random_topology(count, seed)
    candidate = TOPOLOGY_DIR / f"{name}.yaml"
    if candidate.is_file():
        return load_topology_file(candidate)
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return load_topology_file(path)
    raise TopologyError(
        f"unknown topology {name!r}: use one of {', '.join(builtin_topologies())}, 'random:N' or a YAML path"
    )


def validate_topology(topology: Topology) -> None:
    names = [s.name for s in topology.services]
    if len(set(names)) != len(names):
        raise TopologyError(f"topology {topology.name!r} names a service twice")
    by_name = topology.by_name
    if topology.entry not in by_name:
        raise TopologyError(f"topology {topology.name!r}: entry service {topology.entry!r} is not defined")
    entry = by_name[topology.entry]
    if not any(e.weight > 0 for e in entry.endpoints):
        raise TopologyError(f"topology {topology.name!r}: entry {entry.name!r} needs endpoints with a weight")
    for service in topology.services:
        if service.is_datastore and not service.db_system:
            raise TopologyError(f"datastore {service.name!r} needs db_system")
        for endpoint in service.endpoints:
            for call in endpoint.calls:
                callee = by_name.get(call.callee)
                where = f"{service.name} {endpoint.key} -> {call.callee}"
                if callee is None:
                    raise TopologyError(f"{where}: unknown callee")
                if callee.is_datastore:
                    if not call.operation:
                        raise TopologyError(f"{where}: a datastore call needs 'op'")
                else:
                    callee.endpoint(call.endpoint or "")
    # The call graph must be acyclic: traces are unrolled into trees.
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 1:
            raise TopologyError(f"topology {topology.name!r} has a call cycle: {' -> '.join(path + [name])}")
        if state.get(name) == 2:
            return
        state[name] = 1
        for callee in topology.callees_of(name):
            visit(callee, path + [name])
        state[name] = 2

    for name in names:
        visit(name, [])


# ------------------------------------------------------------------------------------- random topology

NOUNS = (
    "order",
    "invoice",
    "inventory",
    "profile",
    "search",
    "pricing",
    "session",
    "billing",
    "ledger",
    "notification",
    "media",
    "review",
    "geo",
    "identity",
    "report",
    "audit",
    "quota",
    "policy",
    "token",
    "loyalty",
    "booking",
    "catalog",
    "checkout",
    "delivery",
    "document",
    "export",
    "feed",
    "graph",
    "import",
    "ingest",
    "label",
    "message",
    "metering",
    "offer",
    "partner",
    "payout",
    "preference",
    "promotion",
    "rating",
    "refund",
    "routing",
    "schedule",
    "settlement",
    "subscription",
    "tax",
    "tenant",
    "ticket",
    "upload",
    "usage",
    "voucher",
    "wallet",
    "warehouse",
)
GATEWAY_NAMES = ("api-gateway", "edge", "web-gateway", "ingress", "portal", "public-api")
SUFFIXES = ("-service", "-api", "-svc", "", "-core", "-engine", "-manager", "-worker")
DB_SYSTEMS = (("postgresql", "database"), ("mysql", "database"), ("mongodb", "database"))
CACHE_SYSTEMS = (("redis", "cache"), ("memcached", "cache"))
QUEUE_SYSTEMS = (("kafka", "queue"), ("rabbitmq", "queue"))
TEAMS = ("team-core", "team-growth", "team-payments", "team-data", "team-platform", "team-identity")
JSON_DIALECTS = {
    "java": ("logstash", "ecs"),
    "go": ("zap",),
    "python": ("python-json", "ecs"),
    "node": ("pino",),
}
TEXT_STYLES = {"java": ("java", "logback"), "go": ("go",), "python": ("python",), "node": ()}
DB_OPERATIONS = {
    "postgresql": ("SELECT", "INSERT", "UPDATE"),
    "mysql": ("SELECT", "INSERT", "UPDATE"),
    "mongodb": ("find", "insert", "update"),
    "redis": ("GET", "SET", "HGETALL"),
    "memcached": ("get", "set"),
    "kafka": ("publish",),
    "rabbitmq": ("publish",),
}


def _statement(system: str, operation: str, table: str) -> str | None:
    if system in ("postgresql", "mysql"):
        # The db.statement attribute a simulated span carries: text for telemetry, never executed.
        placeholder = "$1" if system == "postgresql" else "?"
        shapes = {
            "SELECT": "SELECT id, status, updated_at FROM {table} WHERE id = {p}",
            "INSERT": "INSERT INTO {table} (id, payload, created_at) VALUES ({p}, ?, now())",
            "UPDATE": "UPDATE {table} SET status = {p}, updated_at = now() WHERE id = ?",
        }
        return shapes[operation].format(table=table, p=placeholder).replace(
            "?", "$2" if system == "postgresql" else "?")
    if system == "redis":
        return f"{operation} {table}:?"
    if system == "mongodb":
        return f'{{"{operation}": "{table}", "filter": {{"_id": "?"}}}}'
    return None


def random_topology(n_services: int = 14, seed: int = 0) -> Topology:
    """A layered call graph: a gateway, a few API services, domain services and core services, plus
    databases, caches and a queue; names come from a generic vocabulary."""
    if n_services < 4:
        raise TopologyError(f"random topology needs at least 4 services, got {n_services}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7_331]))
    nouns = list(rng.permutation(NOUNS))
    names: list[str] = []
    service_nouns: dict[str, str] = {}
    for noun in nouns[:n_services]:
        name = f"{noun}{SUFFIXES[int(rng.integers(len(SUFFIXES)))]}"
        names.append(name)
        service_nouns[name] = noun
    gateway = str(rng.choice(GATEWAY_NAMES))
    names[0] = gateway
    service_nouns[gateway] = "request"
    rest = names[1:]
    n_api = max(1, round(len(rest) * 0.2))
    n_domain = max(1, round(len(rest) * 0.45))
    cut = n_api + n_domain
    layers = [[gateway], rest[:n_api], rest[n_api:cut], rest[cut:]]
    layers = [layer for layer in layers if layer]
    layer_of = {name: i for i, layer in enumerate(layers) for name in layer}

    n_db = max(1, n_services // 5)
    n_cache = max(1, n_services // 7)
    n_queue = 1 if n_services >= 8 else 0
    stores: list[tuple[str, str, str]] = []  # (name, system, kind)
    for count, systems, label in (
        (n_db, DB_SYSTEMS, "db"),
        (n_cache, CACHE_SYSTEMS, "cache"),
        (n_queue, QUEUE_SYSTEMS, "events"),
    ):
        for _ in range(count):
            system, kind = systems[int(rng.integers(len(systems)))]
            noun = nouns[n_services + len(stores)]
            stores.append((f"{noun}-{label}", system, kind))

    # Calls: each service in layer k calls 1-3 services of deeper layers; leaves use the datastores.
    callees: dict[str, list[str]] = {name: [] for name in names}
    for i, layer in enumerate(layers[:-1]):
        deeper = [n for layer2 in layers[i + 1 :] for n in layer2]
        nxt = layers[i + 1]
        for name in layer:
            k = int(rng.integers(1, min(3, len(deeper)) + 1)) if name != gateway else len(nxt)
            pool = nxt if name == gateway else deeper
            chosen = list(rng.choice(pool, size=min(k, len(pool)), replace=False))
            callees[name].extend(str(c) for c in chosen)
    # Everything below the gateway must be reachable: attach orphans to a random shallower service.
    for name in names[1:]:
        if not any(name in c for c in callees.values()):
            shallower = [n for n in names if layer_of[n] < layer_of[name] and n != gateway] or [gateway]
            callees[str(rng.choice(shallower))].append(name)
    store_users: dict[str, list[str]] = {}
    non_gateway = names[1:]
    for store_name, _, _ in stores:
        k = int(rng.integers(1, 4))
        users = [str(u) for u in rng.choice(non_gateway, size=min(k, len(non_gateway)), replace=False)]
        store_users[store_name] = users
        for user in users:
            callees[user].append(store_name)

    # One or two uninstrumented services: not the gateway, and called by someone.
    candidates = [n for n in names[1:] if layer_of[n] >= 2] or names[1:]
    n_blind = 1 if n_services < 12 else 2
    blind = {str(n) for n in rng.choice(candidates, size=min(n_blind, len(candidates)), replace=False)}

    store_info = {s[0]: s for s in stores}
    services: list[Service] = []
    for name in names[1:]:
        services.append(
            _random_service(
                rng,
                name,
                service_nouns[name],
                callees[name],
                store_info,
                instrumented=name not in blind,
                tier=1 if layer_of[name] <= 1 else None,
            )
        )
    services.insert(0, _random_gateway(rng, gateway, service_nouns[gateway], services, callees[gateway]))
    for store_name, system, kind in stores:
        runtime = RUNTIME_DEFAULTS[system]
        services.append(
            Service(
                name=store_name,
                kind=kind,
                db_system=system,
                db_namespace=store_name.split("-")[0],
                latency_ms={"database": 2.0, "cache": 0.35, "queue": 1.2}[kind],
                owner="team-platform",
                tier=1,
                replicas=1,
                component_type=kind,
                port={
                    "postgresql": 5432,
                    "mysql": 3306,
                    "mongodb": 27017,
                    "redis": 6379,
                    "memcached": 11211,
                    "kafka": 9092,
                    "rabbitmq": 5672,
                }[system],
                **runtime,
            )
        )
    topology = Topology(
        name=f"random-{n_services}-s{seed}",
        system=f"{nouns[0]}-platform",
        namespace=f"{nouns[0]}-prod",
        domain=f"{nouns[0]}.example.net",
        entry=gateway,
        services=tuple(services),
    )
    topology = _resolve_wildcard_calls(topology, rng)
    validate_topology(topology)
    return topology


def _logging_for(rng: np.random.Generator, language: str) -> tuple[str, str | None]:
    channel = str(rng.choice(["text", "jsonl", "otlp"], p=[0.45, 0.35, 0.2]))
    if channel == "text" and TEXT_STYLES[language]:
        return "text", str(rng.choice(TEXT_STYLES[language]))
    if channel in ("text", "jsonl"):
        return "jsonl", str(rng.choice(JSON_DIALECTS[language]))
    return "otlp", None


def _random_service(
    rng: np.random.Generator,
    name: str,
    noun: str,
    callees: list[str],
    store_info: dict[str, tuple[str, str, str]],
    *,
    instrumented: bool,
    tier: int | None,
) -> Service:
    language = str(rng.choice(["java", "go", "python", "node"]))
    channel, style = _logging_for(rng, language)
    return Service(
        name=name,
        language=language,
        instrumented=instrumented,
        log_channel=channel,
        log_style=style,
        archetype="generic",
        noun=noun,
        owner=str(rng.choice(TEAMS)),
        tier=tier or int(rng.choice([1, 2, 3], p=[0.3, 0.5, 0.2])),
        replicas=int(rng.integers(2, 4)),
        package=f"io.acme.{noun}",
        endpoints=_random_endpoints(rng, noun, callees, store_info),
        **RUNTIME_DEFAULTS[language],
    )


def _random_gateway(
    rng: np.random.Generator, name: str, noun: str, services: list[Service], callees: list[str]
) -> Service:
    """An API gateway that proxies each endpoint of the services right behind it."""
    language = "nginx" if rng.random() < 0.5 else str(rng.choice(["java", "go", "node"]))
    channel, style = ("text", "nginx") if language == "nginx" else _logging_for(rng, language)
    by_name = {s.name: s for s in services}
    endpoints = []
    for callee in callees:
        for endpoint in by_name[callee].endpoints:
            endpoints.append(
                Endpoint(
                    method=endpoint.method,
                    route=endpoint.route,
                    latency_ms=0.6,
                    weight=float(rng.uniform(1, 10)) * (3.0 if endpoint.method == "GET" else 1.0),
                    calls=(Call(callee=callee, endpoint=endpoint.key, timeout_ms=10000.0),),
                    body=endpoint.body,
                    response=endpoint.response,
                    log_share=1.0 if style == "nginx" else 0.3,
                )
            )
    return Service(
        name=name,
        language=language,
        log_channel=channel,
        log_style=style,
        archetype="nginx" if style == "nginx" else "generic",
        noun=noun,
        owner="team-platform",
        tier=1,
        replicas=2,
        component_type="website",
        proxy=True,
        package=f"io.acme.{noun}",
        endpoints=tuple(endpoints),
        **RUNTIME_DEFAULTS[language],
    )


def plural(noun: str) -> str:
    if noun.endswith("y") and noun[-2:-1] not in "aeiou":
        return noun[:-1] + "ies"
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    return noun + "s"


def _random_endpoints(
    rng: np.random.Generator,
    noun: str,
    callees: list[str],
    store_info: dict[str, tuple[str, str, str]],
) -> tuple[Endpoint, ...]:
    """Endpoints for a generated service; calls to services name endpoint '*' until resolved."""
    nouns = plural(noun)
    shapes = [
        ("GET", f"/api/v1/{nouns}/{{id}}", 4.0, None),
        ("GET", f"/api/v1/{nouns}", 9.0, None),
        ("POST", f"/api/v1/{nouns}", 14.0, {f"{noun}_id": "uuid", "amount": "decimal", "tags": ["str"]}),
        ("PUT", f"/api/v1/{nouns}/{{id}}", 11.0, {"status": "str", "version": "int"}),
    ]
    count = int(rng.integers(2, 5))
    chosen = shapes[:count]
    endpoints = []
    for i, (method, route, latency, body) in enumerate(chosen):
        calls: list[Call] = []
        for callee in callees:
            if callee in store_info:
                _, system, kind = store_info[callee]
                ops = DB_OPERATIONS[system]
                op = ops[0] if method == "GET" else ops[min(len(ops) - 1, 1 + (i % max(1, len(ops) - 1)))]
                table = plural(noun) if kind != "queue" else f"{noun}.events"
                calls.append(
                    Call(
                        callee=callee,
                        operation=op,
                        statement=_statement(system, op, table),
                        table=table,
                        probability=0.9 if kind != "cache" else 1.0,
                        timeout_ms=2000.0,
                    )
                )
            elif rng.random() < 0.7 or i == 0:
                calls.append(
                    Call(
                        callee=callee,
                        endpoint="*",
                        probability=float(rng.choice([1.0, 1.0, 0.8, 0.5])),
                        propagate=1.0 if rng.random() < 0.8 else 0.0,
                        timeout_ms=float(rng.choice([1500.0, 3000.0, 5000.0])),
                    )
                )
        endpoints.append(
            Endpoint(
                method=method,
                route=route,
                latency_ms=latency * float(rng.uniform(0.5, 1.5)),
                calls=tuple(calls),
                body=body,
                response={f"{noun}_id": "uuid", "status": "str", "amount": "decimal"},
            )
        )
    return tuple(endpoints)


def _resolve_wildcard_calls(topology: Topology, rng: np.random.Generator) -> Topology:
    """Point generated calls (endpoint '*') at a concrete endpoint of the callee. A caller's first endpoint
    calls the callee's first endpoint, so every service stays reachable from the gateway."""
    services = []
    for service in topology.services:
        endpoints = []
        for index, endpoint in enumerate(service.endpoints):
            calls = []
            for call in endpoint.calls:
                if call.endpoint == "*":
                    target = topology.by_name[call.callee].endpoints
                    pick = 0 if index == 0 else int(rng.integers(len(target)))
                    call = replace(call, endpoint=target[pick].key)
                calls.append(call)
            endpoints.append(replace(endpoint, calls=tuple(calls)))
        services.append(replace(service, endpoints=tuple(endpoints)))
    return replace(topology, services=tuple(services))
