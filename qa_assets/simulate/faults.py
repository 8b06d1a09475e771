"""Faults and decoys as data.

A *fault kind* (``FAULT_KINDS``) says what goes wrong, which defect type and cause kind it is, which
change starts and ends it, which services qualify as its root, and the *effects* the traffic engine
applies while it is active. A *scenario* is an ordered list of ``FaultSpec`` / ``DecoySpec``; placing it
on the simulated window (``plan_scenario``) picks root services and times from the seed and gives every
fault its own slot, so faults never overlap unless a spec asks for it. The result, a ``Plan``, is what
the rest of the simulator and the ground truth read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qa_assets.simulate.topology import Service, Topology

DEFECT_TYPES = (
    "error_spike",
    "latency_regression",
    "availability",
    "resource_exhaustion",
    "dependency_failure",
    "config_error",
    "data_validation",
    "flaky_test",
)
CAUSE_KINDS = (
    "code_change",
    "config_change",
    "resource_exhaustion",
    "dependency_failure",
    "traffic_surge",
    "infrastructure",
)


class ScenarioError(ValueError):
    """A scenario that cannot be placed on the topology or window; the message says why."""


@dataclass(frozen=True)
class FaultKind:
    name: str
    defect_type: str
    cause_kind: str
    description: str
    target: str  # role of the root service, see ``candidates``
    duration_min: int
    trigger: str | None = None  # change that starts it: "code" | "config" | None
    resolution: str | None = None  # change that ends it: "rollback" | "fix" | "revert" | None
    effect: dict[str, Any] = field(default_factory=dict)  # what the traffic engine applies
    in_production: bool = True  # False: shows only in CI (flaky tests)


FAULT_KINDS: dict[str, FaultKind] = {
    k.name: k
    for k in (
        FaultKind(
            "bad_deploy",
            "error_spike",
            "code_change",
            "a release throws a new exception on one endpoint; callers see 5xx",
            target="called_service",
            duration_min=40,
            trigger="code",
            resolution="rollback",
            effect={"type": "errors", "rate": 0.3, "routes": "one", "status": 500, "error": "regression"},
        ),
        FaultKind(
            "latency_regression",
            "latency_regression",
            "config_change",
            "a configuration change (cache disabled, pool shrunk) makes one service several times slower",
            target="called_service",
            duration_min=60,
            trigger="config",
            resolution="revert",
            effect={"type": "latency", "factor": 5.0, "routes": "all"},
        ),
        FaultKind(
            "memory_leak",
            "resource_exhaustion",
            "resource_exhaustion",
            "a release leaks memory; pods are OOM-killed and restart, callers see 503s around each kill",
            target="leaky_service",
            duration_min=180,
            trigger="code",
            resolution="fix",
            effect={"type": "memory_leak", "ooms_per_instance": 2.5},
        ),
        FaultKind(
            "dependency_outage",
            "dependency_failure",
            "dependency_failure",
            "a database or cache becomes unreachable; its callers fail with connection errors and timeouts",
            target="datastore",
            duration_min=20,
            effect={"type": "unavailable", "fraction": 0.92, "mode": "refused"},
        ),
        FaultKind(
            "contract_break",
            "data_validation",
            "code_change",
            "a release changes a response field; the callee stays healthy, its callers fail to read it",
            target="contract_callee",
            duration_min=45,
            trigger="code",
            resolution="rollback",
            effect={"type": "contract", "rate": 0.55, "routes": "one"},
        ),
        FaultKind(
            "uninstrumented_outage",
            "availability",
            "infrastructure",
            "a service without traces or logs crash-loops; only callers' client spans and metrics show it",
            target="uninstrumented",
            duration_min=30,
            effect={"type": "crash_loop", "fraction": 1.0, "hang_share": 0.35},
        ),
        FaultKind(
            "config_error",
            "config_error",
            "config_change",
            "a bad configuration value makes one endpoint fail on every request",
            target="called_service",
            duration_min=30,
            trigger="config",
            resolution="revert",
            effect={"type": "errors", "rate": 0.85, "routes": "one", "status": 500, "error": "config"},
        ),
        FaultKind(
            "crash_loop",
            "availability",
            "code_change",
            "a release crashes at start-up on part of the pods; capacity drops, callers see 503s",
            target="replicated_service",
            duration_min=25,
            trigger="code",
            resolution="rollback",
            effect={"type": "crash_loop", "fraction": 0.5, "hang_share": 0.0},
        ),
        FaultKind(
            "validation_regression",
            "data_validation",
            "code_change",
            "a release rejects valid requests with 422; callers turn it into errors",
            target="write_service",
            duration_min=40,
            trigger="code",
            resolution="rollback",
            effect={"type": "errors", "rate": 0.25, "routes": "write", "status": 422, "error": "validation"},
        ),
        FaultKind(
            "flaky_test",
            "flaky_test",
            "code_change",
            "a test added in a release fails intermittently across CI runs of the same version",
            target="any_service",
            duration_min=0,
            trigger="code",
            in_production=False,
            effect={"type": "flaky", "failure_rate": 0.35},
        ),
    )
}

DECOY_KINDS = ("harmless_deploy", "harmless_config", "traffic_surge", "latency_blip")


@dataclass(frozen=True)
class FaultSpec:
    kind: str
    service: str | None = None  # a service name; when absent (or not in the topology) chosen by role
    duration_min: int | None = None
    params: dict[str, Any] = field(default_factory=dict)  # overrides of the kind's effect
    caught_by_ci: bool = False  # a CI test failed on the triggering version (it was deployed anyway)
    harmless_deploy_before: bool = False  # a decoy deploy on another service minutes before the fault
    blips: int = 0  # unrelated services with short latency blips while the fault is under way
    concurrent: bool = False  # share the previous item's slot (overlap on purpose)


@dataclass(frozen=True)
class DecoySpec:
    kind: str  # traffic_surge | latency_blip | harmless_deploy | harmless_config
    service: str | None = None
    duration_min: int | None = None
    factor: float | None = None


ScenarioItem = FaultSpec | DecoySpec


def _scenario_default() -> list[ScenarioItem]:
    return [
        FaultSpec("bad_deploy", blips=1),
        DecoySpec("traffic_surge"),
        FaultSpec("contract_break", caught_by_ci=True, blips=1),
        FaultSpec("latency_regression"),
        FaultSpec("dependency_outage", harmless_deploy_before=True, blips=1),
        FaultSpec("memory_leak"),
        FaultSpec("uninstrumented_outage", harmless_deploy_before=True, blips=1),
        FaultSpec("flaky_test"),
    ]


def _scenario_all() -> list[ScenarioItem]:
    items: list[ScenarioItem] = []
    for i, name in enumerate(FAULT_KINDS):
        items.append(
            FaultSpec(
                name,
                caught_by_ci=name == "validation_regression",
                blips=i % 2,
                harmless_deploy_before=name in ("dependency_outage", "uninstrumented_outage"),
            )
        )
        if name == "latency_regression":
            items.append(DecoySpec("traffic_surge"))
    return items


def _scenario_rca() -> list[ScenarioItem]:
    """Faults where the service whose own errors or latency rose most is not the root."""
    return [
        FaultSpec("contract_break", blips=2, harmless_deploy_before=True),
        FaultSpec("uninstrumented_outage", blips=2, harmless_deploy_before=True),
        FaultSpec("dependency_outage", blips=2, harmless_deploy_before=True),
        FaultSpec("bad_deploy", blips=2),
        FaultSpec("latency_regression", blips=2, harmless_deploy_before=True),
        FaultSpec("dependency_outage", blips=1, params={"mode": "timeout", "fraction": 0.7}),
    ]


SCENARIOS = {
    "default": _scenario_default,
    "all": _scenario_all,
    "none": lambda: [],
    "rca": _scenario_rca,
    "decoys": lambda: [DecoySpec("traffic_surge"), DecoySpec("latency_blip"), DecoySpec("traffic_surge")],
}


def scenario_names() -> list[str]:
    return sorted(SCENARIOS) + ["random"] + sorted(FAULT_KINDS)


def scenario_items(name: str, rng: np.random.Generator, hours: float) -> list[ScenarioItem]:
    """The items of a named scenario: a built-in list, ``random``, or a single fault kind."""
    if name in SCENARIOS:
        return SCENARIOS[name]()
    if name == "random":
        return random_scenario(rng, hours)
    if name in FAULT_KINDS:
        return [FaultSpec(name, blips=1)]
    raise ScenarioError(f"unknown scenario {name!r}: use one of {', '.join(scenario_names())}")


def random_scenario(rng: np.random.Generator, hours: float) -> list[ScenarioItem]:
    """Fault kinds, decorations and decoys drawn from the seed (for evaluation over many seeds)."""
    production = [k for k, v in FAULT_KINDS.items() if v.in_production]
    count = int(np.clip(round(hours / 4.0 + rng.integers(1, 3)), 2, 7))
    kinds = [str(k) for k in rng.choice(production, size=count, replace=count > len(production))]
    items: list[ScenarioItem] = []
    for kind in kinds:
        items.append(
            FaultSpec(
                kind,
                caught_by_ci=FAULT_KINDS[kind].trigger == "code" and rng.random() < 0.3,
                harmless_deploy_before=FAULT_KINDS[kind].trigger is None or rng.random() < 0.4,
                blips=int(rng.integers(0, 3)),
            )
        )
        if rng.random() < 0.2:
            items.append(DecoySpec(str(rng.choice(["traffic_surge", "latency_blip"]))))
    if rng.random() < 0.5:
        items.append(FaultSpec("flaky_test"))
    return items


# ------------------------------------------------------------------------------------------- placing


@dataclass
class Effect:
    """What the traffic engine applies to one service during [start_min, end_min)."""

    type: str  # errors | latency | unavailable | contract | memory_leak | crash_loop | traffic
    service: str
    start_min: int
    end_min: int
    source: str  # fault or decoy id
    routes: tuple[str, ...] = ()  # endpoint keys; empty = every endpoint
    params: dict[str, Any] = field(default_factory=dict)

    def active(self, minute: int) -> bool:
        return self.start_min <= minute < self.end_min


@dataclass
class PlannedFault:
    fault_id: str
    kind: FaultKind
    service: str
    start_min: int
    end_min: int
    spec: FaultSpec
    routes: tuple[str, ...]
    effect: Effect | None
    blips: list[Effect] = field(default_factory=list)
    change_id: str | None = None  # filled when the deployment schedule is built
    resolution_change_id: str | None = None
    new_version: str | None = None
    previous_version: str | None = None
    flaky_test: str | None = None


@dataclass
class PlannedDecoy:
    decoy_id: str
    kind: str
    service: str | None
    start_min: int
    end_min: int
    effect: Effect | None = None
    before_fault: str | None = None  # the fault this harmless change precedes
    change_id: str | None = None


@dataclass
class Plan:
    faults: list[PlannedFault]
    decoys: list[PlannedDecoy]
    dropped: list[str]  # scenario items that did not fit the window

    def effects(self) -> list[Effect]:
        found: list[Effect] = []
        for fault in self.faults:
            if fault.effect is not None:
                found.append(fault.effect)
            found.extend(fault.blips)
        found.extend(d.effect for d in self.decoys if d.effect is not None)
        return found


def candidates(topology: Topology, role: str) -> list[Service]:
    """Services that qualify as the root of a fault whose kind targets ``role``."""
    entry = topology.entry

    def called_by_instrumented(service: Service, exclude_proxy: bool = False) -> bool:
        callers = [topology.service(c) for c in topology.callers_of(service.name)]
        return any(c.emits_telemetry and not (exclude_proxy and c.proxy) for c in callers)

    workloads = [s for s in topology.workloads if s.name != entry]
    instrumented = [s for s in workloads if s.emits_telemetry and called_by_instrumented(s)]
    if role == "called_service":
        return instrumented
    if role == "leaky_service":
        return [s for s in instrumented if s.language in ("java", "node", "python", "go")]
    if role == "replicated_service":
        return [s for s in instrumented if s.replicas >= 2]
    if role == "write_service":
        return [s for s in instrumented if any(e.method in ("POST", "PUT") for e in s.endpoints)]
    if role == "contract_callee":
        return [s for s in instrumented if called_by_instrumented(s, exclude_proxy=True)]
    if role == "datastore":
        return [s for s in topology.services if s.kind in ("database", "cache") and called_by_instrumented(s)]
    if role == "uninstrumented":
        return [s for s in workloads if not s.instrumented and topology.callers_of(s.name)]
    if role == "any_service":  # anything with a test suite
        return [
            s
            for s in topology.workloads
            if s.emits_telemetry and s.language in ("java", "go", "python", "node")
        ]
    raise ScenarioError(f"unknown target role {role!r}")


def served_endpoints(topology: Topology) -> dict[str, set[str]]:
    """Per service, the endpoint keys requests reach: the server nodes of the traffic engine's call trees."""
    from qa_assets.simulate.traffic import SERVER, build_trees  # traffic imports this module (via world)

    served: dict[str, set[str]] = {}
    for tree in build_trees(topology):
        for j in range(tree.size):
            if tree.kind[j] == SERVER:
                served.setdefault(topology.services[int(tree.service[j])].name, set()).add(tree.route_keys[j])
    return served


