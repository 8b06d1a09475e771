"""Requests, vectorised: each entry endpoint's call tree is unrolled once into a node table, then every
minute all requests of that endpoint are simulated together as (nodes x requests) numpy arrays.

Passes per minute and tree:
1. top-down: which calls happen, which pod serves them, which calls are refused or hang;
2. bottom-up: durations (own time + downstream calls, sequential or parallel), timeouts, errors and
   their propagation (a failed callee fails the caller's request unless the call degrades gracefully);
3. top-down: start times.
The outcome (``TreeMinute``) is what spans, logs and metrics are written from, so they always agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from qa_assets.simulate import errors as E
from qa_assets.simulate.topology import Call, Endpoint, Service, Topology
from qa_assets.simulate.world import MinuteState

SERVER, CLIENT, DATASTORE = 0, 1, 2
MAX_TREE_NODES = 600
LATENCY_SIGMA = 0.45
TAIL_SHARE = 0.002  # requests hit by a GC pause / slow plan, ~8x slower
BASELINE_ERROR_RANGE = (0.0004, 0.0025)
DB_ERROR_RATE = 0.0003


@dataclass
class TraceTree:
    """The call tree of one entry endpoint, one row per span a request may produce."""

    entry: Endpoint
    weight: float
    kind: np.ndarray  # SERVER | CLIENT | DATASTORE
    parent: np.ndarray
    service: np.ndarray  # the service that emits the span (the caller, for client spans)
    callee: np.ndarray  # client / datastore nodes: the called service; else -1
    server_child: np.ndarray  # client nodes: the callee's server node; else -1
    prob: np.ndarray
    propagate: np.ndarray
    timeout_ms: np.ndarray
    parallel: np.ndarray
    median_ms: np.ndarray
    emit: np.ndarray  # the emitting service is instrumented
    new_root: np.ndarray  # an instrumented server called by an uninstrumented caller: a new trace
    endpoints: list[Endpoint | None]  # server: served endpoint; client: the callee's endpoint
    calls: list[Call | None]
    children: list[list[int]]
    route_keys: list[str]  # server: own endpoint key; client: the callee endpoint key

    @property
    def size(self) -> int:
        return len(self.kind)


def build_trees(topology: Topology) -> list[TraceTree]:
    entry = topology.service(topology.entry)
    index = {s.name: i for i, s in enumerate(topology.services)}
    trees = []
    for endpoint in entry.endpoints:
        if endpoint.weight > 0:
            trees.append(_build_tree(topology, index, entry, endpoint))
    return trees


def call_tree(topology: Topology, service: Service, endpoint: Endpoint) -> TraceTree:
    """The call tree of one endpoint of any service, as a request entering there unrolls it (``build_trees``
    builds those of the entry service's endpoints)."""
    index = {s.name: i for i, s in enumerate(topology.services)}
    return _build_tree(topology, index, service, endpoint)


def _build_tree(topology: Topology, index: dict[str, int], entry: Service, endpoint: Endpoint) -> TraceTree:
    rows: list[dict] = []
    children: list[list[int]] = []

    def add(row: dict) -> int:
        if len(rows) >= MAX_TREE_NODES:
            raise ValueError(
                f"call tree of {entry.name} {endpoint.key} exceeds {MAX_TREE_NODES} spans; "
                "reduce fan-out in the topology"
            )
        rows.append(row)
        children.append([])
        if row["parent"] >= 0:
            children[row["parent"]].append(len(rows) - 1)
        return len(rows) - 1

    def add_server(service: Service, ep: Endpoint, parent: int, caller_emits: bool) -> None:
        node = add(
            {
                "kind": SERVER,
                "parent": parent,
                "service": index[service.name],
                "callee": -1,
                "prob": 1.0,
                "propagate": 1.0,
                "timeout": 0.0,
                "parallel": False,
                "median": ep.latency_ms,
                "emit": service.emits_telemetry,
                "new_root": service.emits_telemetry and not caller_emits,
                "endpoint": ep,
                "call": None,
                "route": ep.key,
            }
        )
        for call in ep.calls:
            callee = topology.service(call.callee)
            for _ in range(call.repeat):
                common = {
                    "parent": node,
                    "service": index[service.name],
                    "callee": index[callee.name],
                    "prob": call.probability,
                    "propagate": call.propagate,
                    "timeout": call.timeout_ms,
                    "parallel": call.parallel,
                    "emit": service.emits_telemetry,
                    "new_root": False,
                    "call": call,
                }
                if callee.is_datastore:
                    add(
                        {
                            **common,
                            "kind": DATASTORE,
                            "median": callee.latency_ms,
                            "endpoint": None,
                            "route": call.operation or "",
                        }
                    )
                else:
                    target = callee.endpoint(call.endpoint or "")
                    client = add(
                        {**common, "kind": CLIENT, "median": 0.35, "endpoint": target, "route": target.key}
                    )
                    rows[client]["server_child"] = len(rows)
                    add_server(callee, target, client, service.emits_telemetry)

    add_server(entry, endpoint, -1, True)
    rows[0]["new_root"] = False

    def column(key: str, dtype: type, default: object = 0) -> np.ndarray:
        return np.array([r.get(key, default) for r in rows], dtype=dtype)

    return TraceTree(
        entry=endpoint,
        weight=endpoint.weight,
        kind=column("kind", np.int8),
        parent=column("parent", np.int32),
        service=column("service", np.int16),
        callee=column("callee", np.int16),
        server_child=column("server_child", np.int32, -1),
        prob=column("prob", np.float64),
        propagate=column("propagate", np.float64),
        timeout_ms=column("timeout", np.float64),
        parallel=column("parallel", bool),
        median_ms=column("median", np.float64),
        emit=column("emit", bool),
        new_root=column("new_root", bool),
        endpoints=[r["endpoint"] for r in rows],
        calls=[r["call"] for r in rows],
        children=children,
        route_keys=[r["route"] for r in rows],
    )


@dataclass
class TreeMinute:
    """The outcome of every request of one tree in one minute (arrays are nodes x requests)."""

    tree: TraceTree
    n: int
    present: np.ndarray
    start_ms: np.ndarray  # from the start of the minute
    duration_ms: np.ndarray
    code: np.ndarray  # errors.* failure code, 0 = fine
    status: np.ndarray  # HTTP status (0 where no answer)
    instance: np.ndarray  # pod index within the emitting service
    cause: np.ndarray  # server nodes: the child node whose failure caused theirs; else -1
    fault: np.ndarray  # server nodes with code FAULT: index into ``fault_ids``
    fault_ids: list[str]


def node_parameters(tree: TraceTree, state: MinuteState, baseline_error: np.ndarray) -> dict[str, np.ndarray]:
    """Per-node rates and factors for this minute (loops over nodes only where an effect names a route)."""
    svc = tree.service.astype(np.int64)
    callee = np.where(tree.callee >= 0, tree.callee, 0).astype(np.int64)
    is_server = tree.kind == SERVER
    is_store = tree.kind == DATASTORE
    latency = np.where(is_store, state.latency[callee], state.latency[svc])
    for (s, route), factor in state.route_latency.items():
        hit = is_server & (tree.service == s) & np.array([k == route for k in tree.route_keys])
        latency = np.where(hit, latency * factor, latency)
    fault_rate = np.zeros(tree.size)
    fault_status = np.full(tree.size, 500, dtype=np.int16)
    fault_index = np.full(tree.size, -1, dtype=np.int16)
    fault_ids: list[str] = []
    for (s, route), (rate, status, fault_id) in state.errors.items():
        match = is_server & (tree.service == s)
        if route is not None:
            match &= np.array([k == route for k in tree.route_keys])
        if match.any():
            if fault_id not in fault_ids:
                fault_ids.append(fault_id)
            fault_rate = np.where(match, rate, fault_rate)
            fault_status = np.where(match, status, fault_status)
            fault_index = np.where(match, fault_ids.index(fault_id), fault_index)
    contract = np.zeros(tree.size)
    for s, (rate, routes, _fault_id) in state.contract.items():
        match = (tree.kind == CLIENT) & (tree.callee == s)
        if routes:
            match &= np.array([k in routes for k in tree.route_keys])
        contract = np.where(match, rate, contract)
    target = np.where(tree.kind == SERVER, svc, callee)
    return {
        "latency": latency,
        "baseline_error": np.where(is_server, baseline_error[svc], np.where(is_store, DB_ERROR_RATE, 0.0)),
        "fault_rate": fault_rate,
        "fault_status": fault_status,
        "fault_index": fault_index,
        "fault_ids": fault_ids,  # type: ignore[dict-item]
        "contract": contract,
        "unavailable": state.unavailable[target],
        "hang_share": state.hang_share[target],
    }


def pick_instances(pods: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The pod serving each request (``u``: uniform draws), as the load balancer picks: evenly while every
    pod is ready, else mostly avoiding pods that are not (``pods``: each pod's available share)."""
    if pods.min() >= 1.0:
        return np.minimum((u * len(pods)).astype(np.int16), len(pods) - 1)
    weights = np.cumsum(np.maximum(pods, 0.05))
    return np.minimum(np.searchsorted(weights / weights[-1], u), len(pods) - 1).astype(np.int16)


def simulate_tree(
    tree: TraceTree, n: int, state: MinuteState, params: dict, rng: np.random.Generator, proxies: np.ndarray
) -> TreeMinute:
    size = tree.size
    u = rng.random((7, size, n))
    u_presence, u_error, u_instance, u_avail, u_mode, u_tail, u_propagate = u
    z = rng.standard_normal((size, n))
    present = np.zeros((size, n), dtype=bool)
    instance = np.zeros((size, n), dtype=np.int16)
    refused = np.zeros((size, n), dtype=bool)
    hang = np.zeros((size, n), dtype=bool)

    for j in range(size):  # 1. what happens, where
        p = tree.parent[j]
        base = np.ones(n, dtype=bool) if p < 0 else present[p].copy()
        if tree.prob[j] < 1.0:
            base &= u_presence[j] < tree.prob[j]
        kind = tree.kind[j]
        if kind == SERVER:
            s = tree.service[j]
            pods = state.inst_available[s]
            pick = pick_instances(pods, u_instance[j])
            instance[j] = pick
            if p >= 0:
                ok_share = pods[pick] * (1.0 - params["unavailable"][j])
                fail = base & (u_avail[j] >= ok_share)
                hanging = fail & (u_mode[j] < params["hang_share"][j])
                refused[p] = fail & ~hanging
                hang[p] = hanging
                base &= ~fail
        else:
            instance[j] = instance[p]
            if kind == DATASTORE:
                fail = base & (u_avail[j] < params["unavailable"][j])
                hanging = fail & (u_mode[j] < params["hang_share"][j])
                refused[j] = fail & ~hanging
                hang[j] = hanging
        present[j] = base

    duration = np.zeros((size, n))
    own = np.zeros((size, n))
    offset = np.zeros((size, n))
    code = np.zeros((size, n), dtype=np.int8)
    status = np.zeros((size, n), dtype=np.int16)
    cause = np.full((size, n), -1, dtype=np.int16)
    fault = np.full((size, n), -1, dtype=np.int16)
    mu = np.log(tree.median_ms)

    for j in range(size - 1, -1, -1):  # 2. durations and failures, callees first
        kind = tree.kind[j]
        here = present[j]
        if kind == DATASTORE:
            d = np.exp(mu[j] + 0.6 * z[j]) * params["latency"][j]
            d = np.where(u_tail[j] < TAIL_SHARE, d * 8.0, d)
            d = np.where(refused[j], 0.8 + 2.0 * u_mode[j], d)
            timed = here & (hang[j] | (d > tree.timeout_ms[j]))
            d = np.where(timed, tree.timeout_ms[j] + 2.0 * u_mode[j], d)
            failed_query = here & ~refused[j] & ~timed & (u_error[j] < params["baseline_error"][j])
            code[j] = np.where(
                here & refused[j],
                E.REFUSED,
                np.where(timed, E.TIMEOUT, np.where(failed_query, E.DB_ERROR, 0)),
            )
            duration[j] = np.where(here, d, 0.0)
        elif kind == CLIENT:
            s_node = tree.server_child[j]
            net = 0.25 + 0.6 * np.exp(0.5 * z[j]) * 0.5
            d = np.where(refused[j], 0.6 + 3.0 * u_mode[j], duration[s_node] + net)
            timed = here & ~refused[j] & (hang[j] | (d > tree.timeout_ms[j]))
            d = np.where(timed, tree.timeout_ms[j] + 1.5 * u_mode[j], d)
            answered = here & ~refused[j] & ~timed
            status[j] = np.where(answered, status[s_node], 0)
            code[j] = np.where(
                here & refused[j],
                E.REFUSED,
                np.where(timed, E.TIMEOUT, np.where(answered & (status[s_node] >= 400), E.HTTP_ERROR, 0)),
            )
            duration[j] = np.where(here, d, 0.0)
        else:
            s = tree.service[j]
            d_own = np.exp(mu[j] + LATENCY_SIGMA * z[j]) * params["latency"][j]
            d_own *= state.inst_latency[s][instance[j]]
            d_own = np.where(u_tail[j] < TAIL_SHARE, d_own * 8.0, d_own)
            own[j] = d_own
            group_start = np.zeros(n)
            group_end = np.zeros(n)
            failed_child = np.zeros(n, dtype=bool)
            first_cause = np.full(n, -1, dtype=np.int16)
            contract_hit = np.zeros(n, dtype=bool)
            for c in tree.children[j]:
                took = np.where(present[c], duration[c] + 0.05 + 0.2 * u_tail[c], 0.0)
                if not tree.parallel[c]:
                    group_start = group_end
                offset[c] = group_start
                group_end = np.maximum(group_end, group_start + took)
                child_failed = present[c] & (code[c] != 0) & (u_propagate[c] < tree.propagate[c])
                if params["contract"][c] > 0:
                    hit = present[c] & (code[c] == 0) & (u_error[c] < params["contract"][c])
                    new = hit & (first_cause < 0)
                    first_cause = np.where(new, c, first_cause)
                    contract_hit |= hit
                new = child_failed & (first_cause < 0)
                first_cause = np.where(new, c, first_cause)
                failed_child |= child_failed
            duration[j] = np.where(here, d_own + group_end, 0.0)
            own_fault = here & (u_error[j] < params["fault_rate"][j])
            own_bug = here & ~own_fault & (u_error[j] < params["fault_rate"][j] + params["baseline_error"][j])
            cause_node = np.maximum(first_cause, 0)
            cause_is_store = tree.kind[cause_node] == DATASTORE
            upstream = np.where(cause_is_store, E.UPSTREAM_DB, E.UPSTREAM_HTTP)
            code[j] = np.where(
                own_fault,
                E.FAULT,
                np.where(
                    own_bug,
                    E.BASELINE,
                    np.where(here & contract_hit, E.CONTRACT, np.where(here & failed_child, upstream, 0)),
                ),
            )
            fault[j] = np.where(own_fault, params["fault_index"][j], -1)
            cause[j] = np.where(
                (code[j] == E.CONTRACT) | (code[j] == E.UPSTREAM_DB) | (code[j] == E.UPSTREAM_HTTP),
                first_cause,
                -1,
            )
            status[j] = _server_status(j, tree, code, status, cause, params, here, proxies[tree.service[j]])

    start = np.zeros((size, n))  # 3. start times
    start[0] = np.sort(rng.random(n)) * 60_000.0
    for j in range(1, size):
        p = tree.parent[j]
        if tree.kind[j] == SERVER:
            start[j] = start[p] + 0.12
        else:
            start[j] = start[p] + 0.35 * own[p] + offset[j]
    return TreeMinute(
        tree=tree,
        n=n,
        present=present,
        start_ms=start,
        duration_ms=duration,
        code=code,
        status=status,
        instance=instance,
        cause=cause,
        fault=fault,
        fault_ids=params["fault_ids"],
    )


def _server_status(
    j: int,
    tree: TraceTree,
    code: np.ndarray,
    status: np.ndarray,
    cause: np.ndarray,
    params: dict,
    here: np.ndarray,
    proxy: bool,
) -> np.ndarray:
    result = np.where(here, 200, 0).astype(np.int16)
    c = code[j]
    result = np.where(c == E.FAULT, params["fault_status"][j], result)
    result = np.where((c == E.BASELINE) | (c == E.CONTRACT) | (c == E.UPSTREAM_DB), 500, result)
    upstream = c == E.UPSTREAM_HTTP
    if upstream.any():
        child = np.maximum(cause[j], 0)
        child_code = code[child, np.arange(code.shape[1])]
        child_status = status[child, np.arange(code.shape[1])]
        if proxy:  # a gateway passes the upstream answer through, or says why there was none
            passed = np.select([child_code == E.TIMEOUT, child_code == E.REFUSED], [504, 502], child_status)
        else:
            passed = np.where(child_code == E.TIMEOUT, 504, np.where(child_code == E.REFUSED, 503, 500))
            passed = np.where(child_status == 503, 503, passed)
        result = np.where(upstream, passed, result)
    return result.astype(np.int16)


def baseline_error_rates(topology: Topology, seed: int) -> np.ndarray:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 5_151]))
    low, high = BASELINE_ERROR_RANGE
    return np.array(
        [
            0.0 if s.is_datastore else math.exp(rng.uniform(math.log(low), math.log(high)))
            for s in topology.services
        ]
    )
