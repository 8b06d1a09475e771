"""Root-cause ranking: for every defect, ranked candidate causes (service, kind of cause, the change that
probably triggered it) with a score, a calibrated confidence, evidence a person can check, and a short
markdown explanation.

One defect at a time, around its onset (from ``PRE_ONSET_MIN`` before it to ``ANALYSIS_SPAN_MIN`` after:
an incident, or a long defect, can span several faults; defects of one incident that start together
share the analysis), in five steps:

1. **Symptoms.** The anomalous windows (``defects.anomalies``), grouped per service into kinds of
   signal: own failures (errors, new error templates, failing tests), latency, resources (memory, CPU,
   restarts), outgoing calls that fail, and traffic. A signal's strength is its score on the scale of
   its detector and signal (a typical anomaly = 0.5), lower when it lasted one window or was often
   anomalous before (chronic). The service windows add what a detector may not score: failing outgoing
   calls, a traffic rise and memory growth or restarts, each against the service's own baseline over
   ``lookback``. The defects themselves count as (weak) symptoms of their services.
2. **Implication.** For each anomalous service, which neighbour explains its anomaly:
   a dependency whose own anomaly started no later and had not ended before the service's began (the
   healthy-dependency rule: callers of a failing dependency are symptoms, a service whose dependencies are
   healthy is a root), for the part of the service's symptom a dependency can cause (errors, latency,
   failing calls, each by its own onset: slowness that set in before the dependency failed is not its
   doing, though the errors that began with the dependency's are; restarts and memory or CPU filling up are
   the service's own, and errors reading a response, ``_READ_FAILURE``, come from what a dependency sent,
   not from its being slow or down) and as far as its anomaly covers the service's failure (a one-minute
   blip, or one that ended as the service's began, does not explain a quarter-hour failure); where every
   dependency looks healthy, a failing one behind it, halved (a proxy passes failures on); a dependency
   that its new error messages name (a failed call or a URL host fully, a request path by half, an
   uncorroborated name (neither failing nor changed after the service's own change) by the share of error
   lines that carry it, only for the service's errors); a dependency without telemetry of its own (a blind
   spot, known from callers' client spans or the catalog's ``dependsOn``) while the service's outgoing
   calls fail; a dependency changed shortly before the service's onset (or, halved, a healthy dependency of
   such a healthy dependency: a contract change may pass through a proxy), where no dependency is anomalous
   or most of the service's new errors say it could not read a response, unless the service restarts or
   fills up; an upstream service whose traffic surged (load is not a code defect). Where the traces show
   which dependencies the service's extra failed requests called (``graph.request_calls``), a dependency
   fewer than ``PATH_MIN_SHARE`` of them called does not explain its errors, and a change on a dependency
   implicates it only as far as they called it. A service's onset is that of its first anomaly lasting
   more than one window.
3. **Random walk.** A personalized PageRank over that implication graph (MicroRCA-style): the walk
   starts at symptoms, moves to the neighbours that explain them and stays where nothing explains the
   anomaly further. Symptoms weigh by how much of the analysed failure they last. It is one feature, not
   the verdict.
4. **Score.** A weighted sum of generic features in [0, 1] (``WEIGHTS`` says why each weight).
5. **Cause kind and change** from the evidence; confidence from a calibrator (``calibrate``). A change
   that landed after a service's main new error was already being logged did not cause those errors
   (where errors, lasting more than a window, are its main symptom): it is listed as considered
   (``after_errors_began``), neither blamed nor weighed against a dependency's change. A change still in
   place when the defect's symptom was over (quiet for ``RECOVERY_WINDOWS`` windows, the service not
   changed again) did not cause it either (``in_place_after_recovery``): a change's effect lasts until it
   is rolled back or replaced.

A defect of a failing CI test is the exception: the test names its cause, the build it tested. Its first
candidate is its own service with the deployment of the failing version (``_tested_build``); the
incident's other candidates follow as context, whatever their scores.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import networkx as nx
import numpy as np
import orjson
import polars as pl

from qa_assets.lib.frames import require_frame
from qa_assets.lib.graph import DEPENDENCY_EDGE_TYPES, SERVICE_NODE_TYPES
from qa_assets.lib.summary import escape_markdown as _escape_markdown

TS = pl.Datetime("us")

ROOT_CAUSES: dict[str, pl.DataType] = {
    "defect_id": pl.String,
    "incident_id": pl.String,
    "rank": pl.Int32,  # 1 = most likely
    "service": pl.String,
    "cause_kind": pl.String,  # one of CAUSE_KINDS
    "change_id": pl.String,  # CDEvents event id of the blamed change, else null
    "score": pl.Float64,
    "confidence": pl.Float64,  # 0-1, calibrated
    "evidence": pl.String,  # JSON
    "explanation": pl.String,  # markdown
}

CAUSE_KINDS = (
    "code_change",
    "config_change",
    "resource_exhaustion",
    "dependency_failure",
    "traffic_surge",
    "infrastructure",
)

MODEL_NAME = "rca-ranker"
MODEL_VERSION = "1.14.0"  # bump when a weight, a feature or a rule below changes

# The score is a weighted sum of features in [0, 1]; the weights sum to 1 so the score is in [0, 1] too.
WEIGHTS: dict[str, float] = {
    # The random walk sees the whole anomalous subgraph at once: many symptoms pointing (through the
    # neighbours that explain them) at one node is the strongest single sign, as in MicroRCA.
    "graph_rank": 0.30,
    # Anomalous itself and nothing downstream explains it (healthy dependencies, no named dependency).
    "local_root": 0.25,
    # A change on the candidate shortly before its onset (only where the candidate is implicated, so a
    # deploy on a healthy service scores nothing). Most incidents follow a change, hence the weight;
    # not more, because routine deploys land all the time (Sentry's suspect commits are often wrong).
    "change": 0.20,
    # Which anomaly started first. Weaker than it sounds: with one-minute windows a failure usually
    # reaches its callers within the same window.
    "onset": 0.15,
    # How strong the candidate's own (or inferred) anomaly is: a tie-breaker.
    "magnitude": 0.10,
}

# Timing constants, in minutes, for generic behaviour of changes and propagation.
CHANGE_HALF_LIFE_MIN = 10.0  # a change's relevance halves every 10 minutes before the onset
RESOURCE_HALF_LIFE_MIN = 30.0  # leaks and saturation build up slowly: a slower decay
BLAME_MIN_RELEVANCE = 0.2  # below this a change is listed as considered, not blamed
BLAME_MIN_SUPPORT = 0.2  # a change is blamed only on a candidate that is itself clearly implicated
SUSTAINED_WINDOWS = 3.0  # an anomaly counts fully once it lasts this many windows
ONSET_SCALE_WINDOWS = 3.0  # onset score falls by e every 3 windows after the earliest onset
PRE_ONSET_MIN = 5.0  # anomalies up to this long before a defect's onset belong to its analysis
ANALYSIS_SPAN_MIN = 15.0  # ... and up to this long after it: a root cause shows no later than its symptoms
MIN_SURGE_BASE_RPM = 5.0  # a surge needs a baseline of at least this many requests a minute
DEFAULT_CONFIDENCE_SLOPE = 6.0  # the label-free mapping: logistic(6 * (score - 0.5))

# Signal families, by words in the signal (or detector) name: works for the WINDOWS columns and for
# whatever names a detector gives its signals.
_FAMILY_WORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("client", ("client",)),
    ("resource", ("memory", "cpu", "restart", "oom", "saturation", "disk", "heap", "gc")),
    ("traffic", ("requests", "request_rate", "throughput", "traffic", "log_count")),
    ("latency", ("latency", "duration", "p50", "p95", "p99")),
    ("errors", ("error", "exception", "fail", "template", "fatal", "5xx", "status")),
)
OWN_FAMILIES = ("errors", "latency", "resource")
PROPAGATED_FAMILIES = ("errors", "latency", "client")  # what a failing dependency can pass on to its callers
FAILURE_FAMILIES = ("errors", "client")  # failures, as opposed to slowness: what an error text can explain
PATH_MIN_EXTRA_FAILED = 5.0  # traces tell which calls the failing requests made from this many extra failures
PATH_MIN_SHARE = 0.5  # a dependency called by fewer of the extra failed requests did not fail them
RECOVERY_WINDOWS = 15  # a defect is over once the data go on this many windows past its last_seen
BASELINE_TRIM = 0.5  # baseline failure rates come from the windows up to this quantile of the window rates


class RcaInputError(ValueError):
    """An input frame or graph lacks what root-cause ranking needs; the message says which and what to do."""


# ----------------------------------------------------------------------------------- calibration


@dataclass
class Calibrator:
    """Maps a ranking score to a confidence in [0, 1] (the chance the candidate is the root cause).

    ``method``: ``logistic-default`` (no labels: ``1 / (1 + exp(-slope * (score - 0.5)))``, monotone,
    0.5 at a score of 0.5), ``platt`` (a logistic regression fitted on labelled scores) or ``isotonic``
    (a monotone step function fitted on labelled scores, for enough labels of both kinds)."""

    method: str = "logistic-default"
    slope: float = DEFAULT_CONFIDENCE_SLOPE
    intercept: float = -0.5 * DEFAULT_CONFIDENCE_SLOPE
    thresholds_x: list[float] = field(default_factory=list)
    thresholds_y: list[float] = field(default_factory=list)
    n_labels: int = 0

    def predict(self, scores: Iterable[float] | np.ndarray) -> np.ndarray:
        x = np.asarray(list(scores) if not isinstance(scores, np.ndarray) else scores, dtype=float)
        if self.method == "isotonic" and self.thresholds_x:
            return np.clip(np.interp(x, self.thresholds_x, self.thresholds_y), 0.0, 1.0)
        return 1.0 / (1.0 + np.exp(-(self.slope * x + self.intercept)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "slope": self.slope,
            "intercept": self.intercept,
            "thresholds_x": self.thresholds_x,
            "thresholds_y": self.thresholds_y,
            "n_labels": self.n_labels,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibrator:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def calibrate(scores: Sequence[float] | np.ndarray, labels: Sequence[int | bool] | np.ndarray | None = None,
              *, method: str = "auto") -> Calibrator:
    """Fit the score-to-confidence mapping from labelled candidates (label 1 = the true root cause).

    Without labels (or with labels of one kind only) the documented default mapping is returned.
    ``method="auto"`` picks isotonic regression when there are at least 50 labels with 10 of each kind,
    else Platt scaling (a one-feature logistic regression)."""
    if labels is None:
        return Calibrator()
    x = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=float)
    if x.shape != y.shape:
        raise RcaInputError(f"calibrate: {x.size} scores but {y.size} labels; pass one label per score")
    if x.size == 0 or y.min() == y.max():
        return Calibrator(n_labels=int(y.size))
    positives = int(y.sum())
    negatives = int(y.size - positives)
    if method == "auto":
        method = "isotonic" if y.size >= 50 and min(positives, negatives) >= 10 else "platt"
    if method == "isotonic":
        xs, ys = _isotonic_fit(x, y)
        return Calibrator(method="isotonic", thresholds_x=xs, thresholds_y=ys, n_labels=int(y.size))
    if method == "platt":
        slope, intercept = _platt_fit(x, y)
        return Calibrator(method="platt", slope=slope, intercept=intercept, n_labels=int(y.size))
    raise RcaInputError(f"calibrate: unknown method {method!r}; use auto, isotonic or platt")


def _isotonic_fit(x: np.ndarray, y: np.ndarray) -> tuple[list[float], list[float]]:
    """Pool-adjacent-violators: the non-decreasing step function closest to y (least squares), as
    (thresholds, values) for linear interpolation between block ends."""
    order = np.argsort(x, kind="stable")
    xs, ys = x[order], y[order]
    # one block per distinct score first (ties share a value)
    keys, first = np.unique(xs, return_index=True)
    sums = np.add.reduceat(ys, first)
    counts = np.diff(np.append(first, xs.size)).astype(float)
    blocks: list[list[float]] = []  # [sum, count, x_low, x_high]
    for k, total, n in zip(keys, sums, counts, strict=True):
        blocks.append([float(total), float(n), float(k), float(k)])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            last = blocks.pop()
            blocks[-1][0] += last[0]
            blocks[-1][1] += last[1]
            blocks[-1][3] = last[3]
    out_x: list[float] = []
    out_y: list[float] = []
    for total, n, low, high in blocks:
        value = total / n
        out_x.append(low)
        out_y.append(value)
        if high > low:
            out_x.append(high)
            out_y.append(value)
    return out_x, out_y


def _platt_fit(x: np.ndarray, y: np.ndarray, iterations: int = 50) -> tuple[float, float]:
    """A one-feature logistic regression by Newton's method, with Platt's smoothed targets so that a
    perfectly separable set does not drive the slope to infinity."""
    positives = y.sum()
    negatives = y.size - positives
    target = np.where(y > 0.5, (positives + 1) / (positives + 2), 1 / (negatives + 2))
    design = np.column_stack([x, np.ones_like(x)])
    weights = np.zeros(2)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(design @ weights)))
        gradient = design.T @ (p - target)
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        weights -= step
        if np.abs(step).max() < 1e-8:
            break
    return float(weights[0]), float(weights[1])


# ------------------------------------------------------------------------------------ the graph


@dataclass
class _Edge:
    edge_types: set[str] = field(default_factory=set)
    evidence: set[str] = field(default_factory=set)
    call_count: int = 0
    error_count: int = 0


@dataclass
class ServiceTopology:
    """Service-level dependencies from the knowledge graph: ``deps[a][b]`` when ``a`` calls or depends on
    ``b`` (from spans, the catalog's ``dependsOn`` or metrics)."""

    node_type: dict[str, str] = field(default_factory=dict)  # service | datastore
    traced: dict[str, bool] = field(default_factory=dict)
    deps: dict[str, dict[str, _Edge]] = field(default_factory=dict)
    callers: dict[str, set[str]] = field(default_factory=dict)

    def add_node(self, name: str, node_type: str = "service", traced: bool = False) -> None:
        if name not in self.node_type:
            self.node_type[name] = node_type
            self.traced[name] = traced
            self.deps.setdefault(name, {})
            self.callers.setdefault(name, set())
        else:
            self.traced[name] = self.traced[name] or traced

    @property
    def has_edges(self) -> bool:
        return any(self.deps.values())

    def descendants(self, name: str) -> set[str]:
        seen: set[str] = set()
        stack = [name]
        while stack:
            for nxt in self.deps.get(stack.pop(), {}):
                if nxt not in seen and nxt != name:
                    seen.add(nxt)
                    stack.append(nxt)
        return seen

    def ancestors(self, name: str) -> set[str]:
        seen: set[str] = set()
        stack = [name]
        while stack:
            for prev in self.callers.get(stack.pop(), set()):
                if prev not in seen and prev != name:
                    seen.add(prev)
                    stack.append(prev)
        return seen

    def path(self, source: str, target: str) -> list[str] | None:
        """Shortest dependency path source -> ... -> target (breadth first)."""
        if source == target:
            return [source]
        previous: dict[str, str] = {source: source}
        queue = [source]
        while queue:
            current = queue.pop(0)
            for nxt in sorted(self.deps.get(current, {})):
                if nxt in previous:
                    continue
                previous[nxt] = current
                if nxt == target:
                    out = [target]
                    while out[-1] != source:
                        out.append(previous[out[-1]])
                    return out[::-1]
                queue.append(nxt)
        return None


_SERVICE_NODE_TYPES = SERVICE_NODE_TYPES
_DEPENDENCY_EDGES = DEPENDENCY_EDGE_TYPES


def service_topology(graph: nx.MultiDiGraph | nx.DiGraph | None) -> ServiceTopology:
    """The service/datastore nodes and call/dependsOn edges of the knowledge graph (``graph.py``)."""
    topo = ServiceTopology()
    if graph is None:
        return topo
    if not isinstance(graph, nx.DiGraph | nx.MultiDiGraph):
        raise RcaInputError(
            f"graph must be a networkx MultiDiGraph (graph.graph_from_tables), got {type(graph).__name__}"
        )
    names: dict[Any, str] = {}
    for node, data in graph.nodes(data=True):
        node_type = str(data.get("node_type") or _type_from_id(node))
        if node_type not in _SERVICE_NODE_TYPES:
            continue
        name = data.get("name") or _name_from_id(node)
        if not name:
            continue
        names[node] = str(name)
        topo.add_node(str(name), node_type, bool(data.get("traced") or False))
    edges = graph.edges(data=True)
    for source, target, data in edges:
        if source not in names or target not in names or source == target:
            continue
        edge_type = str(data.get("edge_type") or "calls")
        if edge_type not in _DEPENDENCY_EDGES:
            continue
        a, b = names[source], names[target]
        edge = topo.deps[a].setdefault(b, _Edge())
        edge.edge_types.add(edge_type)
        if data.get("evidence"):
            edge.evidence.add(str(data["evidence"]))
        edge.call_count += int(data.get("call_count") or 0)
        edge.error_count += int(data.get("error_count") or 0)
        topo.callers[b].add(a)
    return topo


def _type_from_id(node: Any) -> str:
    text = str(node)
    return text.split(":", 1)[0] if ":" in text else "service"


def _name_from_id(node: Any) -> str:
    text = str(node)
    return text.split(":", 1)[1] if ":" in text else text


# ------------------------------------------------------------------------------------- symptoms


def signal_family(signal: str | None, detector: str | None = None) -> str:
    """errors | latency | resource | client | traffic, from words in the signal (else detector) name."""
    for text in (signal, detector):
        lowered = (text or "").lower()
        if not lowered:
            continue
        for family, words in _FAMILY_WORDS:
            if any(word in lowered for word in words):
                return family
    return "errors"


@dataclass
class _Family:
    strength: float = 0.0
    onset: datetime | None = None
    last: datetime | None = None  # the last anomalous window

    def merge(self, strength: float, onset: datetime | None, last: datetime | None = None) -> None:
        if strength <= 0:
            return
        self.strength = max(self.strength, min(1.0, strength))
        if onset is not None and (self.onset is None or onset < self.onset):
            self.onset = onset
        last = last or onset
        if last is not None and (self.last is None or last > self.last):
            self.last = last


@dataclass
class ServiceState:
    """What one service showed during one incident."""

    name: str
    families: dict[str, _Family] = field(default_factory=lambda: {
        f: _Family() for f in ("errors", "latency", "resource", "client", "traffic")})
    signals: list[dict[str, Any]] = field(default_factory=list)
    own_telemetry: bool = False  # spans or logs of its own (not only metrics or others' client spans)
    texts: list[str] = field(default_factory=list)  # new error templates, exception types
    error_lines: list[tuple[str, int]] = field(default_factory=list)  # per new template: its texts, lines
    new_templates: list[dict[str, Any]] = field(default_factory=list)
    saturation: _Family = field(default_factory=_Family)  # memory (or disk, CPU) filling up: not restarts
    traffic_ratio: float | None = None
    memory_ratio: float | None = None
    restarts: int = 0
    # per dependency: the share of the service's extra failed requests that called it (None: traces do
    # not tell; a dependency missing from it was not seen called in the traces)
    failure_paths: dict[str, float] | None = None

    def path_share(self, dep: str) -> float | None:
        """The share of this service's extra failed requests that called ``dep``; None where unknown."""
        return None if self.failure_paths is None else self.failure_paths.get(dep)

    @property
    def own(self) -> float:
        return max(self.families[f].strength for f in OWN_FAMILIES)

    @property
    def own_onset(self) -> datetime | None:
        return _earliest(self.families[f].onset for f in OWN_FAMILIES if self.families[f].strength > 0)

    @property
    def failing(self) -> float:
        """Own anomaly or failing outgoing calls: how much of a symptom this service shows."""
        return max(self.own, self.families["client"].strength)

    @property
    def onset(self) -> datetime | None:
        """The earliest onset among the families anomalous in more than one window (a blip ahead of a
        failure is not its start); the earliest of all when every one is a blip."""
        present = [f for f in self.families.values() if f.strength > 0]
        lasting = [f for f in present if f.onset is not None and f.last is not None and f.last > f.onset]
        return _earliest(f.onset for f in (lasting or present))

    @property
    def errors_began(self) -> datetime | None:
        """When the service's main new error (the new template with the most lines) was first logged,
        where errors are its main symptom (anomalous for more than one window, at least as clearly as
        anything else of its own); None otherwise."""
        errors = self.families["errors"]
        if (errors.strength <= 0 or errors.strength < self.own or errors.onset is None or errors.last is None
                or errors.last <= errors.onset or not self.new_templates):
            return None
        main = max(self.new_templates, key=lambda t: t["count"])
        return datetime.fromisoformat(main["first_seen"])

    @property
    def failing_until(self) -> datetime | None:
        """The last window with an own or outgoing-call anomaly."""
        lasts = [self.families[f].last for f in (*OWN_FAMILIES, "client") if self.families[f].strength > 0]
        present = [v for v in lasts if v is not None]
        return max(present) if present else None


def _lasting(state: ServiceState, window: timedelta) -> float:
    """Minutes from a service's onset to its last failing window, that window included."""
    onset, until = state.onset, state.failing_until
    span = (until - onset) if onset is not None and until is not None and until >= onset else timedelta(0)
    return (span + window).total_seconds() / 60.0


_SATURATION_WORDS = ("memory", "heap", "oom", "disk", "cpu", "saturation")


def _is_saturation(signal: str | None) -> bool:
    """A resource signal that fills up (memory, heap, disk, CPU), as opposed to restarts."""
    lowered = (signal or "").lower()
    return any(word in lowered for word in _SATURATION_WORDS)


def _earliest(values: Iterable[datetime | None]) -> datetime | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _require(frame: pl.DataFrame | None, name: str, columns: Sequence[str], producer: str) -> pl.DataFrame:
    return require_frame(frame, name, columns, producer, RcaInputError)


def _detector_scales(anomalies: pl.DataFrame) -> dict[tuple[str, str], float]:
    """Per detector and signal, the median score of its anomalous rows: a typical anomaly of that kind
    maps to strength 0.5 (one detector may score tail probabilities and z-scores on different scales)."""
    flagged = anomalies.filter(pl.col("is_anomaly") & (pl.col("score") > 0))
    if flagged.height == 0:
        return {}
    scales = flagged.group_by("detector", "signal").agg(pl.col("score").median().alias("scale"))
    return {(str(r["detector"]), str(r["signal"])): float(r["scale"])
            for r in scales.iter_rows(named=True) if r["scale"]}


def _states_from_anomalies(
    anomalies: pl.DataFrame, start: datetime, end: datetime, prior_start: datetime, window: timedelta,
    scales: dict[tuple[str, str], float],
) -> dict[str, ServiceState]:
    """Per service, the signals anomalous in [start, end]. A signal's strength is its peak score on its
    detector's scale, discounted when it was anomalous only once (persistence) and when it was often
    anomalous before the incident too (a chronic signal is not news)."""
    flagged = anomalies.filter(pl.col("is_anomaly") & pl.col("window_start").is_not_null())
    rows = flagged.filter((pl.col("window_start") >= start) & (pl.col("window_start") <= end))
    states: dict[str, ServiceState] = {}
    if rows.height == 0:
        return states
    prior_windows = max(1.0, (start - prior_start) / window)
    prior = (
        flagged.filter((pl.col("window_start") >= prior_start) & (pl.col("window_start") < start))
        .group_by("service", "signal", "detector")
        .agg(pl.col("window_start").n_unique().alias("prior_windows"))
    )
    gap = pl.col("window_start").diff().over("service", "signal", "detector")
    sustained_next = pl.col("window_start").diff(-1).abs().over("service", "signal", "detector")
    rows = (
        rows.unique(["service", "signal", "detector", "window_start"])
        .sort("service", "signal", "detector", "window_start")
        .with_columns(
            # sustained: another anomalous window of the same signal within two windows
            ((sustained_next <= 2 * window) | (gap <= 2 * window)).fill_null(False).alias("_sustained"),
        )
    )
    grouped = (
        rows.sort("score", descending=True)
        .group_by("service", "signal", "detector", maintain_order=True)
        .agg(
            pl.col("window_start").min().alias("first_at"),
            pl.col("window_start").max().alias("last_at"),
            pl.col("window_start").filter(pl.col("_sustained")).min().alias("sustained_at"),
            pl.col("window_start").first().alias("peak_at"),
            pl.col("score").first().alias("score"),
            pl.col("value").first().alias("value"),
            pl.col("expected").first().alias("expected"),
            pl.col("template_id").drop_nulls().unique().alias("template_ids"),
            pl.col("window_start").n_unique().alias("windows"),
        )
        .join(prior, on=["service", "signal", "detector"], how="left")
        .with_columns(pl.coalesce("sustained_at", "first_at").alias("onset"))
        .sort("onset", "service", "signal")
    )
    for r in grouped.iter_rows(named=True):
        service = str(r["service"])
        state = states.setdefault(service, ServiceState(service))
        family = signal_family(r["signal"], r["detector"])
        value, expected = r["value"], r["expected"]
        rising = value is None or expected is None or value >= expected
        if family == "traffic":
            # traffic strength comes from the windows (a tested rise); detectors' traffic flags are listed
            family = "traffic_rise" if rising else "traffic_drop"
        scale = scales.get((str(r["detector"]), str(r["signal"])), 1.0) or 1.0
        score = float(r["score"] or 0.0)
        persistence = min(1.0, int(r["windows"]) / 3.0)
        chronic = min(1.0, float(r["prior_windows"] or 0) / prior_windows)
        strength = (score / (score + scale) if score > 0 else 0.0) * persistence * (1.0 - chronic)
        if family in state.families:
            state.families[family].merge(strength, r["onset"], r["last_at"])
        if family == "resource" and rising and _is_saturation(r["signal"]):
            state.saturation.merge(strength, r["onset"])
        state.signals.append({
            "service": service,
            "signal": r["signal"],
            "detector": r["detector"],
            "family": family,
            "onset": _iso(r["onset"]),
            "peak_at": _iso(r["peak_at"]),
            "value": _round(value),
            "expected": _round(expected),
            "score": _round(score),
            "windows": int(r["windows"]),
            "strength": _round(strength, 3),
            "template_ids": list(r["template_ids"] or []),
        })
    return states


def _covered(dep: ServiceState, state: ServiceState, window: timedelta, slack: timedelta) -> float:
    """The share of a service's failing period (onset to last failing window) that a dependency's anomaly
    covers, in [0, 1]; the dependency's period is stretched by `slack` at its end (a caller's errors
    may trail its dependency's recovery a little)."""
    onset, until = state.onset, state.failing_until or state.onset
    dep_onset, dep_until = dep.onset, dep.failing_until or dep.onset
    if onset is None or dep_onset is None:
        return 0.0
    start, end = max(onset, dep_onset), min(until, dep_until + slack)
    covered = (end - start + window).total_seconds() / 60.0 if end >= start else 0.0
    return min(1.0, covered / _lasting(state, window))


def _persistence(state: ServiceState, window: timedelta, span: timedelta = timedelta(0)) -> float:
    """How far a service's anomaly lasts, in [0, 1]: 1 once it lasts SUSTAINED_WINDOWS windows and as
    long as `span` (the failure being explained)."""
    needed = max(SUSTAINED_WINDOWS * window, span + window)
    return min(1.0, _lasting(state, window) / (needed.total_seconds() / 60.0))


def _sustained_onset(times: Sequence[datetime], window: timedelta) -> datetime | None:
    """The first of `times` with another within two windows (as the detectors' onsets are taken: one
    noisy window ahead of a failure is not its start); the first of all when none is."""
    ordered = sorted(t for t in times if t is not None)
    for earlier, later in zip(ordered, ordered[1:]):
        if later - earlier <= 2 * window:
            return earlier
    return ordered[0] if ordered else None


def _window_evidence(
    windows: pl.DataFrame, states: dict[str, ServiceState], baseline_start: datetime, start: datetime,
    end: datetime, window: timedelta,
) -> None:
    """Add what the windows show against each service's baseline: failing outgoing calls, a traffic rise,
    memory growth and restarts. Conservative thresholds: these supplement the detectors, not replace them."""
    if windows.height == 0:
        return
    own = windows.group_by("service").agg(
        ((pl.col("requests").fill_null(0).sum() + pl.col("log_count").fill_null(0).sum()) > 0).alias("own")
    )
    own_map = {str(r["service"]): bool(r["own"]) for r in own.iter_rows(named=True)}
    period = windows.filter((pl.col("window_start") >= baseline_start) & (pl.col("window_start") <= end))
    if period.height == 0:
        for name, state in states.items():
            state.own_telemetry = own_map.get(name, False)
        return
    during_flag = pl.col("window_start") >= start
    smooth = 5  # a 5-window rolling mean: one noisy minute is not a surge
    period = period.sort("service", "window_start").with_columns(
        pl.col("requests").fill_null(0).cast(pl.Float64).rolling_mean(smooth, min_samples=1)
        .over("service").alias("_req_smooth"),
        pl.col("memory_bytes").rolling_mean(smooth, min_samples=1).over("service").alias("_mem_smooth"),
    )
    agg = period.group_by("service").agg(
        pl.col("requests").filter(~during_flag).fill_null(0).mean().alias("req_base"),
        pl.col("_req_smooth").filter(during_flag).max().alias("req_peak"),
        pl.col("client_calls").filter(~during_flag).fill_null(0).sum().alias("cc_base"),
        pl.col("client_errors").filter(~during_flag).fill_null(0).sum().alias("ce_base"),
        pl.col("client_calls").filter(during_flag).fill_null(0).sum().alias("cc_during"),
        pl.col("client_errors").filter(during_flag).fill_null(0).sum().alias("ce_during"),
        pl.col("memory_bytes").filter(~during_flag).median().alias("mem_base"),
        pl.col("_mem_smooth").filter(during_flag).max().alias("mem_peak"),
        pl.col("restarts").filter(~during_flag).fill_null(0).sum().alias("restarts_base"),
        pl.col("restarts").filter(during_flag).fill_null(0).sum().alias("restarts_during"),
        (~during_flag).sum().alias("n_base"),
        during_flag.sum().alias("n_during"),
    )
    for r in agg.iter_rows(named=True):
        name = str(r["service"])
        rows = period.filter((pl.col("service") == name) & during_flag)
        state = states.get(name) or ServiceState(name)
        touched = False
        # failing outgoing calls: the during rate above the baseline by more than chance
        cc_d, ce_d = float(r["cc_during"] or 0), float(r["ce_during"] or 0)
        cc_b, ce_b = float(r["cc_base"] or 0), float(r["ce_base"] or 0)
        if cc_d > 0 and ce_d >= 3:
            rate_d = ce_d / cc_d
            rate_b = ce_b / cc_b if cc_b else 0.0
            excess = rate_d - rate_b
            noise = 3.0 * math.sqrt(max(rate_b, 1.0 / max(cc_b, 1.0)) / cc_d)
            if excess > max(0.02, noise):
                hits = rows.filter(
                    pl.col("client_errors").fill_null(0)
                    > (pl.col("client_calls").fill_null(0) * (rate_b + 0.5 * excess))
                )
                onset = _sustained_onset(hits["window_start"].to_list(), window)
                strength = excess / (excess + 0.05)
                state.families["client"].merge(strength, onset, hits["window_start"].max() if hits.height else None)
                state.signals.append({
                    "service": name, "signal": "client_errors", "detector": "windows", "family": "client",
                    "onset": _iso(onset), "value": _round(rate_d), "expected": _round(rate_b),
                    "score": _round(strength),
                })
                touched = True
        # traffic: smoothed peak over the baseline mean
        base, peak = r["req_base"], r["req_peak"]
        if base and peak and r["n_base"]:
            ratio = float(peak) / float(base)
            state.traffic_ratio = round(ratio, 3)
            # a rise beyond Poisson noise over the smoothing span, and by half at least
            expected_count = float(base) * smooth
            z = (float(peak) * smooth - expected_count) / math.sqrt(expected_count)
            # and a volume that can load a system: a few extra calls a minute are no surge
            if ratio >= 1.5 and z >= 4.0 and float(base) >= MIN_SURGE_BASE_RPM * window.total_seconds() / 60.0:
                hits = rows.filter(pl.col("_req_smooth") >= 1.5 * float(base))
                onset = hits["window_start"].min() if hits.height else None
                strength = (ratio - 1.0) / ratio  # 2x -> 0.5, 3x -> 0.67
                state.families["traffic"].merge(strength, onset)
                state.signals.append({
                    "service": name, "signal": "requests", "detector": "windows", "family": "traffic",
                    "onset": _iso(onset), "value": _round(float(peak)), "expected": _round(float(base)),
                    "score": _round(strength),
                })
                touched = True
        # memory growth and restarts
        mem_base, mem_peak = r["mem_base"], r["mem_peak"]
        if mem_base and mem_peak and mem_base > 0:
            ratio = float(mem_peak) / float(mem_base)
            state.memory_ratio = round(ratio, 3)
            if ratio >= 1.3:
                hits = rows.filter(pl.col("_mem_smooth") >= 1.3 * float(mem_base))
                onset = hits["window_start"].min() if hits.height else None
                strength = min(1.0, (ratio - 1.0) / 1.0)
                state.families["resource"].merge(strength, onset, hits["window_start"].max() if hits.height else None)
                state.saturation.merge(strength, onset)
                state.signals.append({
                    "service": name, "signal": "memory_bytes", "detector": "windows", "family": "resource",
                    "onset": _iso(onset), "value": _round(float(mem_peak)), "expected": _round(float(mem_base)),
                    "score": _round(strength),
                })
                touched = True
        restarts_d = int(r["restarts_during"] or 0)
        base_rate = float(r["restarts_base"] or 0) / max(int(r["n_base"] or 0), 1)
        expected_restarts = base_rate * max(int(r["n_during"] or 0), 1)
        if restarts_d >= 1 and restarts_d > 2.0 * expected_restarts + 1:
            state.restarts = restarts_d
            hits = rows.filter(pl.col("restarts").fill_null(0) > 0)
            onset = hits["window_start"].min() if hits.height else None
            strength = restarts_d / (restarts_d + 2.0)
            state.families["resource"].merge(strength, onset, hits["window_start"].max() if hits.height else None)
            state.signals.append({
                "service": name, "signal": "restarts", "detector": "windows", "family": "resource",
                "onset": _iso(onset), "value": float(restarts_d), "expected": _round(expected_restarts),
                "score": _round(strength),
            })
            touched = True
        if touched and name not in states:
            states[name] = state
    for name, state in states.items():
        state.own_telemetry = own_map.get(name, False)


# A caller that cannot read a response (a deserialization or decoding failure, in the words of the
# common JSON libraries) fails on what a dependency sent, not on whether the dependency was up.
_READ_FAILURE = re.compile(
    r"deserializ|unmarshal|json ?decode|mismatchedinput|jsonmapping|invalid response"
    r"|unexpected token .{0,20}json|(?:parse|decode|read) (?:the )?response"
    r"|validation errors? for \w*Response\b",
    re.IGNORECASE,
)
_URL_PATH = re.compile(r"(?<![\w:/.-])/\S*")  # a path that starts a word: not the part after a host
_WORD_SPLIT = re.compile(r"([a-z0-9])([A-Z])")
_WORDS = re.compile(r"[a-z0-9]+")


def _failure_paths(request_calls: pl.DataFrame, service: str, since: datetime, until: datetime,
                   baseline_start: datetime) -> dict[str, float] | None:
    """Per dependency, the share of ``service``'s extra failed requests in [since, until) that called it
    (``graph.request_calls`` rows). Extra: beyond the failure rate of the quieter half of the windows of
    [baseline_start, since), overall and among the requests that called the dependency, so a dependency
    that fails some requests every day does not count for a new failure. None where the traces show
    fewer than ``PATH_MIN_EXTRA_FAILED`` extra failed requests (errors only in logs, or no spans through
    the service)."""
    rows = request_calls.filter((pl.col("caller") == service) & (pl.col("window_start") >= baseline_start)
                                & (pl.col("window_start") < until))
    if rows.height == 0:
        return None
    # the baseline from its quieter windows (at most the median failure rate): an earlier incident in the
    # hour before is not the norm
    rates = (rows.filter(pl.col("window_start") < since).unique("window_start")
             .select("window_start", (pl.col("failed") / pl.col("requests")).alias("rate")))
    if rates.height:
        cutoff = rates["rate"].quantile(BASELINE_TRIM, "lower")
        noisy = rates.filter(pl.col("rate") > cutoff)["window_start"]
        rows = rows.filter(~pl.col("window_start").is_in(noisy.implode()))
    during = pl.col("window_start") >= since
    per_callee = rows.group_by("callee").agg(
        *(pl.col(c).filter(during).sum().alias(c) for c in ("requests_calling", "failed_calling")),
        *(pl.col(c).filter(~during).sum().alias(f"base_{c}") for c in ("requests_calling", "failed_calling")),
    )
    totals = rows.unique(["window_start"]).select(
        pl.col("requests").filter(during).sum(), pl.col("failed").filter(during).sum(),
        pl.col("requests").filter(~during).sum().alias("base_requests"),
        pl.col("failed").filter(~during).sum().alias("base_failed"),
    ).row(0, named=True)
    base_rate = totals["base_failed"] / totals["base_requests"] if totals["base_requests"] else 0.0
    extra = totals["failed"] - totals["requests"] * base_rate
    if extra < PATH_MIN_EXTRA_FAILED:
        return None
    shares = {}
    for r in per_callee.iter_rows(named=True):
        rate = r["base_failed_calling"] / r["base_requests_calling"] if r["base_requests_calling"] else base_rate
        shares[r["callee"]] = min(1.0, max(0.0, r["failed_calling"] - r["requests_calling"] * rate) / extra)
    return shares


def _words(text: str) -> list[str]:
    return _WORDS.findall(_WORD_SPLIT.sub(r"\1 \2", text).lower())


def names_service(text: str, service: str) -> bool:
    """Does ``text`` name ``service`` (as its words, in order, a plural allowed)? ``cart-redis`` matches
    "connect to cart-redis:6379", ``recommendation`` matches "RecommendationsResponse"; names of one
    word under 3 letters are too ambiguous to match. Whole words only: ``ads`` does not match "loads"."""
    wanted = _words(service)
    if not wanted or (len(wanted) == 1 and len(wanted[0]) < 3):
        return False
    words = _words(text)
    n = len(wanted)
    for i in range(len(words) - n + 1):
        if all(words[i + k] in (w, w + "s", w + "es") for k, w in enumerate(wanted)):
            return True
    return False


def naming_weight(text: str, service: str) -> float:
    """How clearly ``text`` names ``service``: 1 outside request paths ("call to transactions failed",
    "http://transactions:8080/x"), 0.5 only inside one ("error in GET /accounts/{id}/transactions": a
    path names a resource, which may be the caller's own or, behind a gateway, the service it proxies
    to), else 0."""
    if not names_service(text, service):
        return 0.0
    return 1.0 if names_service(_URL_PATH.sub(" ", text), service) else 0.5


def _error_line_share(state: ServiceState, matches: Callable[[str], bool]) -> float | None:
    """The share of a service's new error lines whose template (or sample line) `matches`; None where no
    line counts are known (texts from defects)."""
    total = sum(n for _, n in state.error_lines)
    if total <= 0:
        return None
    return sum(n for text, n in state.error_lines if matches(text)) / total


def _named_share(state: ServiceState, service: str) -> float:
    """The share of a service's new error lines that name `service`; 1 where no line counts are known."""
    share = _error_line_share(state, lambda text: names_service(text, service))
    return 1.0 if share is None else share


def _read_failure_share(state: ServiceState) -> float:
    """The share of a service's new error lines that say it could not read a response (``_READ_FAILURE``);
    where no line counts are known, 1 if any of its error texts says so."""
    share = _error_line_share(state, lambda text: bool(_READ_FAILURE.search(text)))
    if share is None:
        return 1.0 if any(_READ_FAILURE.search(text) for text in state.texts) else 0.0
    return share


def _collect_texts(
    states: dict[str, ServiceState], defects: pl.DataFrame, log_events: pl.DataFrame | None,
    baseline_start: datetime, start: datetime, end: datetime,
) -> None:
    """Error texts that appeared in [start, end], per service: log templates at WARN or worse not seen in
    the baseline before (with their first sample line); without log events, the defects' templates and
    exception types (those summarize a defect's whole life, so they are the second choice)."""
    if log_events is not None and log_events.height:
        defects = defects.clear()
    for r in defects.iter_rows(named=True):
        state = states.get(str(r.get("service")))
        if state is None:
            continue
        for key in ("template", "exception_type", "title"):
            if r.get(key):
                state.texts.append(str(r[key]))
    if log_events is None or log_events.height == 0:
        return
    time_col = "timestamp" if "timestamp" in log_events.columns else "window_start"
    needed = ["service", "template_id", "template", time_col]
    missing = [c for c in needed if c not in log_events.columns]
    if missing:
        raise RcaInputError(f"log_events lacks column(s) {', '.join(missing)}: pass signals.log_events or None")
    events = log_events.filter(
        (pl.col(time_col) >= baseline_start) & (pl.col(time_col) <= end)
        & pl.col("service").is_in(list(states))
    )
    if "level" in events.columns:
        events = events.filter(
            pl.col("level").is_null()
            | pl.col("level").str.to_uppercase().is_in(["WARN", "WARNING", "ERROR", "FATAL"])
        )
    if events.height == 0:
        return
    sample = [c for c in ("body", "exception_type") if c in events.columns]
    per_template = (
        events.sort(time_col)
        .group_by("service", "template_id", maintain_order=True)
        .agg(
            pl.col(time_col).min().alias("first_seen"),
            pl.col("template").first(),
            *(pl.col(c).drop_nulls().first().alias(c) for c in sample),
            (pl.col(time_col) >= start).sum().alias("count"),
            (pl.col("level") if "level" in events.columns else pl.lit(None, dtype=pl.String)).first().alias("level"),
        )
        .filter(pl.col("first_seen") >= start)
        .sort("first_seen")
    )
    for r in per_template.iter_rows(named=True):
        state = states[str(r["service"])]
        if len(state.new_templates) >= 20:
            continue
        state.new_templates.append({
            "template_id": r["template_id"], "template": r["template"], "first_seen": _iso(r["first_seen"]),
            "count": int(r["count"]), "level": r["level"],
        })
        texts = [str(r[c]) for c in ("template", *sample) if r.get(c)]
        state.texts.extend(texts)
        state.error_lines.append(("\n".join(texts), int(r["count"])))


# ---------------------------------------------------------------------------------- incidents

# The family a defect's type speaks for: a defect is a vetted symptom of its service (a dependency
# failure is a symptom of failing outgoing calls, not of the service itself).
_DEFECT_FAMILY = {
    "latency_regression": "latency",
    "resource_exhaustion": "resource",
    "dependency_failure": "client",
}
# A defect vouches that its service misbehaves: half a typical anomaly; the detectors say how much.
DEFECT_STRENGTH = 0.25


def _seed_defects(states: dict[str, ServiceState], defects: pl.DataFrame, start: datetime,
                  end: datetime) -> None:
    for r in defects.iter_rows(named=True):
        service = r.get("service")
        # only defects that began here: an older one still open is context, and its anomalies (with
        # their chronic discount) already speak for it
        if not service or r.get("first_seen") is None or not start <= r["first_seen"] <= end:
            continue
        state = states.setdefault(str(service), ServiceState(str(service)))
        family = _DEFECT_FAMILY.get(str(r.get("defect_type") or ""), "errors")
        # the detectors' onset wins: a defect may open on a stray window before its anomaly takes hold
        onset = None if state.onset is not None else r["first_seen"]
        state.families[family].merge(DEFECT_STRENGTH, onset, r.get("last_seen"))
        state.signals.append({
            "service": service, "signal": r.get("defect_type") or "defect", "detector": "defect",
            "family": family, "onset": _iso(r["first_seen"]), "value": None, "expected": None,
            "score": _round(r.get("confidence")), "strength": DEFECT_STRENGTH, "defect_id": r.get("defect_id"),
        })



@dataclass
class _Implication:
    source: str  # the symptomatic service
    target: str  # the neighbour that explains it
    strength: float
    reason: str  # dependency_anomaly | named_in_errors | blind_dependency | changed_dependency | traffic_surge
    detail: str = ""


@dataclass
class Candidate:
    service: str
    features: dict[str, float]
    score: float
    cause_kind: str
    change: dict[str, Any] | None
    changes_considered: list[dict[str, Any]]
    onset: datetime | None
    implicated_by: list[_Implication]
    anomaly: float
    inferred: float
    traffic_origin: float


@dataclass
class IncidentAnalysis:
    incident_id: str
    start: datetime
    end: datetime
    states: dict[str, ServiceState]
    candidates: dict[str, Candidate]
    implications: list[_Implication]
    onset_order: list[tuple[str, datetime]]
    topology: ServiceTopology


def _changes_before(deployments: pl.DataFrame, service: str, onset: datetime, lookback: timedelta,
                    window: timedelta) -> list[dict[str, Any]]:
    rows = deployments.filter(
        (pl.col("service") == service)
        & (pl.col("timestamp") >= onset - lookback)
        & (pl.col("timestamp") <= onset + window)
    ).sort("timestamp", descending=True)
    return [_change(r, onset) for r in rows.iter_rows(named=True)]


def _change(row: dict[str, Any], onset: datetime) -> dict[str, Any]:
    """A raw.deployments row as a change a candidate can carry."""
    return {
        "change_id": row["event_id"],
        "service": row["service"],
        "event_type": row.get("event_type"),
        "change_kind": row.get("change_kind"),
        "version": row.get("version"),
        "previous_version": row.get("previous_version"),
        "commit": row.get("commit"),
        "changed_files": list(row.get("changed_files") or []),
        "timestamp": _iso(row["timestamp"]),
        "minutes_before_onset": round((onset - row["timestamp"]).total_seconds() / 60.0, 2),
    }


def _relevance(minutes_before: float, half_life: float) -> float:
    """A change's relevance from how long before the onset it landed (a change up to one window after
    the onset window's start counts as at the onset: windows are coarse)."""
    return float(0.5 ** (max(minutes_before, 0.0) / half_life))


def analyse_incident(
    incident_id: str,
    incident_defects: pl.DataFrame,
    *,
    windows: pl.DataFrame,
    anomalies: pl.DataFrame,
    topology: ServiceTopology,
    deployments: pl.DataFrame,
    log_events: pl.DataFrame | None,
    lookback: timedelta,
    scales: dict[tuple[str, str], float],
    window: timedelta,
    first: datetime | None = None,
    last: datetime | None = None,
    request_calls: pl.DataFrame | None = None,
) -> IncidentAnalysis:
    """Symptoms, implications, the random walk and the features of every candidate around one onset.

    The analysis covers ``PRE_ONSET_MIN`` before ``first`` (default: the defects' earliest onset) to
    ``last`` (default: their latest last_seen); a root cause shows no later than its symptoms."""
    first = first or incident_defects["first_seen"].min()
    last = last or incident_defects["last_seen"].max()
    pre = min(lookback, timedelta(minutes=PRE_ONSET_MIN))
    start, end = first - pre, last
    baseline_start = start - lookback
    states = _states_from_anomalies(anomalies, start, end, baseline_start, window, scales)
    _window_evidence(windows, states, baseline_start, start, end, window)
    _seed_defects(states, incident_defects, start, end)
    for name in states:
        if name not in topology.node_type:  # not in the graph: own requests or logs in the windows count
            topology.add_node(name, traced=states[name].own_telemetry)
    _collect_texts(states, incident_defects, log_events, baseline_start, start, end)
    if request_calls is not None and request_calls.height:
        nearby = request_calls.filter(pl.col("window_start").is_between(baseline_start, end + window))
        for name, state in states.items():
            errors = state.families["errors"]
            if errors.strength > 0 and errors.onset is not None:
                state.failure_paths = _failure_paths(nearby, name, errors.onset,
                                                     (errors.last or errors.onset) + window, baseline_start)

    # ---- implication: which neighbour explains each symptomatic service
    tolerance = window
    implications: list[_Implication] = []
    change_cache: dict[tuple[str, datetime], list[dict[str, Any]]] = {}

    def changes(service: str, onset: datetime) -> list[dict[str, Any]]:
        key = (service, onset)
        if key not in change_cache:
            change_cache[key] = _changes_before(deployments, service, onset, lookback, window)
        return change_cache[key]

    def could_cause(change: dict[str, Any], state: ServiceState | None) -> bool:
        # a change that landed after a service's main new error was already being logged did not cause it
        began = state.errors_began if state is not None else None
        return began is None or datetime.fromisoformat(change["timestamp"]) <= began + tolerance

    def still_failing(dep: ServiceState, onset: datetime) -> bool:
        # a dependency whose anomaly was over before the caller's began does not explain it
        until = dep.failing_until
        return until is None or until >= onset - 2 * tolerance

    traffic_origins: dict[str, float] = {}
    for name, state in states.items():
        surge = state.families["traffic"]
        if surge.strength <= 0:
            continue
        # the origin of a surge: no caller of it saw a surge too
        callers = topology.callers.get(name, ())
        if not any(states.get(c) and states[c].families["traffic"].strength > 0 for c in callers):
            traffic_origins[name] = surge.strength

    for name, state in states.items():
        symptom = state.failing
        onset = state.onset
        if symptom <= 0 or onset is None:
            continue
        deps = topology.deps.get(name, {})
        client = state.families["client"]
        # dependencies without spans of their own and without a symptom in the windows: when the
        # service's outgoing calls fail, they are the suspects (equally: cumulative edge error counts
        # mix earlier incidents in, so they do not say which one fails now)
        blind = [d for d in deps if not topology.traced.get(d)
                 and not (states.get(d) is not None and states[d].failing > 0)]
        def causal_changes(service: str) -> list[dict[str, Any]]:
            # the changes on `service` before this service's onset that could have caused its errors
            return [c for c in changes(service, onset) if could_cause(c, state)]

        own_changes = causal_changes(name)
        own_relevance = max((_relevance(c["minutes_before_onset"], CHANGE_HALF_LIFE_MIN) for c in own_changes),
                            default=0.0)
        # an error text explains errors and failing calls, not slowness
        failures = max(state.families[f].strength for f in FAILURE_FAMILIES)
        failure_share = min(1.0, failures / max(symptom, 1e-6))
        # errors reading responses: slowness or an outage of a dependency does not make its responses
        # unreadable, so an anomalous dependency does not explain them, and a dependency that changed what
        # it sends is a suspect even where another one is anomalous
        unreadable = _read_failure_share(state) * failure_share

        def propagated_share(dep: str, kinds: tuple[str, ...] = PROPAGATED_FAMILIES) -> float:
            # the part of the caller's symptom a dependency's anomaly can have passed on: its errors,
            # latency or failing calls, each only if it began no earlier than the dependency's anomaly
            # (and while that lasted): slowness that set in before a dependency failed is not its doing
            d = states.get(dep)
            if d is None or d.failing <= 0 or d.onset is None:
                return 0.0
            path = state.path_share(dep)
            if path is not None and path < PATH_MIN_SHARE:
                # the traces show that most of the service's failed requests did not call it
                kinds = tuple(k for k in kinds if k != "errors")
            families = (state.families[f] for f in kinds)
            passed_on = [family.strength for family in families
                         if family.strength > 0 and family.onset is not None
                         and d.onset <= family.onset + tolerance and still_failing(d, family.onset)]
            return min(1.0, max(passed_on, default=0.0) / max(symptom, 1e-6))

        def failing_in_time(dep: str, kinds: tuple[str, ...] = PROPAGATED_FAMILIES) -> bool:
            # failing from no later than one of the caller's symptoms (of these kinds) began, and still then
            return propagated_share(dep, kinds) > 0

        def explains(dep: str) -> float:
            # a dependency failing at least as clearly as the caller explains the caller fully, as far
            # as a dependency can: restarts and memory or CPU filling up are the caller's own, unreadable
            # responses are not a matter of the dependency being up, and an anomaly explains only the
            # part of the caller's failure it covers (a blip of a minute, or one over as the caller's
            # began, does not explain a failure that lasts a quarter of an hour)
            d = states[dep]
            return min(1.0, d.failing / max(symptom, 1e-6)) * propagated_share(dep) * (1.0 - unreadable) \
                * _covered(d, state, window, tolerance)

        dep_anomalous = any(failing_in_time(d) for d in deps)
        for dep in deps:
            dep_state = states.get(dep)
            path = state.path_share(dep)  # the share of the service's extra failed requests that called it
            if failing_in_time(dep):
                called = "" if path is None else f"; {path:.0%} of {name}'s extra failed requests called it"
                implications.append(_Implication(name, dep, explains(dep), "dependency_anomaly",
                                                 f"{dep} anomalous from {_iso(dep_state.onset)}{called}"))
            elif not dep_anomalous and state.failing > state.families["resource"].strength:
                # every dependency looks healthy: one that only passes calls on (a proxy, a backend for
                # the frontend) may hide a failing one behind it, which then explains the caller at half
                for further in topology.deps.get(dep, {}):
                    if further != name and failing_in_time(further):
                        implications.append(_Implication(
                            name, further, 0.5 * explains(further), "dependency_anomaly",
                            f"{further} anomalous from {_iso(states[further].onset)}, behind {dep}"))
            naming, named = max(((naming_weight(t, dep), t) for t in state.texts), key=lambda w: w[0],
                                default=(0.0, None))
            named = named if naming > 0 else None
            # naming is evidence; stronger when the named dependency failed or changed too
            # (a change on it corroborates only where it is fresher than the service's own)
            corroborated = named is not None and (failing_in_time(dep, FAILURE_FAMILIES) or any(
                BLAME_MIN_RELEVANCE <= _relevance(c["minutes_before_onset"], CHANGE_HALF_LIFE_MIN)
                > own_relevance for c in causal_changes(dep)))
            if named is not None and not corroborated and topology.traced.get(dep) and client.strength <= 0:
                # a dependency whose own spans look healthy, unchanged, while the calls to it did not fail:
                # the text names something else (an endpoint of the caller, say `POST /cart`)
                named = None
            if named is not None:
                # uncorroborated, naming counts as far as the lines naming the dependency make up the
                # service's new errors (one stray "call to X failed" among a flood of others is not it);
                # and it explains the service's errors, not its slowness, restarts or saturation
                weight = (0.9 if corroborated else 0.5 * _named_share(state, dep)) * naming
                implications.append(_Implication(name, dep, weight * failure_share, "named_in_errors",
                                                 named[:300]))
            if dep in blind and client.strength > 0:
                implications.append(_Implication(
                    name, dep, client.strength / len(blind), "blind_dependency",
                    f"{name}'s outgoing calls failed; {dep} has no spans of its own"))
            if state.families["errors"].strength > 0 and (not dep_anomalous or unreadable >= 0.5):
                # where the dependencies look healthy, or the service cannot read what one sent: a fresh
                # change on one of them (or, halved, on one of theirs that looks healthy too) is then the
                # best explanation the graph offers (a contract change shows at the caller, not the
                # callee, and may pass through a proxy)
                further = [d for d in topology.deps.get(dep, {}) if d != name
                           and not (states.get(d) is not None and states[d].failing > 0)]
                # a change reaches the service's failed requests only as far as they called the dependency
                on_path = 1.0 if path is None else path
                for target, discount in ((dep, 1.0), *((d, 0.5) for d in further)):
                    dep_changes = causal_changes(target)
                    if not dep_changes:
                        continue
                    best = min(dep_changes, key=lambda c: max(c["minutes_before_onset"], 0.0))
                    relevance = (_relevance(best["minutes_before_onset"], CHANGE_HALF_LIFE_MIN) * discount
                                 * on_path)
                    if relevance > own_relevance and relevance >= BLAME_MIN_RELEVANCE:
                        # a service that restarts or fills up is failing of its own accord
                        called = "" if path is None else (
                            f"; {path:.0%} of {name}'s extra failed requests called {dep}")
                        implications.append(_Implication(
                            name, target, 0.5 * relevance * (1.0 - state.families["resource"].strength),
                            "changed_dependency",
                            f"{target} changed {best['minutes_before_onset']:.1f} min before {name}'s onset{called}"))
        for origin, surge in traffic_origins.items():
            if origin == name or (topology.has_edges and origin not in topology.ancestors(name)):
                continue
            if (state.traffic_ratio or 0.0) < 1.2:  # the extra load did not reach this service
                continue
            origin_onset = states[origin].families["traffic"].onset
            if origin_onset is not None and origin_onset <= onset + tolerance:
                ratio = states[origin].traffic_ratio or 0.0
                implications.append(_Implication(name, origin, 0.8 * surge, "traffic_surge",
                                                 f"traffic at {origin} rose {ratio:.1f}x"))
    # a surge origin's own symptoms are the surge's, not its dependencies' fault, unless a dependency
    # was failing before the surge began
    def before_surge(i: _Implication) -> bool:
        target, surge_onset = states.get(i.target), states[i.source].families["traffic"].onset
        return (target is not None and target.own_onset is not None and surge_onset is not None
                and target.own_onset < surge_onset - tolerance)

    implications = [i for i in implications if i.source not in traffic_origins or before_surge(i)]

    def lasting_share(node: str) -> float:
        # a one-window blip is weaker evidence than a failure that goes on
        state = states.get(node)
        return _persistence(state, window, last - first) if state is not None and state.failing > 0 else 1.0

    def sustained(node: str) -> float:
        return states[node].failing * lasting_share(node) if node in states else 0.0

    explained: dict[str, float] = {}
    inferred: dict[str, float] = {}
    by_target: dict[str, list[_Implication]] = {}
    for imp in implications:
        explained[imp.source] = max(explained.get(imp.source, 0.0), imp.strength)
        weight = imp.strength * sustained(imp.source)
        inferred[imp.target] = max(inferred.get(imp.target, 0.0), min(1.0, weight))
        by_target.setdefault(imp.target, []).append(imp)

    nodes = set(states) | set(inferred)
    for node in nodes:
        topology.add_node(node)

    def anomaly(node: str) -> float:
        own = sustained(node)
        return max(own, inferred.get(node, 0.0), traffic_origins.get(node, 0.0))

    # ---- the random walk (personalized PageRank over the implication graph)
    walk = nx.DiGraph()
    walk.add_nodes_from(nodes)
    for imp in implications:
        weight = imp.strength * max(anomaly(imp.source), 0.05)
        if walk.has_edge(imp.source, imp.target):
            walk[imp.source][imp.target]["weight"] = max(walk[imp.source][imp.target]["weight"], weight)
        else:
            walk.add_edge(imp.source, imp.target, weight=weight)
    for node in nodes:
        stay = anomaly(node) * (1.0 - explained.get(node, 0.0))
        walk.add_edge(node, node, weight=stay + 0.01)
    personalization = {n: sustained(n) + 0.01 for n in nodes}
    ranks = nx.pagerank(walk, alpha=0.85, personalization=personalization, weight="weight") if nodes else {}
    top_rank = max(ranks.values(), default=0.0) or 1.0

    # ---- onsets: own, else the earliest evidence that implicates the node
    onsets: dict[str, datetime] = {}
    for node in nodes:
        own_onset = states[node].onset if node in states else None
        implied = _earliest(states[i.source].onset for i in by_target.get(node, []))
        if node in traffic_origins:
            own_onset = _earliest([own_onset, states[node].families["traffic"].onset])
        value = own_onset or implied
        if value is not None:
            onsets[node] = value
    # a blip (one window) says little about where a failure started: it does not set the earliest onset
    # while something lasting is known, and its own onset score is scaled down as its anomaly is
    lasting_onsets = [t for n, t in onsets.items() if lasting_share(n) >= 1.0]
    earliest = min(lasting_onsets or onsets.values(), default=None)
    order = sorted(onsets.items(), key=lambda kv: (kv[1], -anomaly(kv[0]), kv[0]))

    # ---- features, score, cause kind and change of every candidate
    candidates: dict[str, Candidate] = {}
    for node in nodes:
        state = states.get(node)
        own = state.own if state else 0.0
        # how clearly the candidate itself is implicated: its own anomaly, what its callers infer, or
        # failing outgoing calls that no dependency explains (then they are its own doing)
        client = state.families["client"].strength if state else 0.0
        unexplained_client = client * (1.0 - explained.get(node, 0.0))
        # (a symptom that a failing dependency explains lends a change no support: services deploy all
        # the time, and a deploy on a caller of the failing service is not the cause)
        implicated = max(own, inferred.get(node, 0.0)) * (1.0 - explained.get(node, 0.0))
        support = max(implicated, unexplained_client)
        magnitude = anomaly(node)
        onset = onsets.get(node) or first
        saturation = state.saturation.strength if state else 0.0
        # a leak or saturation builds up after the change that caused it: a slower decay
        half_life = RESOURCE_HALF_LIFE_MIN if saturation >= 0.3 else CHANGE_HALF_LIFE_MIN
        if state is not None and saturation >= 0.3 and state.saturation.onset is not None:
            onset = min(onset, state.saturation.onset)
        # listed as considered, but not blamed: a change that landed after the errors it would explain
        considered = [c if could_cause(c, state) else {**c, "after_errors_began": True}
                      for c in changes(node, onset)]
        best, relevance = None, 0.0
        for change in considered:
            if change.get("after_errors_began"):
                continue
            r = _relevance(change["minutes_before_onset"], half_life)
            if r > relevance:
                best, relevance = change, r
        if earliest is not None and node in onsets:
            lag = (onsets[node] - earliest).total_seconds() / 60.0
            onset_score = math.exp(-max(lag, 0.0) / (ONSET_SCALE_WINDOWS * window.total_seconds() / 60.0)) \
                * lasting_share(node)
        else:
            onset_score = 0.0
        features = {
            "graph_rank": ranks.get(node, 0.0) / top_rank,
            "local_root": magnitude * (1.0 - explained.get(node, 0.0)),
            "change": relevance * support,
            "onset": onset_score,
            "magnitude": magnitude,
        }
        score = sum(WEIGHTS[k] * v for k, v in features.items())
        # a node implicated because it changed (a healthy callee whose callers fail) carries its change
        changed = any(i.reason == "changed_dependency" for i in by_target.get(node, []))
        blamed = best if (best is not None and relevance >= BLAME_MIN_RELEVANCE
                          and (support >= BLAME_MIN_SUPPORT or changed)) else None
        kind = _cause_kind(node, state, topology, blamed, traffic_origins.get(node, 0.0), saturation)
        if kind == "traffic_surge":
            blamed = None  # load is the cause here, not a change
        candidates[node] = Candidate(
            service=node, features={k: round(v, 4) for k, v in features.items()}, score=float(score),
            cause_kind=kind, change=({**blamed, "relevance": round(relevance, 3)} if blamed else None),
            changes_considered=considered[:5], onset=onsets.get(node), implicated_by=by_target.get(node, []),
            anomaly=magnitude, inferred=inferred.get(node, 0.0), traffic_origin=traffic_origins.get(node, 0.0),
        )
    return IncidentAnalysis(incident_id, start, end, states, candidates, implications, order, topology)


def _cause_kind(node: str, state: ServiceState | None, topology: ServiceTopology, blamed: dict | None,
                surge: float, saturation: float) -> str:
    """The kind of cause a candidate stands for, from its own evidence (the rules, in order):
    a surge that started here and outweighs its own errors is traffic; memory (or CPU, disk) filling up
    is resource exhaustion, also when a change started it (the change id stays on the row); else a
    blamed change is a code or config change; else a datastore failing is a dependency failure; else
    a failure without a change (crashes, restarts, a blind service going down) is infrastructure."""
    own_errors = state.families["errors"].strength if state else 0.0
    if surge > 0 and surge >= own_errors:
        return "traffic_surge"
    if saturation >= 0.3:
        return "resource_exhaustion"
    if blamed is not None:
        return "config_change" if (blamed.get("change_kind") or "").lower() == "config" else "code_change"
    if topology.node_type.get(node) == "datastore":
        return "dependency_failure"
    return "infrastructure"


# ------------------------------------------------------------------------------------- ranking


_DEFECT_COLUMNS = ("defect_id", "service", "first_seen", "last_seen")
_ANOMALY_COLUMNS = ("service", "window_start", "detector", "signal", "value", "expected", "score", "is_anomaly")
_WINDOW_COLUMNS = ("service", "window_start", "requests", "client_calls", "client_errors", "log_count",
                   "memory_bytes", "restarts")
_DEPLOYMENT_COLUMNS = ("event_id", "timestamp", "service")


def empty_root_causes() -> pl.DataFrame:
    return pl.DataFrame(schema=ROOT_CAUSES)


def rank_root_causes(
    defects: pl.DataFrame,
    *,
    windows: pl.DataFrame,
    anomalies: pl.DataFrame,
    graph: nx.MultiDiGraph | None,
    deployments: pl.DataFrame,
    log_events: pl.DataFrame | None = None,
    max_candidates: int = 5,
    lookback: timedelta = timedelta(minutes=60),
    calibrator: Calibrator | None = None,
    request_calls: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Ranked candidate root causes of every defect (ROOT_CAUSES rows, ``max_candidates`` per defect).

    ``defects``: ``defects.defects`` rows; ``windows``: ``signals.service_windows`` over at least
    ``lookback`` before the defects; ``anomalies``: ``defects.anomalies``; ``graph``: the knowledge graph
    (``graph.graph_from_tables``); ``deployments``: ``raw.deployments``; ``log_events``: optional
    ``signals.log_events`` for new error templates. ``calibrator``: from ``calibrate`` (default: the
    label-free mapping). ``request_calls``: optional ``signals.request_calls`` (``graph.request_calls``):
    which dependencies each service's failed requests called."""
    _require(defects, "defects", _DEFECT_COLUMNS, "defects.defects")
    _require(anomalies, "anomalies", _ANOMALY_COLUMNS, "defects.anomalies")
    _require(windows, "windows", _WINDOW_COLUMNS, "signals.service_windows")
    _require(deployments, "deployments", _DEPLOYMENT_COLUMNS, "raw.deployments")
    if max_candidates < 1:
        raise RcaInputError(f"max_candidates must be at least 1, got {max_candidates}")
    if defects.height == 0:
        return empty_root_causes()
    calibrator = calibrator or Calibrator()
    topology = service_topology(graph)
    if "template_id" not in anomalies.columns:
        anomalies = anomalies.with_columns(pl.lit(None, dtype=pl.String).alias("template_id"))
    window = _window_length(windows)
    horizon = windows["window_start"].max() if windows.height else None  # the last window there is data for
    flagged = anomalies.filter(pl.col("is_anomaly")).select("service", "window_start")
    logged = (log_events.select("template_id", "timestamp") if log_events is not None
              and {"template_id", "timestamp"} <= set(log_events.columns) else None)
    scales = _detector_scales(anomalies)
    deployments = deployments.filter(pl.col("timestamp").is_not_null() & pl.col("service").is_not_null())
    for column in ("event_type", "change_kind", "version", "previous_version", "commit"):
        if column not in deployments.columns:
            deployments = deployments.with_columns(pl.lit(None, dtype=pl.String).alias(column))
    if "changed_files" not in deployments.columns:
        deployments = deployments.with_columns(pl.lit(None, dtype=pl.List(pl.String)).alias("changed_files"))
    keyed = defects.with_columns(
        pl.coalesce(
            pl.col("incident_id") if "incident_id" in defects.columns else pl.lit(None, dtype=pl.String),
            pl.col("defect_id"),
        ).cast(pl.String).alias("_incident")
    )
    rows: list[dict[str, Any]] = []
    for (incident_id,), incident in keyed.group_by("_incident", maintain_order=True):
        incident = incident.filter(pl.col("first_seen").is_not_null())
        if incident.height == 0:
            continue
        analyses: dict[tuple[datetime, datetime], IncidentAnalysis] = {}
        for defect in incident.iter_rows(named=True):
            # around this defect's own onset: an incident (or a long defect) can span several faults
            first = defect["first_seen"]
            last = min(defect["last_seen"] or first, first + timedelta(minutes=ANALYSIS_SPAN_MIN))
            key = (first, last)
            if key not in analyses:
                pre = timedelta(minutes=PRE_ONSET_MIN)
                scope = incident.filter((pl.col("first_seen") <= last)
                                        & (pl.col("last_seen").fill_null(pl.col("first_seen")) >= first - pre))
                analyses[key] = analyse_incident(
                    str(incident_id), scope, windows=windows, anomalies=anomalies, topology=topology,
                    deployments=deployments, log_events=log_events, lookback=lookback, scales=scales,
                    window=window, first=first, last=last, request_calls=request_calls,
                )
            analysis = analyses[key]
            ranked = _rank_for_defect(defect, analysis, deployments, lookback, window, max_candidates)
            # the symptom's end: the last of the incident's defects on the same service (one failure can
            # show as several defects when its signal pauses)
            ended = incident.filter(pl.col("service") == defect["service"])["last_seen"].max()
            ranked = [_unblamed_if_in_place(c, defect, ended, analysis, deployments, flagged, logged,
                                            horizon, window) for c in ranked]
            confidences = calibrator.predict([c.score for c in ranked])
            defect_rows = [
                {
                    "defect_id": defect["defect_id"],
                    "incident_id": defect.get("incident_id"),
                    "rank": rank,
                    "service": c.service,
                    "cause_kind": c.cause_kind,
                    "change_id": c.change["change_id"] if c.change else None,
                    "score": round(c.score, 6),
                    "confidence": round(float(conf), 6),
                    "evidence": _evidence_json(c, defect, analysis),
                }
                for rank, (c, conf) in enumerate(zip(ranked, confidences, strict=True), start=1)
            ]
            frame = pl.DataFrame(defect_rows, schema={k: v for k, v in ROOT_CAUSES.items()
                                                      if k != "explanation"})
            explanation = explain_markdown(defect, frame)
            rows.extend({**r, "explanation": explanation} for r in defect_rows)
    if not rows:
        return empty_root_causes()
    return pl.DataFrame(rows, schema=ROOT_CAUSES)


def _window_length(windows: pl.DataFrame) -> timedelta:
    if "window_minutes" in windows.columns and windows.height:
        value = windows["window_minutes"].drop_nulls().median()
        if value:
            return timedelta(minutes=float(value))
    return timedelta(minutes=1)


def _rank_for_defect(defect: dict[str, Any], analysis: IncidentAnalysis, deployments: pl.DataFrame,
                     lookback: timedelta, window: timedelta, max_candidates: int) -> list[Candidate]:
    """The incident's candidates related to this defect's service (itself, what it depends on, what
    sends it traffic), best first; the defect's own service when nothing else is known."""
    service = defect.get("service")
    topo = analysis.topology
    pool = analysis.candidates
    if service and "|test:" in (defect.get("fingerprint") or ""):
        # A failing CI test names its cause: the code (or config) of the versions it tested, whatever
        # else was going on in production; the incident's other candidates follow as context.
        own = _tested_build(defect, deployments)
        others = [c for c in pool.values() if c.service != service and c.score > 0]
        others.sort(key=lambda c: (-c.score, c.onset or datetime.max, c.service))
        return [own, *others][:max_candidates]
    if service and service in topo.node_type and (topo.deps.get(service) or topo.callers.get(service)):
        related = {service} | topo.descendants(service) | topo.ancestors(service)
        chosen = [c for name, c in pool.items() if name in related]
    else:
        chosen = list(pool.values())
    chosen = [c for c in chosen if c.score > 0]
    if not chosen and service:
        # nothing anomalous is known around it: the defect's own service, with its latest change
        considered = _changes_before(deployments, service, defect["first_seen"], lookback, window)
        best = considered[0] if considered else None
        relevance = _relevance(best["minutes_before_onset"], CHANGE_HALF_LIFE_MIN) if best else 0.0
        blamed = best if relevance >= BLAME_MIN_RELEVANCE else None
        features = {"graph_rank": 0.0, "local_root": 0.0, "change": relevance, "onset": 1.0, "magnitude": 0.0}
        score = sum(WEIGHTS[k] * v for k, v in features.items())
        kind = ("config_change" if blamed and (blamed.get("change_kind") or "") == "config"
                else "code_change" if blamed else "infrastructure")
        chosen = [Candidate(service, features, score, kind,
                            {**blamed, "relevance": round(relevance, 3)} if blamed else None,
                            considered[:5], defect["first_seen"], [], 0.0, 0.0, 0.0)]
    chosen.sort(key=lambda c: (-c.score, c.onset or datetime.max, c.service))
    return chosen[:max_candidates]


def _unblamed_if_in_place(c: Candidate, defect: dict[str, Any], ended: datetime | None,
                          analysis: IncidentAnalysis, deployments: pl.DataFrame, flagged: pl.DataFrame,
                          logged: pl.DataFrame | None, horizon: datetime | None, window: timedelta) -> Candidate:
    """``c`` without its blamed change when the defect's symptom was over (``ended``: the last last_seen of
    its incident's defects on its service) while that change was still in place: neither the defect's
    service nor the candidate was anomalous for ``RECOVERY_WINDOWS`` windows after it, within the data,
    nor was the defect's log template logged again (errors that no longer stand out are still errors),
    and the candidate did not change again between its change and the end of that quiet spell (a
    change's effect lasts until it is rolled back or replaced; symptoms that went away by themselves were
    not its doing). A failing CI test's tested build stays blamed."""
    if c.change is None or ended is None or horizon is None or "|test:" in (defect.get("fingerprint") or ""):
        return c
    settled = ended + RECOVERY_WINDOWS * window
    if settled > horizon:
        return c  # not over yet, as far as the data go
    relapsed = flagged.filter(pl.col("service").is_in([c.service, defect.get("service")])
                              & (pl.col("window_start") > ended) & (pl.col("window_start") <= settled))
    if relapsed.height:
        return c
    template = defect.get("template_id")
    if template and logged is not None and logged.filter(
            (pl.col("template_id") == template) & (pl.col("timestamp") > ended)
            & (pl.col("timestamp") <= settled + window)).height:
        return c
    landed = datetime.fromisoformat(c.change["timestamp"])
    replaced = deployments.filter((pl.col("service") == c.service) & (pl.col("timestamp") > landed)
                                  & (pl.col("timestamp") <= settled))
    if replaced.height:
        return c
    state = analysis.states.get(c.service)
    kind = _cause_kind(c.service, state, analysis.topology, None, c.traffic_origin,
                       state.saturation.strength if state else 0.0)
    considered = [{**x, "in_place_after_recovery": True} if x["change_id"] == c.change["change_id"] else x
                  for x in c.changes_considered]
    return replace(c, change=None, cause_kind=kind, changes_considered=considered)


def _tested_build(defect: dict[str, Any], deployments: pl.DataFrame) -> Candidate:
    """The candidate of a failing CI test: its service, blaming the first deployment of a version the
    test failed on (before or after the CI run: CI usually runs before the deploy). A version never
    deployed is a change that has not shipped: a code change with no change id to name."""
    service, onset = defect["service"], defect["first_seen"]
    try:
        versions = orjson.loads(defect.get("evidence") or "{}").get("versions") or []
    except orjson.JSONDecodeError:
        versions = []
    builds = deployments.filter(
        (pl.col("service") == service) & pl.col("version").is_in([str(v) for v in versions])
    ).sort("timestamp")
    change = _change(builds.row(0, named=True), onset) if builds.height else None
    features = {"graph_rank": 0.0, "local_root": 1.0, "change": 1.0 if change else 0.0, "onset": 1.0,
                "magnitude": 0.0}
    kind = "config_change" if change and (change.get("change_kind") or "") == "config" else "code_change"
    return Candidate(service, features, sum(WEIGHTS[k] * v for k, v in features.items()), kind,
                     {**change, "relevance": 1.0} if change else None, [change] if change else [], onset, [],
                     0.0, 0.0, 0.0)


# ------------------------------------------------------------------------------------- evidence


def _evidence_json(c: Candidate, defect: dict[str, Any], analysis: IncidentAnalysis) -> str:
    state = analysis.states.get(c.service)
    service = defect.get("service")
    topo = analysis.topology
    path_nodes = None
    direction = None
    if service and service != c.service:
        path_nodes = topo.path(service, c.service)
        direction = "dependency" if path_nodes else None
        if path_nodes is None:
            path_nodes = topo.path(c.service, service)
            direction = "upstream" if path_nodes else None
    path = []
    if path_nodes:
        for a, b in zip(path_nodes, path_nodes[1:], strict=False):
            edge = topo.deps[a][b]
            path.append({
                "source": a, "target": b, "edge_types": sorted(edge.edge_types),
                "evidence": sorted(edge.evidence),
                "call_count": edge.call_count, "error_count": edge.error_count,
            })
    related = set(path_nodes or []) | {c.service}
    # one entry per service and signal (the strongest detector's), the candidate's own first, then by onset
    strongest: dict[tuple[str, str], dict[str, Any]] = {}
    for name in sorted(related):
        for sig in analysis.states[name].signals if name in analysis.states else []:
            key = (sig["service"], str(sig["signal"]))
            if key not in strongest or (sig.get("strength") or sig.get("score") or 0) > \
                    (strongest[key].get("strength") or strongest[key].get("score") or 0):
                strongest[key] = sig
    signals = sorted(strongest.values(),
                     key=lambda s: (s["service"] != c.service, s.get("onset") or "", s["service"]))
    # the strongest implication per service and reason (a dependency reached both directly and behind
    # another one is implicated twice; the scores take the stronger)
    implicated: dict[tuple[str, str], _Implication] = {}
    for i in sorted(c.implicated_by, key=lambda i: -i.strength):
        implicated.setdefault((i.source, i.reason), i)
    evidence = {
        "features": c.features,
        "weights": WEIGHTS,
        "model": {"name": MODEL_NAME, "version": MODEL_VERSION},
        "onset": _iso(c.onset),
        "onset_order": [{"service": s, "onset": _iso(t)} for s, t in analysis.onset_order[:12]],
        "signals": signals[:30],
        "path_from_defect": path,
        "path_direction": direction,
        "implicated_by": [
            {"service": i.source, "reason": i.reason, "strength": round(i.strength, 3), "detail": i.detail}
            for i in list(implicated.values())[:10]
        ],
        "blind_spot": not topo.traced.get(c.service, False),
        "node_type": topo.node_type.get(c.service, "service"),
        "change": c.change,
        "changes_considered": c.changes_considered,
        "new_error_templates": (state.new_templates[:10] if state else []),
        "traffic_ratio": state.traffic_ratio if state else None,
        "memory_ratio": state.memory_ratio if state else None,
        "restarts": state.restarts if state else 0,
        "incident_window": {"start": _iso(analysis.start), "end": _iso(analysis.end)},
    }
    return orjson.dumps(evidence, default=str).decode()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _round(value: float | None, digits: int = 4) -> float | None:
    if value is None:
        return None
    value = float(value)
    return round(value, digits) if math.isfinite(value) else None


# ------------------------------------------------------------------------------------ markdown


_CAUSE_WORDS = {
    "code_change": "code change",
    "config_change": "configuration change",
    "resource_exhaustion": "resource exhaustion",
    "dependency_failure": "dependency failure",
    "traffic_surge": "traffic surge",
    "infrastructure": "infrastructure / runtime failure",
}


def md(value: object, limit: int = 200) -> str:
    """Telemetry text made inert for markdown: escaped, one line, at most ``limit`` characters."""
    text = "" if value is None else str(value)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return _escape_markdown(text).replace("&", "\\&")


_REASON_WORDS = {
    "dependency_anomaly": "{s} depends on it and its anomaly started no later",
    "named_in_errors": "{s}'s new errors name it",
    "blind_dependency": "{s}'s calls to its dependencies failed and this one has no telemetry of its own",
    "changed_dependency": "{s} started failing right after this dependency changed",
    "traffic_surge": "{s} slowed or failed under the traffic that rose here",
}


def _reason_words(item: dict[str, Any]) -> str:
    text = _REASON_WORDS.get(item.get("reason") or "", "{s}: " + md(item.get("reason")))
    out = text.format(s=md(item.get("service")))
    if item.get("reason") == "named_in_errors" and item.get("detail"):
        out += f" ({md(item['detail'], 160)})"
    return out


def explain_markdown(defect_row: dict[str, Any], candidates: pl.DataFrame) -> str:
    """A short markdown explanation of one defect's ranked causes; every embedded value is escaped."""
    if candidates.height == 0:
        return f"### Root cause of defect {md(defect_row.get('defect_id'))}\n\nNo candidate cause was found."
    ranked = candidates.sort("rank")
    top = ranked.row(0, named=True)
    evidence = orjson.loads(top["evidence"]) if top.get("evidence") else {}
    title = defect_row.get("title") or defect_row.get("defect_type") or ""
    lines = [
        f"### Root cause of defect {md(defect_row.get('defect_id'))}: {md(title, 120)}",
        "",
        f"**Most likely:** {md(top['service'])}: {_CAUSE_WORDS.get(top['cause_kind'], md(top['cause_kind']))}"
        + (f", change {md(top['change_id'])}" if top.get("change_id") else "")
        + f" (confidence {float(top['confidence']):.2f}, score {float(top['score']):.3f})",
        "",
    ]
    change = evidence.get("change")
    if change:
        files = ", ".join(md(f, 80) for f in (change.get("changed_files") or [])[:5])
        version = f" {md(change['version'])}" if change.get("version") else ""
        lines.append(
            f"- Change: {md(change.get('service'))}{version} {md(change.get('event_type') or 'changed')}"
            f" ({md(change.get('change_kind') or 'code')} change)"
            f" {float(change.get('minutes_before_onset') or 0):.1f} min before the onset"
            + (f", commit {md(change.get('commit'), 40)}" if change.get("commit") else "")
            + (f"; files: {files}" if files else "")
        )
    cleared = [c for c in evidence.get("changes_considered") or [] if c.get("in_place_after_recovery")]
    if cleared and not change:
        lines.append(
            f"- Not blamed: {md(cleared[0].get('service'))} change {md(cleared[0].get('change_id'))}"
            f" ({float(cleared[0].get('minutes_before_onset') or 0):.1f} min before the onset) was still in place"
            " when the symptom went away")
    order = evidence.get("onset_order") or []
    if order:
        lines.append("- Onset order: " + " → ".join(
            f"{md(o['service'])} ({md((o.get('onset') or '')[11:16])})" for o in order[:6]))
    signals = evidence.get("signals") or []
    if signals:
        shown = [
            f"{md(s['service'])} {md(s['signal'])}"
            + (f" {s['value']:g} vs {s['expected']:g}" if isinstance(s.get("value"), float | int)
               and isinstance(s.get("expected"), float | int) else "")
            for s in signals[:6]
        ]
        lines.append("- Signals that moved: " + "; ".join(shown))
    path = evidence.get("path_from_defect") or []
    if path:
        lines.append("- Along the service graph: " + ", ".join(
            f"{md(p['source'])} → {md(p['target'])} ({md('/'.join(p['edge_types']))}"
            f" from {md('/'.join(p['evidence']) or 'graph')})" for p in path))
    implicated = evidence.get("implicated_by") or []
    if implicated:
        lines.append("- Why: " + "; ".join(_reason_words(i) for i in implicated[:4]))
    templates = evidence.get("new_error_templates") or []
    if templates:
        lines.append("- New error templates: " + "; ".join(md(t.get("template"), 140) for t in templates[:3]))
    if evidence.get("blind_spot"):
        lines.append("- Blind spot: no traces or logs of its own; inferred from its callers and metrics.")
    if ranked.height > 1:
        lines += ["", "| rank | service | cause | change | confidence |", "| --- | --- | --- | --- | --- |"]
        for r in ranked.iter_rows(named=True):
            lines.append(
                f"| {int(r['rank'])} | {md(r['service'])} | {md(r['cause_kind'])} | {md(r['change_id'] or '')} "
                f"| {float(r['confidence']):.2f} |"
            )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ governance


DECISION_STAGE = "root_causes"
DECISION_NAME = "rank_root_cause"
REVIEW_BELOW_CONFIDENCE = 0.5  # a ranking less sure than this waits for a person (needs_review)


def decision_log_rows(
    root_causes: pl.DataFrame,
    *,
    decided_at: datetime | None = None,
    feature_set_id: str | None = None,
    input_partitions: Sequence[str] = (),
    input_row_counts: dict[str, int] | None = None,
    calibrator: Calibrator | None = None,
    code_version_text: str | None = None,
) -> pl.DataFrame:
    """One ``governance.decision_log`` row per ranked defect: the rank-1 cause as the outcome
    (``service:cause_kind[:change_id]``), its confidence, its explanation as the rationale, the ranker's
    name and version (with the calibration method), the inputs, and status ``proposed`` (``needs_review``
    below ``REVIEW_BELOW_CONFIDENCE``): a person approves, rejects or corrects it through feedback."""
    from qa_assets.lib import governance

    if root_causes.height == 0:
        return pl.DataFrame(schema=governance.DECISION_LOG)
    top = root_causes.filter(pl.col("rank") == 1).sort("defect_id")
    change = (pl.when(pl.col("change_id").is_not_null()).then(pl.lit(":") + pl.col("change_id"))
              .otherwise(pl.lit("")))
    decisions = top.select(
        pl.col("defect_id").alias("subject_id"),
        (pl.col("service") + pl.lit(":") + pl.col("cause_kind") + change).alias("outcome"),
        pl.col("confidence"),
        pl.col("explanation").str.slice(0, 2000).alias("rationale"),
        pl.when(pl.col("confidence") < REVIEW_BELOW_CONFIDENCE).then(pl.lit("needs_review"))
        .otherwise(pl.lit("proposed")).alias("status"),
    )
    return governance.decision_rows(
        decisions, stage=DECISION_STAGE, decision=DECISION_NAME, subject_type="defect", model_name=MODEL_NAME,
        model_version=f"{MODEL_VERSION}+{(calibrator or Calibrator()).method}", feature_set_id=feature_set_id,
        input_partitions=input_partitions, input_row_counts=input_row_counts,
        decided_at=decided_at, code_version_text=code_version_text,
    )


def feedback_labels(root_causes: pl.DataFrame, feedback: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(scores, labels) for ``calibrate`` from people's verdicts on rankings (``governance`` feedback):
    ``approve`` confirms the rank-1 cause; ``correct`` with ``root_cause_service`` names the true root,
    so every listed candidate is labelled by it; ``reject`` (not a defect) labels nothing."""
    needed = {"defect_id", "decision", "root_cause_service", "at"}
    if feedback.height == 0 or not needed <= set(feedback.columns) or root_causes.height == 0:
        return np.array([]), np.array([])
    latest = feedback.sort("at").unique("defect_id", keep="last")
    joined = root_causes.join(latest.select(*needed), on="defect_id", how="inner")
    labelled = joined.filter(
        (pl.col("decision") == "approve")
        | ((pl.col("decision") == "correct") & pl.col("root_cause_service").is_not_null())
    ).with_columns(
        pl.when(pl.col("decision") == "approve").then(pl.col("rank") == 1)
        .otherwise(pl.col("service") == pl.col("root_cause_service")).cast(pl.Int8).alias("_label")
    )
    return labelled["score"].to_numpy(), labelled["_label"].to_numpy()
