"""Changes to production and their CDEvents.

``schedule_changes`` lays out every change of the window: routine code deploys and config changes on every
service (most of them), the changes that trigger and end the planned faults, and the decoy deploys. Each
becomes a CDEvents v0.4 event (``cdevent``):

- code release: ``dev.cdevents.service.deployed.0.2.0`` (or ``.upgraded.0.2.0``), artifactId
  ``pkg:oci/<service>@sha256%3A<digest>?repository_url=<registry>/<service>&tag=<version>``
- rollback: ``dev.cdevents.service.rolledback.0.2.0`` with the artifact of the version rolled back to
- config change: ``dev.cdevents.service.deployed.0.2.0`` whose artifactId is a config bundle
  ``pkg:generic/<service>-config@<git sha>?vcs_url=...`` and whose ``customData.changeKind`` is ``"config"``
- decommission: ``dev.cdevents.service.removed.0.2.0``
``subject.id`` is ``<namespace>/<service>`` for every event; ``customData`` carries changeKind, version,
previousVersion, commit, author, message, changedFiles (and configKeys for config changes).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qa_assets.simulate.faults import Plan, PlannedFault
from qa_assets.simulate.identifiers import FIRST_NAMES, LAST_NAMES, hex_ids, uuids
from qa_assets.simulate.topology import Service, Topology

CDEVENTS_SPEC_VERSION = "0.4.1"
EVENT_TYPES = {
    "deployed": "dev.cdevents.service.deployed.0.2.0",
    "upgraded": "dev.cdevents.service.upgraded.0.2.0",
    "rolledback": "dev.cdevents.service.rolledback.0.2.0",
    "removed": "dev.cdevents.service.removed.0.2.0",
}
ROUTINE_DEPLOYS_PER_DAY = 1.6
ROUTINE_CONFIGS_PER_DAY = 0.6


@dataclass
class Change:
    """One change to production, in simulation minutes (``minute``: first minute it is live)."""

    event_id: str
    event_type: str  # deployed | upgraded | rolledback | removed
    change_kind: str  # code | config
    service: str
    minute: int
    offset_s: float  # seconds before ``minute`` at which the event is emitted
    role: str  # routine | trigger | resolution | decoy | flaky_intro | decommission
    fault_id: str | None = None
    version: str | None = None
    previous_version: str | None = None
    digest: str = ""
    commit: str = ""
    author: str = ""
    message: str = ""
    changed_files: list[str] = field(default_factory=list)
    config_keys: list[str] = field(default_factory=list)
    config_revision: str | None = None
    decoy_id: str | None = None

    def timestamp_ns(self, start_ns: int) -> int:
        return start_ns + self.minute * 60_000_000_000 - int(self.offset_s * 1e9)


# ------------------------------------------------------------------------------------------ texts

CHANGE_TEXT: dict[str, dict[str, Any]] = {
    "bad_deploy": {
        "message": "refactor({svc}): simplify line item aggregation",
        "files": ["service", "model"],
    },
    "memory_leak": {"message": "perf({svc}): cache {noun} lookups in memory", "files": ["cache", "service"]},
    "contract_break": {
        "message": "feat({svc}): return money as structured object in API v1",
        "files": ["api", "schema"],
    },
    "crash_loop": {
        "message": "chore({svc}): load partner endpoints from environment",
        "files": ["config_loader", "main"],
    },
    "validation_regression": {
        "message": "feat({svc}): stricter input validation for addresses",
        "files": ["validation", "api"],
    },
    "flaky_test": {"message": "test({svc}): cover concurrent updates", "files": ["test"]},
    "latency_regression": {
        "keys": ["cache.enabled", "cache.ttlSeconds"],
        "message": "disable {noun} cache for " "consistency investigation",
    },
    "config_error": {"keys": ["upstream.url", "currency.default"], "message": "point {noun} at new upstream"},
}
ROUTINE_MESSAGES = (
    "fix({svc}): handle empty {noun} list",
    "chore(deps): bump opentelemetry to latest",
    "feat({svc}): add {noun} " "filter by status",
    "refactor({svc}): extract {noun} mapper",
    "fix({svc}): log request id on failures",
    "chore({svc}): tune connection pool",
    "feat({svc}): expose {noun} count metric",
    "docs({svc}): api examples",
    "fix({svc}): retry idempotent {noun} reads",
    "chore(ci): cache build layers",
    "fix({svc}): typo in error " "message",
    "feat({svc}): paginate {noun} listing",
)
ROUTINE_CONFIG_KEYS = (
    "log.level",
    "pool.maxSize",
    "http.client.timeoutMs",
    "feature.newCheckoutBanner",
    "rateLimit.perSecond",
    "replicas",
    "resources.limits.cpu",
    "featureFlags.darkMode",
)


def source_file(service: Service, stem: str) -> str:
    lang = service.language
    if lang == "java":
        return f"src/main/java/{service.package.replace('.', '/')}/{stem.capitalize()}.java"
    if lang == "go":
        return f"internal/{service.noun}/{stem}.go"
    if lang == "python":
        return f"{service.package}/{stem}.py"
    if lang == "node":
        return f"src/{stem}.js"
    return f"conf/{stem}.conf"


def test_file(service: Service) -> str:
    return {
        "java": f"src/test/java/{service.package.replace('.', '/')}/"
        f"{service.noun.capitalize()}ServiceTest.java",
        "go": f"internal/{service.noun}/{service.noun}_test.go",
        "python": f"tests/test_{service.noun}.py",
        "node": f"test/{service.noun}.test.js",
    }.get(service.language or "", "tests/smoke.sh")


def developers(rng: np.random.Generator, count: int = 18) -> list[str]:
    people = []
    for i in range(count):
        first = FIRST_NAMES[int(rng.integers(len(FIRST_NAMES)))]
        last = LAST_NAMES[int(rng.integers(len(LAST_NAMES)))]
        domain = "acme-corp.com" if i % 4 else "users.noreply.github.com"
        people.append(f"{first.capitalize()} {last.capitalize()} <{first}.{last}@{domain}>")
    return people


# -------------------------------------------------------------------------------------- scheduling


def _initial_version(rng: np.random.Generator) -> str:
    return f"{int(rng.integers(1, 4))}.{int(rng.integers(0, 30))}.{int(rng.integers(0, 12))}"


def bump(version: str, part: str) -> str:
    major, minor, patch = (int(x) for x in version.split("."))
    if part == "minor":
        return f"{major}.{minor + 1}.0"
    return f"{major}.{minor}.{patch + 1}"


def _work_hour_minutes(rng: np.random.Generator, count: int, total: int, start: dt.datetime) -> list[int]:
    """Minutes weighted towards working hours (07-19 UTC on weekdays)."""
    if count <= 0 or total <= 2:
        return []
    minutes = np.arange(1, total - 1)
    hours = ((start.hour * 60 + start.minute + minutes) // 60) % 24
    days = (start.weekday() + (start.hour * 60 + start.minute + minutes) // 1440) % 7
    weight = np.where((hours >= 7) & (hours < 19), 5.0, 0.6) * np.where(days >= 5, 0.3, 1.0)
    picked = rng.choice(minutes, size=count, replace=True, p=weight / weight.sum())
    return sorted(int(m) for m in picked)


def schedule_changes(
    topology: Topology,
    plan: Plan,
    total_minutes: int,
    start: dt.datetime,
    rng: np.random.Generator,
) -> tuple[list[Change], dict[str, str]]:
    """Every change in the window, in time order, with versions assigned; and each service's version at
    the start of the window."""
    deployable = [s for s in topology.workloads]
    initial = {s.name: _initial_version(rng) for s in deployable}
    blocked: dict[str, list[tuple[int, int]]] = {}
    for fault in plan.faults:
        if fault.kind.in_production:
            blocked.setdefault(fault.service, []).append((fault.start_min - 25, fault.end_min + 15))
    days = total_minutes / 1440.0
    changes: list[Change] = []
    # routine changes vastly outnumber harmful ones, also in short windows where faults are packed densely
    harmful = sum(1 for f in plan.faults if f.kind.trigger)
    scale = max(1.0, 5.0 * harmful / max(1e-9, ROUTINE_DEPLOYS_PER_DAY * days * len(deployable)))

    def free(service: str, minute: int) -> bool:
        return all(not (a <= minute <= b) for a, b in blocked.get(service, []))

    for service in deployable:
        for kind, rate in (("code", ROUTINE_DEPLOYS_PER_DAY), ("config", ROUTINE_CONFIGS_PER_DAY)):
            count = int(rng.poisson(rate * scale * days * (0.6 if not service.instrumented else 1.0)))
            for minute in _work_hour_minutes(rng, count, total_minutes, start):
                if free(service.name, minute):
                    changes.append(_new_change(rng, kind, service.name, minute, "routine"))
    for fault in plan.faults:
        changes.extend(_fault_changes(rng, fault, total_minutes))
    for decoy in plan.decoys:
        if decoy.kind in ("harmless_deploy", "harmless_config"):
            kind = "config" if decoy.kind == "harmless_config" else "code"
            change = _new_change(rng, kind, decoy.service or topology.entry, decoy.start_min, "decoy")
            change.decoy_id = decoy.decoy_id
            decoy.change_id = change.event_id
            changes.append(change)
    for name in topology.deprecated_components:
        minute = int(rng.integers(1, max(2, total_minutes // 3)))
        changes.append(
            Change(
                event_id=uuids(rng, 1)[0],
                event_type="removed",
                change_kind="code",
                service=name,
                minute=minute,
                offset_s=float(rng.uniform(5, 50)),
                role="decommission",
            )
        )
    changes.sort(key=lambda c: (c.minute, -c.offset_s, c.service))
    _assign_versions(changes, initial, topology, rng, {f.fault_id: f.kind.name for f in plan.faults})
    _link_faults(changes, plan)
    return changes, initial


def _new_change(
    rng: np.random.Generator,
    kind: str,
    service: str,
    minute: int,
    role: str,
    fault: PlannedFault | None = None,
) -> Change:
    event_type = "deployed" if kind == "config" or rng.random() < 0.7 else "upgraded"
    return Change(
        event_id=uuids(rng, 1)[0],
        event_type=event_type,
        change_kind=kind,
        service=service,
        minute=minute,
        offset_s=float(rng.uniform(15, 95)),
        role=role,
        fault_id=fault.fault_id if fault else None,
        digest=hex_ids(rng, 1, 32)[0],
        commit=hex_ids(rng, 1, 20)[0],
    )


def _fault_changes(rng: np.random.Generator, fault: PlannedFault, total: int) -> list[Change]:
    kind = fault.kind
    found: list[Change] = []
    if kind.trigger:
        role = "flaky_intro" if not kind.in_production else "trigger"
        found.append(_new_change(rng, kind.trigger, fault.service, fault.start_min, role, fault))
    if kind.resolution and fault.end_min < total:
        change = _new_change(
            rng,
            "config" if kind.resolution == "revert" else "code",
            fault.service,
            fault.end_min,
            "resolution",
            fault,
        )
        if kind.resolution == "rollback":
            change.event_type = "rolledback"
        found.append(change)
    return found


def _assign_versions(
    changes: list[Change],
    initial: dict[str, str],
    topology: Topology,
    rng: np.random.Generator,
    fault_kinds: dict[str, str],
) -> None:
    current = dict(initial)
    highest = dict(initial)
    before_trigger: dict[str, str] = {}
    people = developers(np.random.default_rng(rng.integers(1 << 32)))
    config_revision = {name: int(rng.integers(40, 400)) for name in initial}
    for change in changes:
        if change.service not in current:  # decommissioned component
            continue
        service = topology.service(change.service)
        change.previous_version = current[change.service]
        change.author = people[int(rng.integers(len(people)))]
        noun = service.noun
        if change.change_kind == "config":
            config_revision[change.service] += 1
            change.version = current[change.service]
            change.config_revision = f"r{config_revision[change.service]}"
            text = CHANGE_TEXT.get(fault_kinds.get(change.fault_id or "", ""), {})
            keys = text.get("keys") or [ROUTINE_CONFIG_KEYS[int(rng.integers(len(ROUTINE_CONFIG_KEYS)))]]
            change.config_keys = list(keys)
            if change.role == "resolution":
                change.message = (
                    f"revert: {text.get('message', 'config change').format(svc=service.name, noun=noun)}"
                )
            else:
                change.message = text.get("message", "tune {key}").format(
                    svc=service.name, noun=noun, key=keys[0]
                )
            change.changed_files = [f"deploy/{topology.namespace}/{service.name}/values-production.yaml"]
            continue
        if change.event_type == "rolledback":
            change.version = before_trigger.get(change.service, change.previous_version)
            change.message = f"rollback {service.name} to {change.version}"
            change.changed_files = []
        else:
            part = "minor" if change.role in ("trigger",) or rng.random() < 0.25 else "patch"
            change.version = bump(highest[change.service], part)
            highest[change.service] = change.version
            if change.role == "trigger":
                before_trigger[change.service] = current[change.service]
            kind = fault_kinds.get(change.fault_id or "")
            text = CHANGE_TEXT.get(kind or "", {}) if change.role in ("trigger", "flaky_intro") else {}
            if text:
                change.message = text["message"].format(svc=service.name, noun=noun)
                stems = text["files"]
            elif change.role == "resolution":
                change.message = f"fix({service.name}): bound {noun} cache and release entries on eviction"
                stems = ["cache"]
            else:
                change.message = ROUTINE_MESSAGES[int(rng.integers(len(ROUTINE_MESSAGES)))].format(
                    svc=service.name, noun=noun
                )
                stems = [["service", "api", "repository", "client", "handler"][int(rng.integers(5))]]
            change.changed_files = [
                test_file(service) if s == "test" else source_file(service, s) for s in stems
            ]
            if "test" not in stems and rng.random() < 0.6:
                change.changed_files.append(test_file(service))
        current[change.service] = change.version


def _link_faults(changes: list[Change], plan: Plan) -> None:
    for fault in plan.faults:
        for change in changes:
            if change.fault_id != fault.fault_id:
                continue
            if change.role in ("trigger", "flaky_intro"):
                fault.change_id = change.event_id
                fault.new_version = change.version
                fault.previous_version = change.previous_version
            elif change.role == "resolution":
                fault.resolution_change_id = change.event_id


# ---------------------------------------------------------------------------------------- CDEvents


def iso(ns: int) -> str:
    moment = dt.datetime.fromtimestamp(ns // 1_000_000_000, tz=dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{(ns // 1_000_000) % 1000:03d}Z"


def artifact_id(topology: Topology, change: Change) -> str:
    registry = f"ghcr.io/{topology.system}"
    if change.change_kind == "config":
        return (
            f"pkg:generic/{change.service}-config@{change.commit[:12]}"
            f"?vcs_url=git%2Bhttps://github.com/{topology.system}/deploy-config.git"
        )
    return (
        f"pkg:oci/{change.service}@sha256%3A{change.digest}?repository_url={registry}/{change.service}"
        f"&tag={change.version}"
    )


def cdevent(topology: Topology, change: Change, start_ns: int) -> dict[str, Any]:
    """The CDEvents v0.4 JSON document for one change."""
    source = (
        f"/argocd/{topology.namespace}" if change.change_kind == "code" else f"/flux/{topology.namespace}"
    )
    content: dict[str, Any] = {
        "environment": {"id": topology.environment, "source": f"/k8s/{topology.namespace}"}
    }
    if change.event_type != "removed":
        content["artifactId"] = artifact_id(topology, change)
    event: dict[str, Any] = {
        "context": {
            "version": CDEVENTS_SPEC_VERSION,
            "id": change.event_id,
            "source": source,
            "type": EVENT_TYPES[change.event_type],
            "timestamp": iso(change.timestamp_ns(start_ns)),
        },
        "subject": {
            "id": f"{topology.namespace}/{change.service}",
            "source": source,
            "type": "service",
            "content": content,
        },
    }
    if change.event_type != "removed":
        custom: dict[str, Any] = {
            "changeKind": change.change_kind,
            "version": change.version,
            "previousVersion": change.previous_version,
            "commit": change.commit,
            "author": change.author,
            "message": change.message,
            "changedFiles": change.changed_files,
        }
        if change.change_kind == "config":
            custom["configKeys"] = change.config_keys
            custom["configRevision"] = change.config_revision
        event["customData"] = custom
        event["customDataContentType"] = "application/json"
    return event
