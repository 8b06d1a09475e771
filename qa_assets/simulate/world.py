"""The running system minute by minute: pods, versions, memory, restarts, and the effects in force.

``World.step(minute)`` applies the changes that go live in that minute, advances memory and crash loops,
and returns a ``MinuteState``: plain per-service arrays and small dicts the traffic engine reads, plus the
lifecycle events (start-ups, OOM kills, config reloads ...) that the log writer turns into lines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from qa_assets.simulate.deployments import Change
from qa_assets.simulate.faults import Effect, Plan
from qa_assets.simulate.identifiers import LOWER_ALNUM, random_strings, uuids
from qa_assets.simulate.topology import Topology


@dataclass
class Instance:
    pod: str
    uid: str  # service.instance.id: a new one on every container restart
    started_ns: int
    version: str
    memory_mb: float
    restarts: int = 0
    leak_mb_per_min: float = 0.0
    leaked_mb: float = 0.0
    crash_looping: bool = False
    next_crash: int = 0
    backoff: int = 1
    available: float = 1.0  # share of this minute the container served requests
    age_min: int = 0


@dataclass
class LifecycleEvent:
    service: int
    instance: int
    kind: str  # startup | shutdown | config | gc | oom | crash | outage | recovered
    offset_s: float  # within the minute
    detail: dict[str, object] = field(default_factory=dict)


@dataclass
class MinuteState:
    minute: int
    traffic: float
    latency: np.ndarray  # per service: factor on own processing time
    unavailable: np.ndarray  # per service: share of calls refused or hanging
    hang_share: np.ndarray  # per service: of those, the share that hangs until the caller's timeout
    route_latency: dict[tuple[int, str], float]
    errors: dict[
        tuple[int, str | None], tuple[float, int, str]
    ]  # (service, route|None) -> rate, status, fault id
    contract: dict[int, tuple[float, tuple[str, ...], str]]  # callee -> rate, routes, fault id
    instances: list[list[Instance]]
    inst_available: list[np.ndarray]
    inst_latency: list[np.ndarray]
    versions: list[str]
    lifecycle: list[LifecycleEvent]
    config_revisions: list[str]
    retired: dict[int, list[Instance]] = field(default_factory=dict)  # pods replaced this minute

    def pod(self, service: int, instance: int) -> Instance | None:
        """A current pod by index, or (negative index -1, -2 ...) one retired this minute."""
        pods = self.instances[service] if instance >= 0 else self.retired.get(service, [])
        position = instance if instance >= 0 else -instance - 1
        return pods[position] if position < len(pods) else None


class World:
    def __init__(
        self,
        topology: Topology,
        plan: Plan,
        changes: list[Change],
        initial_versions: dict[str, str],
        start_ns: int,
        seed: int,
    ) -> None:
        self.topology = topology
        self.index = {s.name: i for i, s in enumerate(topology.services)}
        self.start_ns = start_ns
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, 4_242]))
        self.effects = plan.effects()
        self.changes_by_minute: dict[int, list[Change]] = {}
        for change in changes:
            if change.service in self.index:
                self.changes_by_minute.setdefault(change.minute, []).append(change)
        self.versions = [
            initial_versions.get(s.name, self._datastore_version(s.db_system)) for s in topology.services
        ]
        self.config_revisions = ["r1"] * len(topology.services)
        self.instances: list[list[Instance]] = [
            self._new_pods(
                i, self.versions[i], start_ns - int(self.rng.integers(2, 240)) * 3_600_000_000_000, warm=True
            )
            for i in range(len(topology.services))
        ]
        self.leaks: dict[int, float] = {}  # service -> MiB per minute while a leaking version runs
        self.retired: dict[int, list[Instance]] = {}

    # ------------------------------------------------------------------------------------ helpers

    @staticmethod
    def _datastore_version(system: str | None) -> str:
        return {
            "postgresql": "16.4",
            "mysql": "8.0.39",
            "mongodb": "7.0.14",
            "redis": "7.4.1",
            "memcached": "1.6.31",
            "kafka": "3.8.0",
            "rabbitmq": "3.13.7",
        }.get(system or "", "1.0.0")

    def _pod_names(self, service: int, count: int) -> list[str]:
        name = self.topology.services[service].name
        if self.topology.services[service].is_datastore:
            return [f"{name}-{i}" for i in range(count)]  # a StatefulSet
        replicaset = random_strings(self.rng, 1, 10, LOWER_ALNUM)[0]
        return [f"{name}-{replicaset}-{suffix}" for suffix in random_strings(self.rng, count, 5, LOWER_ALNUM)]

    def _new_pods(self, service: int, version: str, started_ns: int, warm: bool = False) -> list[Instance]:
        spec = self.topology.services[service]
        pods = []
        for pod in self._pod_names(service, spec.replicas):
            memory = spec.memory_base_mb * float(self.rng.uniform(0.9, 1.1 if warm else 0.95))
            pods.append(
                Instance(
                    pod=pod,
                    uid=uuids(self.rng, 1)[0],
                    started_ns=started_ns,
                    version=version,
                    memory_mb=memory,
                    age_min=999 if warm else 0,
                )
            )
        return pods

    # --------------------------------------------------------------------------------------- step

    def step(self, minute: int) -> MinuteState:
        n = len(self.topology.services)
        minute_ns = self.start_ns + minute * 60_000_000_000
        lifecycle: list[LifecycleEvent] = []
        self.retired = {}
        active = [e for e in self.effects if e.active(minute)]
        self._apply_changes(minute, minute_ns, lifecycle)
        self._apply_leak_effects(minute, active)
        latency = np.ones(n)
        unavailable = np.zeros(n)
        hang = np.zeros(n)
        route_latency: dict[tuple[int, str], float] = {}
        errors: dict[tuple[int, str | None], tuple[float, int, str]] = {}
        contract: dict[int, tuple[float, tuple[str, ...], str]] = {}
        traffic = 1.0
        crash_effects: dict[int, Effect] = {}
        for effect in active:
            s = self.index[effect.service]
            if effect.type == "latency":
                factor = float(effect.params.get("factor", 3.0))
                if effect.routes:
                    for route in effect.routes:
                        route_latency[(s, route)] = factor
                else:
                    latency[s] *= factor
            elif effect.type == "errors":
                value = (float(effect.params["rate"]), int(effect.params.get("status", 500)), effect.source)
                for route in effect.routes or (None,):
                    errors[(s, route)] = value
            elif effect.type == "unavailable":
                unavailable[s] = float(effect.params.get("fraction", 1.0))
                hang[s] = 1.0 if effect.params.get("mode") == "timeout" else 0.0
                # the datastore's own log (when it has one) complains every minute of the outage
                lifecycle.append(LifecycleEvent(s, 0, "outage", float(self.rng.uniform(0, 59))))
            elif effect.type == "contract":
                contract[s] = (float(effect.params.get("rate", 0.5)), effect.routes, effect.source)
            elif effect.type == "crash_loop":
                crash_effects[s] = effect
            elif effect.type == "traffic":
                ramp = min(1.0, (minute - effect.start_min + 1) / 4.0, (effect.end_min - minute) / 4.0)
                traffic *= 1.0 + (float(effect.params.get("factor", 2.0)) - 1.0) * max(0.0, ramp)
        self._recover_ended_outages(minute, lifecycle)
        self._advance_crash_loops(minute, minute_ns, crash_effects, hang, lifecycle)
        inst_available, inst_latency = self._advance_memory(minute, minute_ns, lifecycle)
        load = max(0.0, traffic - 1.0)
        for s, service in enumerate(self.topology.services):
            latency[s] *= 1.0 + (0.3 if service.is_datastore else 0.12) * load**1.3
        return MinuteState(
            minute=minute,
            traffic=traffic,
            latency=latency,
            unavailable=unavailable,
            hang_share=hang,
            route_latency=route_latency,
            errors=errors,
            contract=contract,
            instances=self.instances,
            inst_available=inst_available,
            inst_latency=inst_latency,
            versions=list(self.versions),
            lifecycle=lifecycle,
            config_revisions=list(self.config_revisions),
            retired=self.retired,
        )

    def _apply_changes(self, minute: int, minute_ns: int, lifecycle: list[LifecycleEvent]) -> None:
        for change in self.changes_by_minute.get(minute, []):
            s = self.index[change.service]
            if change.event_type == "removed":
                continue
            if change.change_kind == "config":
                self.config_revisions[s] = change.config_revision or self.config_revisions[s]
                for i in range(len(self.instances[s])):
                    lifecycle.append(
                        LifecycleEvent(
                            s, i, "config", float(self.rng.uniform(0, 5)), {"rev": self.config_revisions[s]}
                        )
                    )
                continue
            self.retired[s] = self.instances[s]
            for i in range(len(self.instances[s])):
                lifecycle.append(LifecycleEvent(s, -i - 1, "shutdown", float(self.rng.uniform(0, 3))))
            self.versions[s] = change.version or self.versions[s]
            started = minute_ns - int(self.rng.uniform(20, 90) * 1e9)
            self.instances[s] = self._new_pods(s, self.versions[s], started)
            self.leaks.pop(s, None)
            for i in range(len(self.instances[s])):
                lifecycle.append(LifecycleEvent(s, i, "startup", float(self.rng.uniform(3, 8))))

    def _apply_leak_effects(self, minute: int, active: list[Effect]) -> None:
        for effect in active:
            if effect.type != "memory_leak":
                continue
            s = self.index[effect.service]
            if s not in self.leaks:
                spec = self.topology.services[s]
                duration = max(10, effect.end_min - effect.start_min)
                ooms = float(effect.params.get("ooms_per_instance", 2.5))
                self.leaks[s] = (spec.memory_limit_mb - spec.memory_base_mb) * ooms / duration
                for pod in self.instances[s]:
                    pod.leak_mb_per_min = self.leaks[s] * float(self.rng.uniform(0.75, 1.25))

    def _recover_ended_outages(self, minute: int, lifecycle: list[LifecycleEvent]) -> None:
        for effect in self.effects:
            if effect.type == "unavailable" and effect.end_min == minute:
                s = self.index[effect.service]
                for pod in self.instances[s]:
                    pod.restarts += 1
                    pod.uid = uuids(self.rng, 1)[0]
                    pod.started_ns = self.start_ns + minute * 60_000_000_000
                    pod.available = 0.7
                lifecycle.append(
                    LifecycleEvent(
                        s, 0, "startup", float(self.rng.uniform(1, 10)), {"last_up": effect.start_min}
                    )
                )

    def _advance_crash_loops(
        self,
        minute: int,
        minute_ns: int,
        crash_effects: dict[int, Effect],
        hang: np.ndarray,
        lifecycle: list[LifecycleEvent],
    ) -> None:
        for s, pods in enumerate(self.instances):
            effect = crash_effects.get(s)
            if effect is None:
                for pod in pods:
                    pod.crash_looping = False
                continue
            affected = max(1, math.ceil(float(effect.params.get("fraction", 1.0)) * len(pods)))
            hang[s] = max(hang[s], float(effect.params.get("hang_share", 0.0)))
            for i, pod in enumerate(pods[:affected]):
                if not pod.crash_looping:
                    pod.crash_looping, pod.next_crash, pod.backoff = True, minute, 1
                if minute >= pod.next_crash:
                    pod.restarts += 1
                    pod.uid = uuids(self.rng, 1)[0]
                    pod.started_ns = minute_ns + int(self.rng.uniform(0, 30) * 1e9)
                    pod.backoff = min(5, pod.backoff * 2)
                    pod.next_crash = minute + pod.backoff
                    lifecycle.append(LifecycleEvent(s, i, "crash", float(self.rng.uniform(5, 40))))

    def _advance_memory(
        self, minute: int, minute_ns: int, lifecycle: list[LifecycleEvent]
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        available_all, latency_all = [], []
        for s, pods in enumerate(self.instances):
            spec = self.topology.services[s]
            available = np.ones(len(pods))
            latency = np.ones(len(pods))
            for i, pod in enumerate(pods):
                pod.age_min += 1
                if pod.crash_looping:
                    pod.available = float(self.rng.uniform(0.02, 0.15))
                else:
                    pod.available = min(1.0, pod.available + 0.5) if pod.available < 1.0 else 1.0
                # a runtime's memory wanders around its base; a leak accumulates on top
                wobble = 1.0 + 0.04 * math.sin(minute / 17.0 + i) + float(self.rng.normal(0, 0.01))
                pod.leaked_mb += pod.leak_mb_per_min * float(self.rng.uniform(0.8, 1.2))
                warmup = min(1.0, 0.6 + 0.1 * pod.age_min)
                pod.memory_mb = spec.memory_base_mb * wobble * warmup + pod.leaked_mb
                if pod.crash_looping:
                    pod.memory_mb = spec.memory_base_mb * float(self.rng.uniform(0.2, 0.5))
                ratio = pod.memory_mb / spec.memory_limit_mb
                if ratio >= 1.0:
                    self._oom_kill(s, i, pod, minute_ns, lifecycle)
                    ratio = pod.memory_mb / spec.memory_limit_mb
                elif ratio > 0.85 and self.rng.random() < 0.6:
                    lifecycle.append(
                        LifecycleEvent(
                            s,
                            i,
                            "gc",
                            float(self.rng.uniform(0, 59)),
                            {"pct": ratio * 100, "mb": pod.memory_mb},
                        )
                    )
                if ratio > 0.8:
                    latency[i] = 1.0 + 3.0 * ((ratio - 0.8) / 0.2) ** 2
                if pod.age_min <= 2 and spec.language == "java":
                    latency[i] *= 1.5 if pod.age_min == 1 else 1.15  # JIT warm-up after a start
                available[i] = pod.available
            # pods that are down push their share of the load onto the others
            overload = len(pods) / max(available.sum(), 0.05) - 1.0
            latency *= 1.0 + 0.35 * min(overload, 4.0)
            available_all.append(available)
            latency_all.append(latency)
        return available_all, latency_all

    def _oom_kill(
        self, s: int, i: int, pod: Instance, minute_ns: int, lifecycle: list[LifecycleEvent]
    ) -> None:
        spec = self.topology.services[s]
        at = float(self.rng.uniform(5, 50))
        lifecycle.append(LifecycleEvent(s, i, "oom", at, {"mb": pod.memory_mb}))
        lifecycle.append(LifecycleEvent(s, i, "startup", min(59.0, at + float(self.rng.uniform(8, 25)))))
        pod.restarts += 1
        pod.uid = uuids(self.rng, 1)[0]
        pod.started_ns = minute_ns + int(at * 1e9)
        pod.leaked_mb = 0.0
        pod.memory_mb = spec.memory_base_mb * 0.6
        pod.available = float(np.clip(at / 60.0 + 0.1, 0.2, 0.8))
        pod.age_min = 0
