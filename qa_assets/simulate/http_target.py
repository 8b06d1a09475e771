"""A simulated HTTP target: the simulated system's routes served over real HTTP, in the faulty or the fixed
version of one injected fault.

Regression tests generated from simulated telemetry need a deployment to run against: one that still has
the fault (the tests must fail) and one where it is fixed (they must pass). This server is that deployment.
It serves every route of every service of the topology the ground truth names, and answers each request
the way the simulator's own engine would have: the route's call tree (``traffic.simulate_tree``, the code
that wrote the spans) is simulated for that one request in a ``World`` minute drawn from the fault's window,

- **faulty**: with the fault's effect in force (``faults.Effect`` rebuilt from the ground truth: its kind's
  parameters, root service, routes and window), so the HTTP symptom shows as the simulator modelled it:
  injected error statuses at their rate, slower own processing, a datastore refusing or hanging, pods
  crash-looping or OOM-killed, a callee's changed response that its callers fail to read;
- **fixed**: the same minutes of a ``World`` without the fault: the healthy baseline (its rare background
  errors included unless ``baseline_errors=False``).

The request's status and duration are the simulated root span's: the handler sleeps the simulated time,
then answers. When the requested service itself is down (refused or hanging, as a caller would find it),
the connection is closed without an answer, after the longest timeout any caller in the topology gives it
for a hang. Nothing here names a service: everything comes from the topology and the ground truth.

Addresses: ``<base>/<route>`` resolves the route on the entry service first, then on the other services in
topology order; ``<base>/_svc/<service>/<route>`` asks one service (what a per-service base URL points at).

    with serve_target(truth, "F01", "faulty") as target:
        urllib.request.urlopen(target.service_url("some-service") + "/some/route")
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from qa_assets.simulate import errors as E
from qa_assets.simulate.faults import FAULT_KINDS, Effect, FaultSpec, Plan, PlannedFault
from qa_assets.simulate.ground_truth import example_payload
from qa_assets.simulate.topology import (
    Endpoint,
    Service,
    Topology,
    TopologyError,
    get_topology,
    random_topology,
)
from qa_assets.simulate.traffic import (
    TraceTree,
    baseline_error_rates,
    call_tree,
    node_parameters,
    pick_instances,
    simulate_tree,
)
from qa_assets.simulate.world import MinuteState, World

VERSIONS = ("faulty", "fixed")
SERVICE_PREFIX = "/_svc/"
DEFAULT_HANG_MS = 3000.0  # a hang lasts until the caller gives up; when no caller says, a usual client timeout
_RANDOM_NAME = re.compile(r"^random-(\d+)-s(\d+)$")  # random_topology's name: random-<services>-s<seed>


class TargetError(ValueError):
    """A ground truth, fault or version the target cannot serve; the message says what to pass instead."""


# ------------------------------------------------------------------------------------------ inputs


def load_ground_truth(path: str | Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TargetError(f"cannot read ground truth {path}: {exc}") from exc


def topology_of(truth: dict[str, Any], topology: str | Topology | None = None) -> Topology:
    """The topology a ground truth was simulated on, rebuilt from its generator settings (a built-in name or
    ``random-<services>-s<seed>``); ``topology`` (a name, YAML path or object) for one loaded from a file."""
    if isinstance(topology, Topology):
        built = topology
    else:
        name = topology or str((truth.get("generator") or {}).get("topology") or "")
        match = _RANDOM_NAME.match(name)
        try:
            built = random_topology(int(match.group(1)), int(match.group(2))) if match else get_topology(name)
        except TopologyError as exc:
            raise TargetError(f"{exc}; pass the topology the ground truth was simulated on") from exc
    expected = [s.get("name") for s in (truth.get("topology") or {}).get("services", [])]
    if expected and expected != [s.name for s in built.services]:
        raise TargetError(
            f"topology {built.name!r} does not match the ground truth's services "
            f"({', '.join(map(str, expected))}); pass the topology the ground truth was simulated on"
        )
    return built


def http_faults(truth: dict[str, Any]) -> list[dict[str, Any]]:
    """The faults of a ground truth that show over HTTP (production faults with an ``http`` description;
    CI-only faults such as flaky tests have none)."""
    return [
        f for f in truth.get("faults", [])
        if f.get("http") and (f.get("params") or {}).get("type") not in (None, "flaky")
    ]


def _minute(truth: dict[str, Any], text: str) -> int:
    start = dt.datetime.fromisoformat(str(truth["generator"]["start"]).replace("Z", "+00:00"))
    at = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return int(round((at - start).total_seconds() / 60.0))


def _planned_fault(truth: dict[str, Any], fault: dict[str, Any], topology: Topology) -> PlannedFault:
    params = dict(fault.get("params") or {})
    kind = FAULT_KINDS.get(str(fault.get("kind")))
    if kind is None or params.get("type") in (None, "flaky"):
        raise TargetError(
            f"fault {fault.get('fault_id')!r} ({fault.get('kind')}) shows only in CI, not over HTTP")
    service = str(fault["root_service"])
    topology.service(service)  # raises when the topology does not have it
    start, end = _minute(truth, fault["start"]), _minute(truth, fault["end"])
    routes = tuple(fault.get("routes") or ())
    effect = Effect(type=params["type"], service=service, start_min=start, end_min=end,
                    source=str(fault["fault_id"]), routes=routes, params=params)
    return PlannedFault(fault_id=str(fault["fault_id"]), kind=kind, service=service, start_min=start,
                        end_min=end, spec=FaultSpec(kind.name), routes=routes, effect=effect)


# ------------------------------------------------------------------------------------------ the model


@dataclass
class Answer:
    """What the target does with one request: ``status`` None = close the connection without answering."""

    status: int | None
    delay_ms: float
    body: Any = None
    service: str | None = None
    route: str | None = None


@dataclass
class _Route:
    service: Service
    index: int
    endpoint: Endpoint
    pattern: re.Pattern[str]
    tree: TraceTree | None = None


@dataclass
class TargetModel:
    """How the simulated system answers, faulty or fixed, for one fault of a ground truth (no HTTP here:
    ``answer(method, path)`` is the whole behaviour, so it is tested without sockets)."""

    truth: dict[str, Any]
    fault_id: str
    version: str
    seed: int = 0
    baseline_errors: bool = True
    topology: Any = None  # a Topology, a name or YAML path; default: the one the ground truth names
    fault: dict[str, Any] = field(init=False)
    _lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.version not in VERSIONS:
            raise TargetError(f"version must be one of {', '.join(VERSIONS)}, got {self.version!r}")
        faults = {str(f.get("fault_id")): f for f in self.truth.get("faults", [])}
        if self.fault_id not in faults:
            raise TargetError(
                f"the ground truth has no fault {self.fault_id!r}; it has {', '.join(faults) or 'none'}")
        self.fault = faults[self.fault_id]
        self.topology = topology_of(self.truth, self.topology)
        topo = self.topology
        planned = _planned_fault(self.truth, self.fault, topo)
        generator = self.truth.get("generator") or {}
        seed = int(generator.get("seed", 0))
        plan = Plan(faults=[planned] if self.version == "faulty" else [], decoys=[], dropped=[])
        world = World(topo, plan, [], {}, 0, seed)
        # every minute of the fault's window, as the faulty (or the fault-free) system lived it
        self._states: list[MinuteState] = [world.step(m) for m in range(planned.end_min)][planned.start_min:]
        if not self._states:
            raise TargetError(f"fault {self.fault_id!r} has an empty window ({self.fault.get('start')} .. "
                              f"{self.fault.get('end')})")
        self._effect = planned.effect if self.version == "faulty" else None
        self._rng = np.random.default_rng(np.random.SeedSequence([seed, self.seed, 9_090]))
        self._index = {s.name: i for i, s in enumerate(topo.services)}
        self._baseline = (baseline_error_rates(topo, seed) if self.baseline_errors
                          else np.zeros(len(topo.services)))
        self._proxies = np.array([s.proxy for s in topo.services])
        ordered = [topo.service(topo.entry)] + [s for s in topo.services if s.name != topo.entry]
        self._routes = [
            _Route(s, self._index[s.name], e, _route_pattern(e.route))
            for s in ordered for e in s.endpoints
        ]
        self._hang_ms = {s.name: _hang_ms(topo, s.name) for s in topo.services}

    # -------------------------------------------------------------------------------- routing

    def resolve(self, method: str, path: str) -> _Route | None:
        """The endpoint a request names: ``/_svc/<service>/<route>`` or ``<route>`` (entry service first)."""
        service = None
        if path.startswith(SERVICE_PREFIX):
            name, _, rest = path[len(SERVICE_PREFIX):].partition("/")
            service, path = urllib.parse.unquote(name), "/" + rest
        for route in self._routes:
            if service is not None and route.service.name != service:
                continue
            if route.endpoint.method == method and route.pattern.fullmatch(path):
                return route
        return None

    def service_names(self) -> list[str]:
        return [s.name for s in self.topology.services if s.endpoints]  # type: ignore[union-attr]

    def example_bodies(self) -> list[tuple[str, str, Any]]:
        """(method, route, a valid request body) of every route whose request has a body in the topology,
        the examples an API's documentation gives."""
        seen: dict[tuple[str, str], Any] = {}
        for route in self._routes:
            endpoint = route.endpoint
            if endpoint.body:
                seen.setdefault((endpoint.method, endpoint.route), example_payload(endpoint.body))
        return [(method, path, body) for (method, path), body in seen.items()]

    # -------------------------------------------------------------------------------- answering

    def answer(self, method: str, path: str) -> Answer:
        path = urllib.parse.unquote(urllib.parse.urlsplit(path).path) or "/"
        route = self.resolve(method.upper(), path)
        if route is None:
            return Answer(404, 0.0, {"error": "not found", "method": method, "path": path})
        if route.tree is None:
            route.tree = call_tree(self.topology, route.service, route.endpoint)
        tree, s = route.tree, route.index
        with self._lock:  # numpy generators are not thread-safe; simulating one request takes microseconds
            state = self._states[int(self._rng.integers(len(self._states)))]
            # the outside caller meets the service's pods as any caller does (traffic.simulate_tree, pass 1)
            u_pick, u_avail, u_mode, u_contract = self._rng.random(4)
            pods = state.inst_available[s]
            pod = int(pick_instances(pods, np.array([u_pick]))[0])
            if u_avail >= pods[pod] * (1.0 - state.unavailable[s]):
                hanging = u_mode < state.hang_share[s]
                delay = self._hang_ms[route.service.name] if hanging else 0.5 + 2.0 * u_mode
                return Answer(None, float(delay), None, route.service.name, route.endpoint.key)
            params = node_parameters(tree, state, self._baseline)
            outcome = simulate_tree(tree, 1, state, params, self._rng, self._proxies)
        status, code = int(outcome.status[0, 0]), int(outcome.code[0, 0])
        return Answer(status, float(outcome.duration_ms[0, 0]), self._body(route, status, code, u_contract),
                      route.service.name, route.endpoint.key)

    def _body(self, route: _Route, status: int, code: int, u_contract: float) -> Any:
        endpoint = route.endpoint
        if code == E.FAULT and self._effect is not None:
            family = str(self._effect.params.get("error", "regression"))
            exc = E.fault_exception(route.service, endpoint, family, self.fault_id)
            return {"error": exc.type, "message": exc.message}
        if status >= 400:
            return {"error": "upstream failure" if status >= 500 else "rejected", "status": status}
        body = example_payload(endpoint.response) if endpoint.response else {"ok": True}
        effect = self._effect
        if (effect is not None and effect.type == "contract" and effect.service == route.service.name
                and (not effect.routes or endpoint.key in effect.routes)
                and u_contract < float(effect.params.get("rate", 0.5))):
            # the release changed a numeric field into an object (ground_truth.http_symptom describes it)
            body = _changed_field(copy.deepcopy(body), E.contract_field(endpoint))
        return body