def _pick_routes(
    kind: FaultKind, service: Service, topology: Topology, rng: np.random.Generator, params: dict[str, Any]
) -> tuple[str, ...]:
    scope = params.get("routes", kind.effect.get("routes", "all"))
    keys = [e.key for e in service.endpoints]
    if scope == "all" or not keys:
        return ()
    # A fault on an endpoint no request reaches changes nothing anyone could observe.
    served = served_endpoints(topology).get(service.name, set())
    keys = [k for k in keys if k in served] or keys
    if scope == "write":
        writes = [e.key for e in service.endpoints if e.method in ("POST", "PUT", "DELETE") and e.key in keys]
        writes = writes or keys
        return (writes[int(rng.integers(len(writes)))],)
    if kind.effect.get("type") == "contract":
        # a contract break matters only on endpoints that instrumented services call
        called = [
            call.endpoint
            for caller in topology.services
            if caller.emits_telemetry and not caller.proxy
            for ep in caller.endpoints
            for call in ep.calls
            if call.callee == service.name and call.endpoint
        ]
        keys = [k for k in keys if k in called] or keys
    if isinstance(scope, list):
        return tuple(scope)
    return (keys[int(rng.integers(len(keys)))],)


def plan_scenario(
    items: list[ScenarioItem],
    topology: Topology,
    total_minutes: int,
    rng: np.random.Generator,
) -> Plan:
    """Choose roots and times for every scenario item; one slot per item, slots in order."""
    # a clean baseline before the first fault (30 minutes, less in short windows)
    lead = int(max(min(30, total_minutes * 0.25), total_minutes * 0.08))
    tail = int(max(min(5, total_minutes * 0.05), total_minutes * 0.03))
    slotted = [
        i
        for i in items
        if not (isinstance(i, FaultSpec) and not FAULT_KINDS[_kind(i)].in_production)
        and not (isinstance(i, FaultSpec) and i.concurrent)
    ]
    usable = total_minutes - lead - tail
    n_slots = len(slotted)
    dropped: list[str] = []
    if n_slots and usable / n_slots < 12:
        keep = max(0, usable // 12)
        dropped = [i.kind for i in slotted[keep:]]
        cut = set(map(id, slotted[keep:]))
        items = [i for i in items if id(i) not in cut]
        n_slots = keep
    slot = usable / n_slots if n_slots else usable
    faults: list[PlannedFault] = []
    decoys: list[PlannedDecoy] = []
    used_roots: list[str] = []
    slot_index = -1
    previous_window: tuple[int, int] | None = None
    for item in items:
        if isinstance(item, FaultSpec):
            kind = FAULT_KINDS[_kind(item)]
            if not kind.in_production:
                faults.append(_plan_ci_only(item, kind, topology, total_minutes, rng, len(faults) + 1))
                continue
            if item.concurrent and previous_window is not None:
                start, end = previous_window
                start = min(end - 5, start + int(rng.integers(0, max(1, (end - start) // 3))))
            else:
                slot_index += 1
                start, end = _slot_window(lead, slot, slot_index, item.duration_min or kind.duration_min, rng)
            previous_window = (start, end)
            fault = _plan_fault(item, kind, topology, start, end, rng, len(faults) + 1, used_roots)
            if fault is None:
                dropped.append(f"{kind.name} (no service in topology {topology.name!r} qualifies)")
                continue
            used_roots.append(fault.service)
            faults.append(fault)
            fault.blips = _blips(item.blips, fault, topology, rng)
            if item.harmless_deploy_before:
                decoys.append(_harmless_before(fault, topology, rng, len(decoys) + 1))
        else:
            slot_index += 1
            start, end = _slot_window(lead, slot, slot_index, item.duration_min or 30, rng)
            decoys.append(_plan_decoy(item, topology, start, end, rng, len(decoys) + 1))
    return Plan(faults=faults, decoys=decoys, dropped=dropped)


def _kind(item: FaultSpec) -> str:
    if item.kind not in FAULT_KINDS:
        raise ScenarioError(f"unknown fault kind {item.kind!r}: use one of {', '.join(FAULT_KINDS)}")
    return item.kind


def _slot_window(
    lead: int, slot: float, index: int, desired: int, rng: np.random.Generator
) -> tuple[int, int]:
    slot_start = lead + index * slot
    duration = int(max(6, min(desired, 0.62 * slot)))
    offset = rng.uniform(0.08, max(0.1, 0.95 - duration / slot - 0.05)) * slot
    start = int(slot_start + offset)
    return start, start + duration


def _choose_service(
    spec_service: str | None, role: str, topology: Topology, rng: np.random.Generator, avoid: list[str]
) -> Service | None:
    if spec_service and spec_service in topology.by_name:
        return topology.service(spec_service)
    pool = candidates(topology, role)
    fresh = [s for s in pool if s.name not in avoid] or pool
    if not fresh:
        return None
    return fresh[int(rng.integers(len(fresh)))]


def _plan_fault(
    spec: FaultSpec,
    kind: FaultKind,
    topology: Topology,
    start: int,
    end: int,
    rng: np.random.Generator,
    number: int,
    used: list[str],
) -> PlannedFault | None:
    service = _choose_service(spec.service, kind.target, topology, rng, used)
    if service is None:
        return None
    params = {**kind.effect, **spec.params}
    routes = _pick_routes(kind, service, topology, rng, params)
    fault_id = f"F{number:02d}"
    effect = Effect(
        type=params["type"],
        service=service.name,
        start_min=start,
        end_min=end,
        source=fault_id,
        routes=routes,
        params=params,
    )
    return PlannedFault(
        fault_id=fault_id,
        kind=kind,
        service=service.name,
        start_min=start,
        end_min=end,
        spec=spec,
        routes=routes,
        effect=effect,
    )


def _plan_ci_only(
    spec: FaultSpec, kind: FaultKind, topology: Topology, total: int, rng: np.random.Generator, number: int
) -> PlannedFault:
    service = _choose_service(spec.service, kind.target, topology, rng, [])
    if service is None:
        raise ScenarioError(f"topology {topology.name!r} has no instrumented service for {kind.name}")
    start = int(rng.uniform(0.1, 0.4) * total)
    return PlannedFault(
        fault_id=f"F{number:02d}",
        kind=kind,
        service=service.name,
        start_min=start,
        end_min=total,
        spec=spec,
        routes=(),
        effect=None,
    )


def _blips(count: int, fault: PlannedFault, topology: Topology, rng: np.random.Generator) -> list[Effect]:
    """Short latency blips on services unrelated to the fault, while it is under way."""
    related = {fault.service, *topology.callers_of(fault.service), *topology.callees_of(fault.service)}
    pool = [
        s.name
        for s in topology.workloads
        if s.emits_telemetry and s.name not in related and s.name != topology.entry
    ]
    blips = []
    for i in range(min(count, len(pool))):
        name = pool[int(rng.integers(len(pool)))]
        pool.remove(name)
        length = int(rng.integers(2, 7))
        span = max(1, fault.end_min - fault.start_min - length)
        start = fault.start_min + int(rng.integers(0, span))
        blips.append(
            Effect(
                type="latency",
                service=name,
                start_min=start,
                end_min=start + length,
                source=f"{fault.fault_id}-blip{i + 1}",
                params={"factor": float(rng.uniform(2.5, 5.0)), "decoy": True},
            )
        )
    return blips


def _harmless_before(
    fault: PlannedFault, topology: Topology, rng: np.random.Generator, number: int
) -> PlannedDecoy:
    pool = [s.name for s in topology.workloads if s.name != fault.service]
    name = pool[int(rng.integers(len(pool)))]
    minute = max(1, fault.start_min - int(rng.integers(4, 16)))
    return PlannedDecoy(
        decoy_id=f"D{number:02d}",
        kind="harmless_deploy",
        service=name,
        start_min=minute,
        end_min=minute,
        before_fault=fault.fault_id,
    )


def _plan_decoy(
    spec: DecoySpec, topology: Topology, start: int, end: int, rng: np.random.Generator, number: int
) -> PlannedDecoy:
    decoy_id = f"D{number:02d}"
    if spec.kind == "traffic_surge":
        factor = spec.factor or float(rng.uniform(2.0, 3.0))
        effect = Effect(
            type="traffic",
            service=topology.entry,
            start_min=start,
            end_min=end,
            source=decoy_id,
            params={"factor": factor, "decoy": True},
        )
        return PlannedDecoy(decoy_id, "traffic_surge", topology.entry, start, end, effect)
    if spec.kind == "latency_blip":
        chosen = _choose_service(spec.service, "called_service", topology, rng, [])
        if chosen is None:
            raise ScenarioError(f"topology {topology.name!r} has no service for a latency blip")
        name = chosen.name
        length = min(end - start, spec.duration_min or int(rng.integers(3, 8)))
        effect = Effect(
            type="latency",
            service=name,
            start_min=start,
            end_min=start + length,
            source=decoy_id,
            params={"factor": spec.factor or float(rng.uniform(2.5, 5.0)), "decoy": True},
        )
        return PlannedDecoy(decoy_id, "latency_blip", name, start, start + length, effect)
    if spec.kind in ("harmless_deploy", "harmless_config"):
        chosen = _choose_service(spec.service, "any_service", topology, rng, [])
        if chosen is None:
            raise ScenarioError(f"topology {topology.name!r} has no service for a harmless change")
        name = chosen.name
        return PlannedDecoy(decoy_id, spec.kind, name, start, start)
    raise ScenarioError(f"unknown decoy kind {spec.kind!r}: use one of {', '.join(DECOY_KINDS)}")
