"""What a request outcome looks like to the code that reports it: the exception behind a failure code,
and the concrete values (user ids, product ids, client addresses) that fill routes and log lines.
Spans and logs both ask here, so a failure reads the same in both."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qa_assets.simulate import errors as E
from qa_assets.simulate.faults import Plan
from qa_assets.simulate.identifiers import PRODUCTS, USER_AGENTS, hex_ids, ipv4_public, ipv6s
from qa_assets.simulate.topology import Topology
from qa_assets.simulate.traffic import CLIENT, DATASTORE, SERVER, TraceTree


class ExceptionResolver:
    def __init__(self, topology: Topology, plan: Plan) -> None:
        self.topology = topology
        self.services = topology.services
        self.family = {
            f.fault_id: str(f.effect.params.get("error", "regression"))
            for f in plan.faults
            if f.effect is not None
        }
        self._cache: dict[tuple, E.RenderedException | None] = {}
        self.callee_ip = {
            s.name: f"10.42.{(i * 37) % 250}.{(i * 11) % 250 + 2}" for i, s in enumerate(topology.services)
        }

    def for_node(
        self,
        tree: TraceTree,
        j: int,
        code: int,
        cause: int = -1,
        fault_id: str = "",
        child_code: int = 0,
        child_status: int = 0,
        variant: int = 0,
    ) -> E.RenderedException | None:
        key = (
            id(tree),
            j,
            code,
            cause,
            fault_id,
            child_code,
            child_status,
            variant if code == E.BASELINE else 0,
        )
        if key not in self._cache:
            self._cache[key] = self._resolve(
                tree, j, code, cause, fault_id, child_code, child_status, variant
            )
        return self._cache[key]

    def _resolve(
        self,
        tree: TraceTree,
        j: int,
        code: int,
        cause: int,
        fault_id: str,
        child_code: int,
        child_status: int,
        variant: int,
    ) -> E.RenderedException | None:
        service = self.services[int(tree.service[j])]
        kind = tree.kind[j]
        if kind == SERVER:
            endpoint = tree.endpoints[j]
            if code == E.FAULT:
                return E.fault_exception(service, endpoint, self.family.get(fault_id, "regression"), fault_id)
            if code == E.BASELINE:
                return E.baseline_exception(service, endpoint, variant)
            if code == E.CONTRACT and cause >= 0:
                callee = self.services[int(tree.callee[cause])]
                return E.contract_exception(service, endpoint, callee, tree.endpoints[cause])
            if code in (E.UPSTREAM_HTTP, E.UPSTREAM_DB) and cause >= 0:
                return self._client_side(tree, cause, child_code, child_status)
            return None
        if code in (E.TIMEOUT, E.REFUSED, E.DB_ERROR) or (kind == DATASTORE and code):
            return self._client_side(tree, j, code, child_status)
        return None

    def _client_side(self, tree: TraceTree, j: int, code: int, status: int) -> E.RenderedException:
        caller = self.services[int(tree.service[j])]
        callee = self.services[int(tree.callee[j])]
        parent = int(tree.parent[j])
        call = tree.calls[j]
        return E.upstream_exception(
            caller,
            tree.endpoints[parent],
            callee,
            tree.route_keys[j] if tree.kind[j] == CLIENT else None,
            code,
            int(status),
            float(tree.timeout_ms[j]),
            call.statement if call else None,
            call.table if call else None,
            self.callee_ip[callee.name],
        )


@dataclass
class RequestValues:
    """Per-request values shared by every span and log line of one request."""

    user_id: list[str]
    product: list[str]
    object_id: list[str]
    client_ip: list[str]
    user_agent: list[str]


def request_values(rng: np.random.Generator, n: int) -> RequestValues:
    users = [str(v) for v in rng.integers(10_000, 2_500_000, n)]
    products = [PRODUCTS[i] for i in rng.integers(0, len(PRODUCTS), n)]
    ids = hex_ids(rng, n, 6)
    v6 = rng.random(n) < 0.15
    v4_addresses = ipv4_public(rng, n)
    v6_addresses = ipv6s(rng, int(v6.sum()))
    it = iter(v6_addresses)
    ips = [next(it) if flag else a for flag, a in zip(v6, v4_addresses)]
    agents = [USER_AGENTS[i] for i in rng.integers(0, len(USER_AGENTS), n)]
    return RequestValues(users, products, ids, ips, agents)


def route_filler(route: str) -> tuple[str, tuple[str, ...]]:
    """``/product/{id}`` -> (``/product/%s``, (``product``,)): which request value fills each parameter."""
    parts: list[str] = []
    fmt = ""
    for piece in route.replace("%", "%%").split("{"):
        if "}" in piece:
            name, rest = piece.split("}", 1)
            if name == "user_id":
                parts.append("user_id")
            elif "product" in route and name == "id":
                parts.append("product")
            else:
                parts.append("object_id")
            fmt += "%s" + rest
        else:
            fmt += piece
    return fmt, tuple(parts)


def fill_paths(route: str, values: RequestValues, rows: np.ndarray) -> list[str]:
    fmt, parts = route_filler(route)
    if not parts:
        return [route] * len(rows)
    columns = [getattr(values, p) for p in parts]
    if len(parts) == 1:
        col = columns[0]
        return [fmt % col[r] for r in rows]
    return [fmt % tuple(c[r] for c in columns) for r in rows]