def _route_pattern(route: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^/{}]+\})", route)
    return re.compile("".join("[^/]+" if p.startswith("{") and p.endswith("}") else re.escape(p)
                              for p in parts))


def _hang_ms(topology: Topology, name: str) -> float:
    """How long a hanging request to ``name`` lasts: the longest timeout any caller gives it."""
    timeouts = [
        call.timeout_ms
        for s in topology.services for e in s.endpoints for call in e.calls if call.callee == name
    ]
    return float(max(timeouts, default=DEFAULT_HANG_MS))


def _changed_field(body: Any, path: str) -> Any:
    if not isinstance(body, dict) or not path:
        return body
    head, _, rest = path.partition(".")
    if rest and isinstance(body.get(head), dict):
        body[head] = _changed_field(body[head], rest)
    else:
        body[head] = {"value": 12, "scale": 2}
    return body


# ------------------------------------------------------------------------------------------ HTTP


class _Handler(BaseHTTPRequestHandler):
    server: _TargetServer
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        answer = self.server.model.answer(self.command, self.path)
        self.server.count(answer)
        time.sleep(answer.delay_ms / 1000.0)
        if answer.status is None:  # refused, reset or hung up: the caller gets no answer
            self.close_connection = True
            return
        data = json.dumps(answer.body).encode("utf-8")
        self.send_response(answer.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)


