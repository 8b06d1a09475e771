"""Defects from anomalies: group anomalous windows, error spans, error logs and failing CI tests into
defects with a fingerprint, keep their ids across partitions, and link the symptoms of one incident.

1. **Episodes.** Per service, flagged windows (`defects.anomalies`) closer than `episode_gap_min` form
   an episode. Traffic and CPU moves alone are context (a surge is not a defect) and open none. An episode
   becomes a defect when its evidence persists (`GroupingSettings` says how much per kind of signal):
   errors in two windows, or a recurring never-seen error template that a release of the service brought or
   that came with a rise in errors (alone it is a rare error a healthy system also logs now and then);
   restarts in two windows; memory up for five; latency up in eight windows (five right after a change of
   the service) covering half of the episode - a short slowdown without errors or a change is noise in any
   alerting practice. An episode may begin in the previous partition's last `carry_over_min` (one slowdown
   is not cut in two at the hour).
2. **Fingerprint** = service + signature + operation. The signature is the normalized exception type (or
   HTTP status) of the service's own failed server spans, else of its failing outgoing calls
   (`calls <peer>: ...`), else what its callers saw (a service without telemetry of its own), else its
   dominant error log template, else the kind of signal (latency, memory, restarts). The operation is
   the route or span name most of those failures share. CI failures get `test:<case>` fingerprints.
3. **Continuity.** A previous defect (`previous_defects`: earlier partitions' rows) with the same
   fingerprint, last seen at most `continue_gap_min` before the new onset, continues: same `defect_id`,
   same `first_seen`. Seen again after a longer pause it was resolved, so the new defect is a
   **regression** (status `regression`, evidence names the earlier defect). `defect_id` hashes the
   fingerprint and `first_seen`, so re-running a partition gives the same ids. A defect not seen for
   `resolve_after_min` before `hour_end` is `resolved`; previous open defects that did not continue are
   emitted once more as resolved.
4. **Incidents.** Defects whose active periods overlap (with `link_slack_min`) and whose services are the
   same, adjacent in the service graph (`calls` / `depends_on` edges, either direction) or share a
   dependency without telemetry are one incident (connected components); the incident keeps the id of
   a continuing member, else hashes its earliest defect. Flaky tests stay on their own; a test failing on
   a version joins the incident that started within `ci_link_min` after that version's deployment on the
   same or an adjacent service.
5. **Type and severity** from `classify` (rules, or a trained classifier when one is given).
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import polars as pl

from qa_assets.lib.defects import classify
from qa_assets.lib.frames import require_frame

TS = pl.Datetime("us")

DEFECTS: dict[str, pl.DataType] = {
    "defect_id": pl.String,
    "fingerprint": pl.String,
    "service": pl.String,
    "defect_type": pl.String,
    "severity": pl.String,
    "first_seen": TS,
    "last_seen": TS,
    "confidence": pl.Float64,
    "status": pl.String,  # open | resolved | regression
    "incident_id": pl.String,
    "title": pl.String,
    "exception_type": pl.String,
    "template_id": pl.String,
    "template": pl.String,
    "operation": pl.String,
    "error_count": pl.Int64,
    "affected_requests": pl.Int64,
    "peak_error_rate": pl.Float64,
    "peak_latency_p95_ms": pl.Float64,
    "tier": pl.String,
    "type_model_version": pl.String,
    "evidence": pl.String,  # JSON
}

STATUSES = ("open", "resolved", "regression")

# Signal families: which moves can open a defect. Context (traffic, CPU) is evidence for root-cause
# analysis but never a defect by itself.
_FAMILY_OF_SIGNAL = {
    "error_rate": "errors",
    "errors": "errors",
    "log_error": "errors",
    "error_template_count": "errors",
    "new_template_count": "novelty",
    "client_error_rate": "client",
    "client_errors": "client",
    "latency_p50_ms": "latency",
    "latency_p95_ms": "latency",
    "latency_p99_ms": "latency",
    "memory_bytes": "memory",
    "restarts": "restarts",
    "test_failures": "tests",
    "requests": "context",
    "cpu_utilization": "context",
}
_FAMILY_WORDS = (
    ("latency", ("latency", "duration")),
    ("memory", ("memory", "heap")),
    ("restarts", ("restart", "oom")),
    ("client", ("client",)),
    ("errors", ("error", "fail", "exception", "5xx")),
)

# Words in exception types, messages and templates (any language/runtime), per kind of failure.
KEYWORDS: dict[str, str] = {
    "kw_dependency": r"(?i)time.?out|timed out|deadline|connection|connect\b|connect:|refused|reset by peer|"
    r"unreachable|unavailable|no healthy upstream|econn|socket hang|dial|upstream|broken pipe|"
    r"no route to host|name resolution|pool .*exhausted|circuit.?breaker",
    "kw_validation": r"(?i)validat|unmarshal|deserializ|serializ|schema|contract|constraint|mismatchedinput|"
    r"unprocessable|\b422\b|bad request|malformed|parse error|parsing|cannot decode|decode error|"
    r"invalid (input|request|response|payload|format|json)|should be a valid|must match|must be a",
    # ("property" alone is not configuration: "Cannot read property 'x' of undefined" is a code bug)
    "kw_config": r"(?i)config|setting|for property|feature.?flag|environment variable|\benv\b|"
    r"missing required|no .* found for key|not configured|invalid value",
    "kw_resource": r"(?i)out of memory|outofmemory|\boom|heap|memory|too many open files|no space left|"
    r"disk full|resource exhausted|quota",
}
_UNAVAILABLE_STATUSES = (502, 503, 504)
# Failures that depend on timing (waits with a deadline, concurrency, ordering): the commonest causes of
# flaky tests in empirical studies (async wait, concurrency; Luo et al., FSE 2014).
TIMING_WORDS = (
    r"(?i)within \d+ ?(ms|s|sec|seconds|milliseconds)\b|timed? ?out|timeout|deadline exceeded|"
    r"concurren|race condition|\bracy?\b|out of order|eventually|not yet|async"
)


class GroupingInputError(ValueError):
    """An input frame lacks what grouping needs; the message names it and what to pass."""


@dataclass(frozen=True)
class GroupingSettings:
    episode_gap_min: float = 5.0  # flagged windows closer than this belong to one episode
    carry_over_min: float = 30.0  # the previous partition's last flagged windows an episode may start in
    min_error_windows: int = 2
    min_restart_windows: int = 2
    min_memory_windows: int = 5
    min_latency_windows: int = 8
    min_latency_windows_after_change: int = 5
    load_explains_latency: float = 1.5  # traffic at 1.5x its usual level or more explains a slowdown
    min_latency_density: float = 0.5  # flagged share of the episode's windows
    min_forest_windows: int = 5
    continue_gap_min: float = 15.0  # a pause up to this long does not end a defect
    resolve_after_min: float = 15.0  # not seen for this long before hour_end: resolved
    test_continue_gap_min: float = 24 * 60.0  # CI runs are sparse: a failing test continues for a day
    change_onset_min: float = 10.0  # a change counts for an episode that starts within this long after it
    link_slack_min: float = 5.0
    link_onset_min: float = 15.0  # linked symptoms start within this long of each other (see _incidents)
    two_hop_onset_min: float = 3.0  # services two calls apart link only when their onsets (nearly) coincide
    ci_link_min: float = 60.0
    max_signatures: int = 5  # kept in the evidence per defect
    candidate_share: float = 0.25


# ------------------------------------------------------------------------------------------- utilities


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str).decode()


def _hash(*parts: Any) -> str:
    return hashlib.sha256("|".join("" if p is None else str(p) for p in parts).encode()).hexdigest()[:16]


def defect_id_of(fingerprint: str, first_seen: datetime) -> str:
    """Stable id: the same fingerprint first seen at the same time always gets the same id."""
    return "def-" + _hash(fingerprint, first_seen.replace(microsecond=0).isoformat())


def _family(signal: str | None, detector: str | None) -> str:
    if detector == "test_failure":
        return "tests"
    if detector == "new_error_template":
        return "novelty"
    name = (signal or "").lower()
    family = _FAMILY_OF_SIGNAL.get(name)
    if family is None:
        family = next((f for f, words in _FAMILY_WORDS if any(w in name for w in words)), "context")
    if detector == "isolation_forest":
        return "context" if family == "context" else "forest"
    return family


def _node_name(node_id: str) -> tuple[str, str]:
    kind, _, name = str(node_id).partition(":")
    return (kind, name) if name else ("service", kind)


def _require(
    frame: pl.DataFrame | None, name: str, columns: tuple[str, ...], producer: str
) -> pl.DataFrame | None:
    """An optional input: None stays None, a frame must carry its contract columns."""
    return None if frame is None else require_frame(frame, name, columns, producer, GroupingInputError)


def signature_expr(exception: pl.Expr, message: pl.Expr, status: pl.Expr) -> pl.Expr:
    """The normalized error signature: exception type plus its message with the variable parts (numbers,
    hex ids, masked values, URLs' hosts) replaced by `<*>`; "HTTP <status>" when there is no exception.
    The message matters: generic types (Go's `*errors.errorString`, JavaScript's `Error`) say nothing
    alone."""
    kind = exception.str.strip_chars().str.strip_chars_start("*").str.strip_chars()
    text = (
        message.str.replace_all(r"<[^<>]*>", "<*>")
        .str.replace_all(r"(?i)\b(0x)?[0-9a-f]{8,}\b", "<*>")
        .str.replace_all(r"\d+(\.\d+)?", "<*>")
        .str.replace_all(r"(<\*>[.:/-]?)+<\*>", "<*>")
        .str.strip_chars()
        .str.slice(0, 80)
    )
    with_message = (
        pl.when(text.is_not_null() & (text.str.len_chars() > 0) & (text != kind))
        .then(pl.concat_str([kind, pl.lit(": "), text]))
        .otherwise(kind)
    )
    return (
        pl.when(kind.is_not_null() & (kind.str.len_chars() > 0))
        .then(with_message)
        .when(status.is_not_null())
        .then(pl.concat_str([pl.lit("HTTP "), status.cast(pl.String)]))
        .otherwise(pl.lit("error"))
    )


class _Topology:
    """Undirected service adjacency from `calls` / `depends_on` edges, and what has no telemetry."""

    def __init__(
        self, edges: pl.DataFrame | None, nodes: pl.DataFrame | None, spans_errors: pl.DataFrame | None
    ):
        self.adjacent: dict[str, set[str]] = {}
        self.callers: dict[str, set[str]] = {}
        self.kind: dict[str, str] = {}
        self.tier: dict[str, str | None] = {}
        self.traced: dict[str, bool] = {}
        sources_with_spans: set[str] = set()
        if edges is not None and edges.height:
            rows = edges.filter(pl.col("edge_type").is_in(["calls", "depends_on"])).select(
                "source",
                "target",
                (pl.col("evidence") if "evidence" in edges.columns else pl.lit(None)).alias("ev"),
            )
            for source, target, evidence in rows.iter_rows():
                (sk, s), (tk, t) = _node_name(source), _node_name(target)
                self.kind.setdefault(s, sk)
                self.kind.setdefault(t, tk)
                if s != t:
                    self.adjacent.setdefault(s, set()).add(t)
                    self.adjacent.setdefault(t, set()).add(s)
                    self.callers.setdefault(t, set()).add(s)
                if evidence == "spans":
                    sources_with_spans.add(s)
        if nodes is not None and nodes.height and "node_type" in nodes.columns:
            for row in nodes.filter(pl.col("node_type").is_in(["service", "datastore"])).iter_rows(
                named=True
            ):
                name = row.get("name") or _node_name(row["node_id"])[1]
                self.kind[name] = row["node_type"]
                self.tier[name] = row.get("tier")
                if row.get("traced") is not None:
                    self.traced[name] = bool(row["traced"])
        self._own_spans: set[str] = set()
        self._peers: set[str] = set()
        if spans_errors is not None and spans_errors.height:
            self._own_spans = set(spans_errors["service"].drop_nulls().unique().to_list())
            self._peers = set(spans_errors["peer_service"].drop_nulls().unique().to_list())
        self._sources_with_spans = sources_with_spans

    def neighbours(self, service: str) -> set[str]:
        return self.adjacent.get(service, set())

    def is_datastore(self, service: str) -> bool:
        return self.kind.get(service) == "datastore"

    def is_blind(self, service: str) -> bool:
        """No telemetry of its own: the graph's nodes say so; without them, a service that others call
        (graph edges, callers' spans) but that was never seen emitting a span itself."""
        if service in self.traced:
            return not self.traced[service]
        called = service in self.callers or service in self._peers
        return called and service not in self._own_spans and service not in self._sources_with_spans

    def related(self, a: str, b: str) -> bool:
        if a == b or b in self.neighbours(a):
            return True
        shared = self.neighbours(a) & self.neighbours(b)
        return any(self.is_blind(x) for x in shared)

    def two_hops(self, a: str, b: str) -> bool:
        return bool(self.neighbours(a) & self.neighbours(b))


# ------------------------------------------------------------------------------------------- episodes


def _with_carry_over(anomalies: pl.DataFrame, previous: pl.DataFrame | None, hour_start: datetime,
                     settings: GroupingSettings) -> pl.DataFrame:
    """This partition's anomalies and the previous partition's flagged ones of its last `carry_over_min`."""
    if previous is None or previous.height == 0:
        return anomalies
    _require(previous, "previous_anomalies", ("service", "window_start", "detector", "signal", "is_anomaly"),
             "defects.anomalies")
    since = hour_start - timedelta(minutes=settings.carry_over_min)
    tail = previous.filter(pl.col("is_anomaly").fill_null(False)
                           & pl.col("window_start").cast(TS).is_between(since, hour_start, closed="left"))
    if tail.height == 0:
        return anomalies
    return pl.concat([tail.select([c for c in anomalies.columns if c in tail.columns]), anomalies],
                     how="diagonal_relaxed")


def _episodes(anomalies: pl.DataFrame, window: timedelta, settings: GroupingSettings) -> pl.DataFrame:
    """Per service, runs of flagged windows (gaps up to `episode_gap_min`) with per-family counts."""
    flagged = anomalies.filter(pl.col("is_anomaly").fill_null(False))
    if flagged.height == 0:
        return pl.DataFrame()
    families = [
        _family(s, d) for s, d in zip(flagged["signal"].to_list(), flagged["detector"].to_list(), strict=True)
    ]
    flagged = flagged.with_columns(pl.Series("family", families, dtype=pl.String)).filter(
        ~pl.col("family").is_in(["context", "tests"])
    )
    if flagged.height == 0:
        return pl.DataFrame()
    gap = timedelta(minutes=settings.episode_gap_min)
    flagged = flagged.sort("service", "window_start").with_columns(
        ((pl.col("window_start") - pl.col("window_start").shift(1).over("service")) > gap)
        .fill_null(True)
        .cum_sum()
        .over("service")
        .alias("episode")
    )

    def windows_of(family: str | list[str]) -> pl.Expr:
        families = [family] if isinstance(family, str) else family
        return pl.col("window_start").filter(pl.col("family").is_in(families)).n_unique()

    episodes = flagged.group_by("service", "episode").agg(
        pl.col("window_start").min().alias("start"),
        (pl.col("window_start").max() + window).alias("end"),
        windows_of(["errors", "client", "novelty"]).alias("error_windows"),
        windows_of("errors").alias("own_error_windows"),
        windows_of("client").alias("client_windows"),
        windows_of(["errors", "client"]).alias("rate_windows"),
        windows_of("novelty").alias("novelty_windows"),
        windows_of("latency").alias("latency_windows"),
        windows_of("memory").alias("memory_windows"),
        windows_of("restarts").alias("restart_windows"),
        windows_of("forest").alias("forest_windows"),
        pl.col("after_change_id").drop_nulls().first().alias("after_change_id"),
        pl.col("template_id")
        .filter(pl.col("family") == "novelty")
        .drop_nulls()
        .unique()
        .sort()
        .alias("new_templates"),
        pl.col("signal").unique().sort().alias("signals"),
        pl.col("detector").unique().sort().alias("detectors"),
        pl.struct("signal", "value", "expected")
        .sort_by(
            pl.when(pl.col("family") == "latency").then(pl.col("value")).otherwise(None),
            descending=True,
            nulls_last=True,
        )
        .first()
        .alias("_latency_peak"),
        (pl.col("family") == "latency").any().alias("_has_latency"),
        pl.col("expected").filter(pl.col("signal") == "error_rate").median().alias("error_rate_expected"),
        pl.col("expected").filter(pl.col("signal") == "latency_p95_ms").median().alias("latency_expected"),
        pl.col("expected").filter(pl.col("signal") == "memory_bytes").median().alias("memory_expected"),
        pl.col("value").filter(pl.col("signal") == "error_rate").max().alias("error_rate_peak_flagged"),
        pl.len().alias("flagged_rows"),
        pl.col("details")
        .filter(pl.col("family") == "latency")
        .str.json_path_match("$.load_ratio")
        .cast(pl.Float64, strict=False)
        .median()
        .alias("latency_load_ratio"),
        # minutes from the change to the episode's onset (the change is evidence only when it came first)
        (
            pl.col("details").str.json_path_match("$.minutes_after_change").cast(pl.Float64, strict=False)
            - (pl.col("window_start") - pl.col("window_start").min()).dt.total_seconds() / 60.0
        )
        .min()
        .alias("change_to_onset_min"),
    )
    span = ((pl.col("end") - pl.col("start")).dt.total_seconds() / window.total_seconds()).clip(1)
    fresh_change = pl.col("after_change_id").is_not_null() & (
        pl.col("change_to_onset_min").fill_null(0.0) <= settings.change_onset_min
    )
    latency_needed = (
        pl.when(fresh_change)
        .then(settings.min_latency_windows_after_change)
        .otherwise(settings.min_latency_windows)
    )
    # A slowdown while the service carries far more traffic than usual is load, not a regression.
    under_load = pl.col("latency_load_ratio").fill_null(1.0) >= settings.load_explains_latency
    # A never-seen error template is a defect when a release brought it or the service's errors rose with it;
    # alone it is the first appearance of a rare error a healthy system also logs now and then.
    accept = (
        (pl.col("rate_windows") >= settings.min_error_windows)
        | ((pl.col("novelty_windows") >= 1) & (fresh_change | (pl.col("rate_windows") >= 1)))
        | (pl.col("restart_windows") >= settings.min_restart_windows)
        | (pl.col("memory_windows") >= settings.min_memory_windows)
        | (
            (pl.col("latency_windows") >= latency_needed)
            & ~under_load
            & (pl.col("latency_windows") / span >= settings.min_latency_density)
        )
        | (pl.col("forest_windows") >= settings.min_forest_windows)
    )
    return episodes.with_columns(
        accept.alias("accepted"),
        span.alias("span_windows"),
        pl.when(fresh_change).then(pl.col("after_change_id")).alias("after_change_id"),
    ).sort("start", "service")


# ------------------------------------------------------------------------------------------- evidence


def _keyword_shares(texts: pl.DataFrame) -> dict[str, float]:
    """Share (weighted by count) of error texts matching each keyword family."""
    if texts.height == 0:
        return {k: 0.0 for k in KEYWORDS}
    total = float(texts["n"].sum()) or 1.0
    out = texts.select(
        *[
            (pl.col("text").fill_null("").str.contains(pattern).cast(pl.Float64) * pl.col("n"))
            .sum()
            .alias(name)
            for name, pattern in KEYWORDS.items()
        ]
    )
    return {k: round(float(out[k][0]) / total, 4) for k in KEYWORDS}


def _span_evidence(
    spans: pl.DataFrame, service: str, start: datetime, end: datetime, blind: bool
) -> dict[str, Any]:
    """What the service's failed spans in [start, end) say: own server failures, failing outgoing calls,
    and (for a service without telemetry) its callers' failing calls to it."""
    empty = {"server": pl.DataFrame(), "client": pl.DataFrame(), "seen": pl.DataFrame()}
    if spans.height == 0:
        return empty
    during = spans.filter((pl.col("start_time") >= start) & (pl.col("start_time") < end))
    server_kinds = ["SERVER", "CONSUMER"]
    out = {
        "server": during.filter((pl.col("service") == service) & pl.col("kind").is_in(server_kinds)),
        "client": during.filter((pl.col("service") == service) & ~pl.col("kind").is_in(server_kinds)),
        "seen": during.filter((pl.col("peer_service") == service) & ~pl.col("kind").is_in(server_kinds))
        if blind
        else pl.DataFrame(),
    }
    return out


def _dominant(frame: pl.DataFrame, peer: bool = False) -> tuple[list[dict[str, Any]], int]:
    """Signatures (exception type / HTTP status [+ peer]) with their operations, most frequent first."""
    if frame.height == 0:
        return [], 0
    operation = pl.coalesce(pl.col("http_route"), pl.col("name"))
    if peer:
        operation = pl.col("name")
    keyed = frame.with_columns(
        signature_expr(
            pl.col("exception_type"),
            pl.coalesce("exception_message", "status_message"),
            pl.col("http_status_code"),
        ).alias("_signature"),
        operation.alias("_operation"),
        (pl.col("peer_service") if peer else pl.lit(None, dtype=pl.String)).alias("_peer"),
    )
    grouped = (
        keyed.group_by("_signature", "_peer")
        .agg(
            pl.len().alias("count"),
            pl.col("_operation").drop_nulls().mode().sort().first().alias("operation"),
            pl.col("exception_type").drop_nulls().first().alias("exception_type"),
            pl.coalesce("exception_message", "status_message").drop_nulls().first().alias("message"),
        )
        .sort(["count", "_signature"], descending=[True, False])
    )
    rows = [
        {
            "signature": r["_signature"],
            "peer": r["_peer"],
            "count": r["count"],
            "operation": r["operation"],
            "exception_type": r["exception_type"],
            "message": (r["message"] or "")[:300],
        }
        for r in grouped.iter_rows(named=True)
    ]
    return rows, keyed.height


def _status_shares(frames: list[pl.DataFrame]) -> tuple[float, float]:
    frames = [f for f in frames if f.height]
    if not frames:
        return 0.0, 0.0
    both = pl.concat(
        [
            f.select(
                "http_status_code",
                pl.coalesce("exception_message", "status_message", "exception_type").alias("_text"),
            )
            for f in frames
        ]
    )
    total = both.height
    four = both.filter((pl.col("http_status_code") >= 400) & (pl.col("http_status_code") < 500)).height
    unavailable = both.filter(
        pl.col("http_status_code").is_in(_UNAVAILABLE_STATUSES)
        | pl.col("_text").fill_null("").str.contains(r"(?i)refused|unavailable|no healthy")
    ).height
    return four / total, unavailable / total


def _window_stats(
    windows: pl.DataFrame | None, service: str, start: datetime, end: datetime
) -> dict[str, Any]:
    if windows is None or windows.height == 0:
        return {}
    rows = windows.filter(
        (pl.col("service") == service) & (pl.col("window_start") >= start) & (pl.col("window_start") < end)
    )
    if rows.height == 0:
        return {}

    def col(name: str, dtype: pl.DataType = pl.Float64) -> pl.Expr:
        return pl.col(name).cast(dtype) if name in rows.columns else pl.lit(None, dtype=dtype)

    stats = rows.select(
        col("requests", pl.Int64).sum().alias("requests"),
        col("errors", pl.Int64).sum().alias("errors"),
        col("client_calls", pl.Int64).sum().alias("client_calls"),
        col("client_errors", pl.Int64).sum().alias("client_errors"),
        col("log_error", pl.Int64).sum().alias("log_error"),
        col("restarts", pl.Int64).sum().alias("restarts"),
        (col("errors") / col("requests").clip(1)).filter(col("requests") >= 5).max().alias("peak_error_rate"),
        (col("errors") / col("requests").clip(1)).max().alias("peak_error_rate_any"),
        col("latency_p95_ms").max().alias("peak_latency_p95_ms"),
        col("memory_bytes").max().alias("peak_memory"),
        col("cpu_utilization").min().alias("min_cpu"),
        col("cpu_utilization").median().alias("median_cpu"),
    ).row(0, named=True)
    if stats["peak_error_rate"] is None:
        stats["peak_error_rate"] = stats["peak_error_rate_any"]
    return stats


def _baseline_of(windows: pl.DataFrame | None, service: str, before: datetime, column: str) -> float | None:
    """Median of a window column over the hour before `before` (for ratios when no detector said)."""
    if windows is None or column not in windows.columns:
        return None
    prior = windows.filter(
        (pl.col("service") == service)
        & (pl.col("window_start") < before)
        & (pl.col("window_start") >= before - timedelta(hours=1))
    )
    value = prior[column].drop_nulls().median() if prior.height else None
    return float(value) if value is not None else None


# ------------------------------------------------------------------------------------------ candidates


def _episode_candidates(
    episodes: pl.DataFrame,
    spans: pl.DataFrame,
    log_errors: pl.DataFrame,
    windows: pl.DataFrame | None,
    deployments: pl.DataFrame | None,
    topo: _Topology,
    settings: GroupingSettings,
) -> list[dict[str, Any]]:
    out = []
    change_kind: dict[str, str] = {}
    if deployments is not None and deployments.height and "change_kind" in deployments.columns:
        change_kind = {r[0]: r[1] for r in deployments.select("event_id", "change_kind").iter_rows()}
    for ep in episodes.filter(pl.col("accepted")).iter_rows(named=True):
        service, start, end = ep["service"], ep["start"], ep["end"]
        blind = topo.is_blind(service)
        ev = _span_evidence(spans, service, start, end, blind)
        server, server_n = _dominant(ev["server"])
        client, client_n = _dominant(ev["client"], peer=True)
        seen, seen_n = _dominant(ev["seen"]) if blind else ([], 0)
        logs = (
            log_errors.filter(
                (pl.col("service") == service) & (pl.col("timestamp") >= start) & (pl.col("timestamp") < end)
            )
            if log_errors.height
            else log_errors
        )
        templates = (
            logs.group_by("template_id")
            .agg(
                pl.len().alias("count"),
                pl.col("template").first(),
                pl.col("exception_type").drop_nulls().first(),
            )
            .with_columns(pl.col("template_id").is_in(ep["new_templates"]).alias("new"))
            .sort(["new", "count", "template_id"], descending=[True, True, False])
            if logs.height
            else pl.DataFrame()
        )
        top_template = templates.row(0, named=True) if templates.height else None

        exception_type = template_id = template = operation = None
        # The signature follows what moved: own failures, else failing outgoing calls; a slowdown or a
        # resource problem is not named after the background errors that happen to share its windows.
        own = ep["own_error_windows"] > 0 or ep["novelty_windows"] > 0
        sources: list[str] = []
        if own:
            sources = ["server", "seen", "template", "client"]
        elif ep["client_windows"] > 0:
            sources = ["client", "server"]
        signature = source = None
        for kind in sources:
            if kind == "server" and server:
                top = server[0]
                signature, operation, exception_type = (
                    top["signature"],
                    top["operation"],
                    top["exception_type"],
                )
            elif kind == "client" and client:
                top = client[0]
                signature = f"calls {top['peer'] or 'dependency'}: {top['signature']}"
                operation, exception_type = top["operation"], top["exception_type"]
            elif kind == "seen" and seen:
                top = seen[0]
                signature = f"seen by callers: {top['signature']}"
                operation, exception_type = top["operation"], top["exception_type"]
            elif kind == "template" and top_template is not None:
                signature = f"template:{top_template['template_id']}"
                exception_type = top_template["exception_type"]
            if signature is not None:
                source = {
                    "server": "server_spans",
                    "client": "client_spans",
                    "seen": "caller_spans",
                    "template": "error_logs",
                }[kind]
                break
        if signature is None:
            source = "windows"
            if ep["latency_windows"] >= max(ep["memory_windows"], ep["restart_windows"], 1):
                signature = "latency"
            elif ep["memory_windows"] or ep["restart_windows"]:
                signature = "memory" if ep["memory_windows"] >= ep["restart_windows"] else "restarts"
            else:
                signature = "errors" if ep["error_windows"] else "anomaly"
        if top_template is not None:
            template_id, template = top_template["template_id"], top_template["template"]
            exception_type = exception_type or top_template["exception_type"]

        texts = pl.concat(
            [
                pl.DataFrame(
                    {
                        "text": [f"{r['signature']} {r['message']}" for r in server + client + seen],
                        "n": [r["count"] for r in server + client + seen],
                    },
                    schema={"text": pl.String, "n": pl.Int64},
                ),
                templates.select(
                    pl.concat_str(
                        [pl.col("exception_type").fill_null(""), pl.col("template").fill_null("")],
                        separator=" ",
                    ).alias("text"),
                    pl.col("count").cast(pl.Int64).alias("n"),
                )
                if templates.height
                else pl.DataFrame(schema={"text": pl.String, "n": pl.Int64}),
            ]
        )
        keywords = _keyword_shares(texts)
        share_4xx, share_unavailable = _status_shares([ev["server"], ev["client"], ev["seen"]])
        stats = _window_stats(windows, service, start, end)
        error_count = int(stats.get("errors") or 0) or server_n or seen_n
        client_errors = int(stats.get("client_errors") or client_n or 0)
        own_failures = max(error_count, 1)
        latency_peak = (ep["_latency_peak"] or {}) if ep["_has_latency"] else {}
        latency_expected = ep["latency_expected"] or _baseline_of(windows, service, start, "latency_p95_ms")
        peak_p95 = stats.get("peak_latency_p95_ms") or latency_peak.get("value")
        memory_base = ep["memory_expected"] or _baseline_of(windows, service, start, "memory_bytes")
        cpu_base = _baseline_of(windows, service, start, "cpu_utilization")
        peak_rate = stats.get("peak_error_rate")
        if peak_rate is None:
            peak_rate = ep["error_rate_peak_flagged"]
        baseline_rate = ep["error_rate_expected"] or 0.0
        change_id = ep["after_change_id"]
        minutes = max((end - start).total_seconds() / 60.0, 1.0)
        features = {
            "error_rate_peak": float(peak_rate or 0.0),
            "error_rate_baseline": float(baseline_rate),
            "error_rate_rise": max(0.0, float(peak_rate or 0.0) - float(baseline_rate)),
            "log_errors": math.log1p(error_count + int(stats.get("log_error") or logs.height)),
            "log_requests": math.log1p(int(stats.get("requests") or 0)),
            "client_failure_share": min(1.0, client_errors / own_failures)
            if (error_count or client_errors)
            else 0.0,
            "latency_ratio_log2": max(0.0, classify.log_ratio(peak_p95, latency_expected)),
            "latency_only": float(ep["latency_windows"] > 0 and ep["error_windows"] == 0),
            "memory_ratio_log2": classify.log_ratio(stats.get("peak_memory"), memory_base)
            if ep["memory_windows"]
            else 0.0,
            "restarts": float(stats.get("restarts") or ep["restart_windows"] or 0),
            "cpu_ratio_log2": classify.log_ratio(stats.get("min_cpu"), cpu_base),
            "new_signature": float(bool(ep["new_templates"])),
            "after_change": float(change_id is not None),
            "after_config_change": float(change_id is not None and change_kind.get(change_id) == "config"),
            **keywords,
            "share_4xx": round(share_4xx, 4),
            "share_unavailable": round(share_unavailable, 4),
            "blind_service": float(blind),
            "datastore": float(topo.is_datastore(service)),
            "test_evidence": 0.0,
            "test_flaky": 0.0,
            "duration_log": math.log1p(minutes),
            "error_windows": float(ep["error_windows"]),
            "latency_windows": float(ep["latency_windows"]),
            "resource_windows": float(ep["memory_windows"] + ep["restart_windows"]),
        }
        out.append(
            {
                "kind": "episode",
                "service": service,
                "signature": signature,
                "operation": operation,
                "start": start,
                "end": end,
                "exception_type": exception_type,
                "template_id": template_id,
                "template": template,
                "error_count": int(error_count),
                "affected_requests": int(error_count),
                "peak_error_rate": None if peak_rate is None else float(peak_rate),
                "peak_latency_p95_ms": peak_p95,
                "features": features,
                "after_change_id": change_id,
                # signatures that make up a good part of the episode's failures: a continuing defect whose
                # signature is among them keeps its fingerprint
                "candidates": [
                    r["signature"] for r in server if r["count"] >= settings.candidate_share * server_n
                ]
                + [
                    f"calls {r['peer'] or 'dependency'}: {r['signature']}"
                    for r in client
                    if r["count"] >= settings.candidate_share * client_n
                ]
                + [
                    f"seen by callers: {r['signature']}"
                    for r in seen
                    if r["count"] >= settings.candidate_share * seen_n
                ]
                + ([f"template:{top_template['template_id']}"] if top_template is not None else []),
                "evidence": {
                    "source": source,
                    "signals": ep["signals"],
                    "detectors": ep["detectors"],
                    "windows": {
                        "errors": ep["error_windows"],
                        "latency": ep["latency_windows"],
                        "memory": ep["memory_windows"],
                        "restarts": ep["restart_windows"],
                        "forest": ep["forest_windows"],
                        "span": int(ep["span_windows"]),
                    },
                    "after_change_id": change_id,
                    "server_errors": server[: settings.max_signatures],
                    "client_errors": client[: settings.max_signatures],
                    "seen_by_callers": seen[: settings.max_signatures],
                    "error_templates": templates.head(settings.max_signatures).to_dicts()
                    if templates.height
                    else [],
                    "new_templates": ep["new_templates"],
                    "window_stats": {k: v for k, v in stats.items() if v is not None},
                },
            }
        )
    return out


def _test_candidates(
    failed_tests: pl.DataFrame | None, deployments: pl.DataFrame | None
) -> list[dict[str, Any]]:
    """One candidate per failing test case: flaky when it also passed on the same version."""
    if failed_tests is None or failed_tests.height == 0:
        return []
    tests = failed_tests.with_columns(
        *[
            (pl.col(c) if c in failed_tests.columns else pl.lit(None, dtype=pl.String))
            .cast(pl.String)
            .alias(c)
            for c in ("classname", "version", "message", "failure_type", "details", "suite")
        ],
        pl.col("status").fill_null("").str.to_lowercase().alias("status"),
    ).filter(pl.col("service").is_not_null())
    failed_mask = pl.col("status").is_in(["failed", "error", "failure", "errored"])
    per_version = tests.group_by("service", "classname", "name", "version").agg(
        failed_mask.any().alias("_failed"),
        (pl.col("status") == "passed").any().alias("_passed"),
        failed_mask.sum().alias("_fails"),
        pl.len().alias("_runs"),
    )
    cases = (
        tests.filter(failed_mask)
        .group_by("service", "classname", "name")
        .agg(
            pl.col("timestamp").min().alias("start"),
            pl.col("timestamp").max().alias("end"),
            pl.len().alias("failures"),
            pl.col("version").drop_nulls().unique().sort().alias("versions"),
            pl.col("message").drop_nulls().first().alias("message"),
            pl.col("failure_type").drop_nulls().first().alias("failure_type"),
            pl.col("details").drop_nulls().first().alias("details"),
        )
        .join(
            per_version.group_by("service", "classname", "name").agg(
                (pl.col("_failed") & pl.col("_passed")).any().alias("flaky"),
                pl.col("_runs").sum().alias("runs"),
            ),
            on=["service", "classname", "name"],
            how="left",
            nulls_equal=True,
        )
        .sort("start", "service", "name")
    )
    out = []
    for case in cases.iter_rows(named=True):
        test = f"{case['classname']}::{case['name']}" if case["classname"] else case["name"]
        text = " ".join(
            filter(None, [case["name"], case["message"], case["failure_type"], (case["details"] or "")[:500]])
        )
        keywords = _keyword_shares(pl.DataFrame({"text": [text], "n": [1]}))
        features = {name: 0.0 for name in classify.FEATURE_COLUMNS}
        features.update(keywords)
        timing = bool(re.search(TIMING_WORDS, text))
        features.update(
            test_evidence=1.0,
            test_flaky=float(bool(case["flaky"])),
            test_timing=float(timing),
            log_errors=math.log1p(case["failures"]),
            duration_log=math.log1p(max((case["end"] - case["start"]).total_seconds() / 60.0, 1.0)),
        )
        out.append(
            {
                "kind": "test",
                "service": case["service"],
                "signature": f"test:{test}",
                "operation": test,
                "start": case["start"],
                "end": case["end"] + timedelta(minutes=1),
                "exception_type": case["failure_type"],
                "template_id": None,
                "template": None,
                "error_count": int(case["failures"]),
                "affected_requests": 0,
                "peak_error_rate": None,
                "peak_latency_p95_ms": None,
                "features": features,
                "after_change_id": None,
                "candidates": [],
                "versions": case["versions"],
                "evidence": {
                    "source": "ci_tests",
                    "test": test,
                    "failures": int(case["failures"]),
                    "runs": int(case["runs"] or 0),
                    "flaky": bool(case["flaky"]),
                    "versions": case["versions"],
                    "message": (case["message"] or "")[:300],
                },
            }
        )
    return out


# ---------------------------------------------------------------------------------------- continuity


def _latest_previous(previous: pl.DataFrame | None, hour_start: datetime) -> list[dict[str, Any]]:
    if previous is None or previous.height == 0:
        return []
    rows = (
        previous.filter(pl.col("first_seen") < hour_start).sort("last_seen").unique("defect_id", keep="last")
    )
    return rows.sort("last_seen").to_dicts()


def _continuity(
    candidates: list[dict[str, Any]], previous: list[dict[str, Any]], settings: GroupingSettings
) -> list[dict[str, Any]]:
    """Give each candidate its defect id: continue a recent defect of the same fingerprint, flag a
    returning one as a regression, or open a new one. Candidates are merged when they continue each other."""
    by_fingerprint: dict[str, dict[str, Any]] = {}
    for row in previous:
        by_fingerprint[row["fingerprint"]] = {**row, "_previous": True}
    open_by_service: dict[str, list[dict[str, Any]]] = {}
    for row in previous:
        if row["status"] in ("open", "regression"):
            open_by_service.setdefault(row["service"], []).append(row)
    defects: dict[str, dict[str, Any]] = {}
    for cand in sorted(candidates, key=lambda c: (c["start"], c["service"], c["signature"])):
        gap = timedelta(
            minutes=settings.test_continue_gap_min if cand["kind"] == "test" else settings.continue_gap_min
        )
        # A continuing defect whose dominant signature is among this episode's keeps its fingerprint, so a
        # shift in which exception is most common does not split one defect in two.
        for row in open_by_service.get(cand["service"], []):
            signature = _signature_of(row)
            if row["last_seen"] >= cand["start"] - gap and (
                signature == cand["signature"] or signature in cand["candidates"]
            ):
                cand["signature"], cand["operation"] = signature, row.get("operation")
                break
        fingerprint = "|".join([cand["service"], cand["signature"], cand["operation"] or "*"])
        cand["fingerprint"] = fingerprint
        known = by_fingerprint.get(fingerprint)
        if known is not None and known["last_seen"] >= cand["start"] - gap:
            if known.get("_previous"):
                merged = {
                    **cand,
                    "defect_id": known["defect_id"],
                    "first_seen": known["first_seen"],
                    "previous_incident_id": known.get("incident_id"),
                    "regression_of": _regression_of(known),
                    "continued": True,
                    "error_count": cand["error_count"] + int(known.get("error_count") or 0),
                    "affected_requests": cand["affected_requests"] + int(known.get("affected_requests") or 0),
                }
                merged["last_seen"] = max(cand["end"], known["last_seen"])
                defects[merged["defect_id"]] = merged
                by_fingerprint[fingerprint] = merged
            else:
                _merge_into(known, cand)
            continue
        first_seen = cand["start"]
        row = {
            **cand,
            "defect_id": defect_id_of(fingerprint, first_seen),
            "first_seen": first_seen,
            "last_seen": cand["end"],
            "continued": False,
            "previous_incident_id": None,
            "regression_of": known["defect_id"] if known is not None else None,
        }
        defects[row["defect_id"]] = row
        by_fingerprint[fingerprint] = row
    return list(defects.values())


def _signature_of(row: dict[str, Any]) -> str | None:
    """The signature part of a stored fingerprint (`service|signature|operation`)."""
    fingerprint, service, operation = (
        row["fingerprint"] or "",
        row["service"] or "",
        row.get("operation") or "*",
    )
    head, tail = f"{service}|", f"|{operation}"
    if (
        fingerprint.startswith(head)
        and fingerprint.endswith(tail)
        and len(fingerprint) > len(head) + len(tail)
    ):
        return fingerprint[len(head) : -len(tail)]
    return None


def _regression_of(row: dict[str, Any]) -> str | None:
    if row.get("status") != "regression":
        return None
    try:
        return orjson.loads(row.get("evidence") or "{}").get("regression_of")
    except orjson.JSONDecodeError:
        return None


def _merge_into(target: dict[str, Any], other: dict[str, Any]) -> None:
    """Fold a later candidate of the same fingerprint (within the continuation gap) into `target`."""
    target["last_seen"] = max(target["last_seen"], other["end"])
    target["end"] = max(target["end"], other["end"])
    target["error_count"] += other["error_count"]
    target["affected_requests"] += other["affected_requests"]
    for key in ("peak_error_rate", "peak_latency_p95_ms"):
        values = [v for v in (target.get(key), other.get(key)) if v is not None]
        target[key] = max(values) if values else None
    for name, value in other["features"].items():
        if name in ("after_change", "after_config_change", "error_rate_baseline"):
            continue
        target["features"][name] = max(target["features"].get(name, 0.0), value)
    target["evidence"].setdefault("merged_episodes", []).append(
        {"start": other["start"].isoformat(), "end": other["end"].isoformat()}
    )


# ------------------------------------------------------------------------------------------ incidents


def _incidents(
    defects: list[dict[str, Any]],
    topo: _Topology,
    deployments: pl.DataFrame | None,
    settings: GroupingSettings,
    linked_incidents: frozenset[str] = frozenset(),
) -> None:
    """Set `incident_id` on every defect (connected components of related, overlapping defects).

    `linked_incidents`: earlier partitions' incidents that already hold production defects; a failing test
    of such an incident has found its release's incident and links to nothing later."""
    slack = timedelta(minutes=settings.link_slack_min)
    coincide = timedelta(minutes=settings.two_hop_onset_min)
    parent = list(range(len(defects)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)

    onset_window = timedelta(minutes=settings.link_onset_min)
    production = [i for i, d in enumerate(defects) if d["kind"] == "episode"]
    for x, i in enumerate(production):
        for j in production[x + 1 :]:
            a, b = sorted((defects[i], defects[j]), key=lambda d: d["first_seen"])
            if not (a["start"] - slack <= b["end"] and b["start"] - slack <= a["end"]):
                continue
            gap = b["first_seen"] - a["first_seen"]
            # Symptoms of one incident start close together; a later onset still belongs when it is a
            # caller of the earlier defect's service (failures travel up the call graph, e.g. each OOM kill
            # of a leaking service). Without this, a long symptom at the entry would chain every incident
            # that follows it.
            propagated = a["service"] in topo.neighbours(b["service"]) and b["service"] in topo.callers.get(
                a["service"], set()
            )
            if gap > onset_window and not propagated:
                continue
            if topo.related(a["service"], b["service"]) or (
                gap <= coincide and topo.two_hops(a["service"], b["service"])
            ):
                union(i, j)
    deployed: dict[tuple[str, str], datetime] = {}
    if (
        deployments is not None
        and deployments.height
        and {"service", "version", "timestamp"} <= set(deployments.columns)
    ):
        for service, version, at in (
            deployments.sort("timestamp").select("service", "version", "timestamp").iter_rows()
        ):
            if service and version and at and (service, version) not in deployed:
                deployed[(service, version)] = at
    ci_window = timedelta(minutes=settings.ci_link_min)
    # A test that failed on a version belongs to the incident that version caused once deployed: on the
    # service itself or on its callers (consumers broken by the release). Timing-dependent failures and
    # tests that also passed are flaky, not a release's defect.
    for i, d in enumerate(defects):
        if d["kind"] != "test" or d["features"].get("test_flaky") or d["features"].get("test_timing"):
            continue
        if d.get("previous_incident_id") in linked_incidents:
            continue
        consumers = {d["service"], *topo.callers.get(d["service"], set())}
        for version in d.get("versions") or []:
            at = deployed.get((d["service"], version))
            if at is None:
                continue
            # only defects new in this partition: a continuing one already has its incident
            after = [
                j
                for j in production
                if at <= defects[j]["first_seen"] <= at + ci_window
                and defects[j]["service"] in consumers
                and not defects[j].get("continued")
            ]
            if after:  # the first incident after the release, not every later one
                first = min(defects[j]["first_seen"] for j in after)
                for j in after:
                    if defects[j]["first_seen"] <= first + slack:
                        union(i, j)
    groups: dict[int, list[int]] = {}
    for i in range(len(defects)):
        groups.setdefault(find(i), []).append(i)
    for members in groups.values():
        inherited = sorted(
            (defects[i]["first_seen"], defects[i]["previous_incident_id"])
            for i in members
            if defects[i].get("previous_incident_id")
        )
        if inherited:
            incident = inherited[0][1]
        else:
            earliest = min(members, key=lambda i: (defects[i]["first_seen"], defects[i]["defect_id"]))
            incident = "inc-" + _hash(defects[earliest]["defect_id"])
        for i in members:
            defects[i]["incident_id"] = incident
            defects[i]["evidence"]["incident_services"] = sorted({defects[k]["service"] for k in members})


# ---------------------------------------------------------------------------------------------- main


def group_defects(
    anomalies: pl.DataFrame,
    *,
    log_events: pl.DataFrame | None,
    spans_errors: pl.DataFrame | None,
    failed_tests: pl.DataFrame | None,
    graph_edges: pl.DataFrame | None,
    previous_defects: pl.DataFrame | None,
    hour_end: datetime,
    windows: pl.DataFrame | None = None,
    graph_nodes: pl.DataFrame | None = None,
    deployments: pl.DataFrame | None = None,
    classifier: classify.DefectTypeClassifier | None = None,
    type_model_version: str | None = None,
    settings: GroupingSettings | None = None,
    previous_anomalies: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """`defects.defects` rows (DEFECTS) for one partition ending at `hour_end`.

    `anomalies`: the partition's `defects.anomalies`; `log_events`: `signals.log_events`; `spans_errors`:
    raw.spans rows with an error (status ERROR or HTTP >= 500; SERVER and CLIENT); `failed_tests`:
    raw.test_cases rows (passes included, to tell flaky tests); `graph_edges` / `graph_nodes`: the service
    graph tables; `previous_defects`: earlier partitions' defects.defects rows; `windows`: the partition's
    service windows (impact figures); `deployments`: raw.deployments (to link CI failures to releases);
    `previous_anomalies`: the previous partition's `defects.anomalies` (its last `carry_over_min` count
    toward an episode that runs on into this hour, so a slowdown is not cut in two at the hour)."""
    settings = settings or GroupingSettings()
    if not isinstance(hour_end, datetime):
        raise GroupingInputError(f"hour_end must be a datetime, got {type(hour_end).__name__}")
    if hour_end.tzinfo is not None:  # stored times are naive UTC
        hour_end = hour_end.astimezone(UTC).replace(tzinfo=None)
    hour_start = hour_end - timedelta(hours=1)
    _require(
        anomalies,
        "anomalies",
        ("service", "window_start", "detector", "signal", "is_anomaly"),
        "defects.anomalies",
    )
    spans_errors = _require(
        spans_errors,
        "spans_errors",
        ("service", "kind", "start_time", "exception_type", "http_status_code", "peer_service"),
        "raw.spans",
    )
    log_events = _require(
        log_events, "log_events", ("service", "timestamp", "level", "template_id"), "signals.log_events"
    )
    failed_tests = _require(
        failed_tests, "failed_tests", ("service", "timestamp", "status", "name"), "raw.test_cases"
    )
    previous_defects = _require(
        previous_defects,
        "previous_defects",
        ("defect_id", "fingerprint", "service", "first_seen", "last_seen", "status"),
        "defects.defects",
    )
    window = timedelta(minutes=1)
    if windows is not None and "window_minutes" in windows.columns and windows.height:
        window = timedelta(minutes=int(windows["window_minutes"].drop_nulls().mode().sort()[0] or 1))

    spans = spans_errors if spans_errors is not None else pl.DataFrame()
    if spans.height:
        spans = spans.with_columns(
            *[
                (pl.col(c) if c in spans.columns else pl.lit(None, dtype=pl.String)).cast(pl.String).alias(c)
                for c in ("http_route", "name", "status_message", "exception_message")
            ],
            pl.col("start_time").cast(TS),
        )
    log_errors = pl.DataFrame()
    if log_events is not None and log_events.height:
        exc = (
            pl.col("exception_type")
            if "exception_type" in log_events.columns
            else pl.lit(None, dtype=pl.String)
        )
        # Error lines, and the lines of templates a detector found new (warnings included: rejected
        # requests are usually logged as warnings).
        new_templates = (
            anomalies.filter(
                pl.col("is_anomaly").fill_null(False) & (pl.col("detector") == "new_error_template")
            )["template_id"]
            .drop_nulls()
            .unique()
            if "template_id" in anomalies.columns
            else pl.Series([], dtype=pl.String)
        )
        log_errors = log_events.filter(
            pl.col("level").fill_null("").str.to_uppercase().is_in(["ERROR", "FATAL"])
            | exc.is_not_null()
            | pl.col("template_id").is_in(new_templates.implode())
        ).select(
            "service",
            pl.col("timestamp").cast(TS),
            "template_id",
            (pl.col("template") if "template" in log_events.columns else pl.lit(None, dtype=pl.String)).alias(
                "template"
            ),
            exc.alias("exception_type"),
        )
    topo = _Topology(graph_edges, graph_nodes, spans)

    episodes = _episodes(_with_carry_over(anomalies, previous_anomalies, hour_start, settings), window, settings)
    if episodes.height:  # an episode over before this hour was judged with its own partition
        episodes = episodes.filter(pl.col("end") > hour_start)
    candidates = (
        _episode_candidates(episodes, spans, log_errors, windows, deployments, topo, settings)
        if episodes.height
        else []
    )
    candidates += _test_candidates(failed_tests, deployments)
    previous = _latest_previous(previous_defects, hour_start)
    defects = _continuity(candidates, previous, settings)
    linked = frozenset(
        row["incident_id"]
        for row in previous
        if row.get("incident_id") and "|test:" not in (row["fingerprint"] or "")
    )
    _incidents(defects, topo, deployments, settings, linked)

    resolve_after = timedelta(minutes=settings.resolve_after_min)
    test_resolve = timedelta(minutes=settings.test_continue_gap_min)
    rows = []
    for d in defects:
        quiet = test_resolve if d["kind"] == "test" else resolve_after
        if d["last_seen"] < hour_end - quiet:
            status = "resolved"
        elif d.get("regression_of"):
            status = "regression"
        else:
            status = "open"
        evidence = {
            **d["evidence"],
            "features": {k: round(float(v), 5) for k, v in d["features"].items()},
            "regression_of": d.get("regression_of"),
            "continued": d.get("continued", False),
        }
        rows.append(
            {
                "defect_id": d["defect_id"],
                "fingerprint": d["fingerprint"],
                "service": d["service"],
                "first_seen": d["first_seen"],
                "last_seen": d["last_seen"],
                "status": status,
                "incident_id": d["incident_id"],
                "exception_type": d["exception_type"],
                "template_id": d["template_id"],
                "template": d["template"],
                "operation": d["operation"],
                "error_count": d["error_count"],
                "affected_requests": d["affected_requests"],
                "peak_error_rate": d["peak_error_rate"],
                "peak_latency_p95_ms": d["peak_latency_p95_ms"],
                "tier": topo.tier.get(d["service"]),
                "evidence": _json(evidence),
                "_signature": d["signature"],
            }
        )
    # Previous defects that were still open and did not continue: closed now.
    continued = {d["defect_id"] for d in defects}
    carried = [
        {**{k: row.get(k) for k in DEFECTS}, "status": "resolved"}
        for row in previous
        if row["status"] in ("open", "regression")
        and row["defect_id"] not in continued
        and row["last_seen"] < hour_end - (test_resolve if "|test:" in row["fingerprint"] else resolve_after)
    ]
    parts = []
    if rows:
        fresh = pl.DataFrame(
            rows,
            schema_overrides={c: t for c, t in DEFECTS.items() if c in rows[0]},
            infer_schema_length=None,
        )
        parts.append(
            _classify(fresh, classifier, type_model_version, topo).select(
                [pl.col(c).cast(t) for c, t in DEFECTS.items()]
            )
        )
    if carried:
        parts.append(pl.DataFrame(carried, schema=DEFECTS))
    if not parts:
        return pl.DataFrame(schema=DEFECTS)
    return pl.concat(parts).sort("first_seen", "service", "defect_id")


_TYPE_TITLES = {
    "error_spike": "Error spike",
    "new_exception": "New exception",
    "latency_regression": "Latency regression",
    "availability": "Availability loss",
    "resource_exhaustion": "Resource exhaustion",
    "dependency_failure": "Dependency failure",
    "config_error": "Configuration error",
    "data_validation": "Data/validation error",
    "flaky_test": "Flaky test",
}


def _classify(
    frame: pl.DataFrame,
    classifier: classify.DefectTypeClassifier | None,
    type_model_version: str | None,
    topo: _Topology,
) -> pl.DataFrame:
    if frame.height == 0:
        return frame.with_columns(
            *[
                pl.lit(None, dtype=DEFECTS[c]).alias(c)
                for c in ("defect_type", "severity", "confidence", "title", "type_model_version")
            ]
        )
    features = classify.defect_features(frame)
    kind, confidence, source = classify.classify_types(features, classifier)
    frame = frame.with_columns(
        kind.alias("defect_type"), confidence.alias("confidence"), source.alias("_source")
    )
    tiers = pl.DataFrame(
        {"service": list(topo.tier), "tier": [topo.tier[s] for s in topo.tier]},
        schema={"service": pl.String, "tier": pl.String},
    )
    sev, sev_conf = classify.severity(frame, tiers=tiers)
    model_version = type_model_version or (classify.RULES_VERSION if classifier is None else "classifier")
    frame = frame.with_columns(
        sev.alias("severity"),
        sev_conf.alias("_severity_confidence"),
        pl.when(pl.col("_source") == "classifier")
        .then(pl.lit(model_version))
        .otherwise(pl.lit(classify.RULES_VERSION))
        .alias("type_model_version"),
    )
    titles = []
    evidence = []
    for row in frame.select(
        "defect_type", "service", "_signature", "operation", "evidence", "_severity_confidence", "_source"
    ).iter_rows(named=True):
        kind = _TYPE_TITLES.get(row["defect_type"], row["defect_type"])
        title = f"{kind} in {row['service']}: {row['_signature']}"
        if row["operation"] and row["operation"] not in (row["_signature"] or ""):
            title += f" on {row['operation']}"
        titles.append(title[:300])
        data = orjson.loads(row["evidence"])
        data.update(severity_confidence=row["_severity_confidence"], type_source=row["_source"])
        evidence.append(_json(data))
    return frame.with_columns(
        pl.Series("title", titles, dtype=pl.String), pl.Series("evidence", evidence, dtype=pl.String)
    )