class _TargetServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], model: TargetModel, verbose: bool = False) -> None:
        super().__init__(address, _Handler)
        self.model = model
        self.verbose = verbose
        self.answered: dict[str, int] = {}
        self._count_lock = threading.Lock()

    def count(self, answer: Answer) -> None:
        key = "no answer" if answer.status is None else str(answer.status)
        with self._count_lock:
            self.answered[key] = self.answered.get(key, 0) + 1


@dataclass
class RunningTarget:
    """A started target: its base URL and, per service, the URL that reaches that service alone."""

    base_url: str
    model: TargetModel
    server: _TargetServer

    def service_url(self, service: str) -> str:
        return f"{self.base_url}{SERVICE_PREFIX}{urllib.parse.quote(service, safe='')}"

    @property
    def answered(self) -> dict[str, int]:
        """Requests answered so far, by status (``no answer`` for refused or hung-up requests)."""
        return dict(self.server.answered)


def start_target(truth: dict[str, Any], fault_id: str, version: str, *, host: str = "127.0.0.1",
                 port: int = 0, seed: int = 0, baseline_errors: bool = True,
                 topology: str | Topology | None = None, verbose: bool = False) -> RunningTarget:
    """Start serving in a background thread; stop with ``stop_target``. ``port=0`` picks a free port."""
    model = TargetModel(truth, fault_id, version, seed=seed, baseline_errors=baseline_errors,
                        topology=topology)
    server = _TargetServer((host, port), model, verbose=verbose)
    threading.Thread(target=server.serve_forever, name=f"http-target-{fault_id}-{version}",
                     daemon=True).start()
    bound_host, bound_port = server.server_address[:2]
    return RunningTarget(f"http://{bound_host}:{bound_port}", model, server)


def stop_target(target: RunningTarget) -> None:
    target.server.shutdown()
    target.server.server_close()


@contextmanager
def serve_target(truth: dict[str, Any], fault_id: str, version: str,
                 **options: Any) -> Iterator[RunningTarget]:
    """``with serve_target(truth, "F01", "faulty") as target:``: on 127.0.0.1, a free port by default."""
    target = start_target(truth, fault_id, version, **options)
    try:
        yield target
    finally:
        stop_target(target)
