"""Anomaly detection over `signals.service_windows`: which services misbehave in which windows.

Several detectors look at the same windows, each good at one kind of evidence:

- ``baseline``: per service and signal, a robust baseline learned from trailing history. Counts (server
  errors, failing outgoing calls, restarts) are tested against the service's own trimmed rate with a
  binomial / Poisson tail (low-traffic services are neither ignored nor noisy); continuous signals
  (latency, memory, CPU, traffic) use the median and MAD of their logarithm, per hour of day when the
  history covers that hour on two days or more (daily traffic curves are not anomalies).
  A window with too few requests for a latency percentile of its own is judged on its neighbours' pool.
  A window is flagged by a strong deviation on its own, or by a moderate one sustained over neighbouring
  windows (counts pooled over five windows; continuous signals in runs of three).
- ``isolation_forest``: scikit-learn's IsolationForest over the same signals standardized against their
  baselines, trained on the trailing history: catches windows where several signals move a little together.
- ``error_burst``: ERROR/FATAL log lines out of proportion to the service's log volume.
- ``new_error_template``: error (or warning) log templates never seen before that recur, in every window
  they occur in (novelty needs a known past: nothing is "new" in the first hour of a history, except an
  error template first logged right after a release of its service, once the previous version was known).
- ``test_failure``: failing CI test cases, marked flaky when the same test also passed on the same version.

Changes matter: a window within ``change_lookback_min`` after a deployment or config change of the same
service carries ``after_change_id``, and its thresholds are lowered (a shift right after a change is
evidence, not noise).

Scores are >= 0 and higher means more anomalous: -log10 p for tail tests, robust z for continuous
signals, the isolation-forest anomaly score (0..1) for the forest, and the recurrence for novelty.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

# scipy.stats is imported where it is used: it takes ~1 s, and this module is imported by the code
# location, i.e. by every run worker, forkserver, sensor evaluation and CLI start.

from qa_assets.lib.frames import require_frame

TS = pl.Datetime("us")

ANOMALIES: dict[str, pl.DataType] = {
    "hour": TS,
    "service": pl.String,
    "window_start": TS,
    "detector": pl.String,  # baseline | isolation_forest | error_burst | new_error_template | test_failure
    "signal": pl.String,  # the feature that moved (a service_windows column where there is one)
    "value": pl.Float64,
    "expected": pl.Float64,
    "score": pl.Float64,  # >= 0, higher = more anomalous
    "is_anomaly": pl.Boolean,
    "after_change_id": pl.String,  # a change of the service in the preceding change_lookback_min
    "model_name": pl.String,
    "model_version": pl.String,
    "feature_set_id": pl.String,
    "template_id": pl.String,
    "details": pl.String,  # JSON
}

MODEL_NAME = "defects-window-detector"
DETECTORS = ("baseline", "isolation_forest", "error_burst", "new_error_template", "test_failure")
ERROR_LEVELS = ("ERROR", "FATAL")
WARNING_LEVELS = ("WARN", "WARNING")
FAILED_TEST_STATUSES = ("failed", "error")

# Columns of signals.service_windows the detectors read; absent ones are treated as unknown (null/0).
COUNT_COLUMNS = (
    "requests",
    "errors",
    "client_calls",
    "client_errors",
    "log_count",
    "log_error",
    "new_template_count",
    "restarts",
)
GAUGE_COLUMNS = ("latency_p50_ms", "latency_p95_ms", "cpu_utilization", "memory_bytes")

# Standardized signals the forest sees and drift is measured on: name -> the window column it explains.
FEATURES: dict[str, str] = {
    "z_error_rate": "error_rate",
    "z_client_error_rate": "client_error_rate",
    "z_log_error_ratio": "log_error",
    "z_latency_p95": "latency_p95_ms",
    "z_latency_p50": "latency_p50_ms",
    "z_requests": "requests",
    "z_cpu": "cpu_utilization",
    "z_memory": "memory_bytes",
    "z_restarts": "restarts",
    "z_new_templates": "new_template_count",
}

# Continuous signals with a median/MAD baseline on log scale: (prepared column, window column, floor of the
# robust scale in log units). The floors stop a perfectly flat history from turning jitter into alarms:
# 0.1 in log units is a 10% change.
_LOG_SIGNALS: tuple[tuple[str, str, float], ...] = (
    ("_log_p95", "latency_p95_ms", 0.10),
    ("_log_p50", "latency_p50_ms", 0.10),
    ("_log_requests", "requests", 0.15),
    ("_log_cpu", "cpu_utilization", 0.10),
    ("_log_memory", "memory_bytes", 0.03),
)
# Rates tested as counts: (successes column, trials column, signal name, detector).
_RATE_SIGNALS: tuple[tuple[str, str, str, str], ...] = (
    ("errors", "requests", "error_rate", "baseline"),
    ("client_errors", "client_calls", "client_error_rate", "baseline"),
    ("log_error", "log_count", "log_error", "error_burst"),
)
_SEASONAL = ("_log_requests", "_log_cpu", "_log_p95", "_log_p50")  # signals that follow the daily curve


class DetectorInputError(ValueError):
    """Windows (or a side input) that the detector cannot use; the message says which and what to do."""


@dataclass(frozen=True)
class DetectorSettings:
    """Every threshold in one place (logged as the model's params). Tail thresholds are -log10 p."""

    count_threshold: float = 7.0  # one test per service, window and signal: strict, errors are bursty
    pool_windows: int = 5  # counts pooled over this many neighbouring windows (centred) ...
    wide_pool_windows: int = 15  # ... and over this many, for services with a request or two per window
    pool_consistency: float = 0.5  # ... for windows failing at half the pool's rate or more
    min_rate_rise: float = 0.02  # an error rate must rise by 2 points at least ...
    min_rate_factor: float = 2.0  # ... and to twice its baseline
    rate_floor: float = 0.002  # the least baseline error rate assumed (no history of errors is not 0%)
    trim_threshold: float = 3.0  # history windows beyond this tail are left out of the baseline rate ...
    trim_rounds: int = 3  # ... re-estimated this many times
    log_z_threshold: float = 6.0  # robust z for one window
    log_z_sustained: float = 3.5  # robust z for every window of a run ...
    sustained_windows: int = 3  # ... of at least this many consecutive windows
    min_latency_ratio: float = 1.5  # latency must also be this much above its baseline
    min_latency_requests: int = 3  # percentiles of fewer requests are not trusted
    min_memory_ratio: float = 1.15
    min_traffic_ratio: float = 2.0  # traffic and CPU: only large moves (x2 or /2) are noted
    traffic_poisson_z: float = 4.0  # ... and traffic only when the count is also that many sqrt(expected) away:
    # at 1-3 requests a minute, x2 and /2 are everyday noise, not a surge or a drop
    restart_threshold: float = 2.0  # restarts are rare events: one where the rate says <1% is flagged
    restart_rate_floor: float = 0.01  # per window
    change_lookback_min: float = 30.0
    change_threshold_factor: float = 0.7  # thresholds x0.7 for windows right after a change
    seasonal_min_days: int = 2
    min_service_windows: int = 30  # fewer trained windows: the service is baselined on what is scored
    novelty_warmup_min: float = 60.0  # templates are "new" only after this much known history
    novelty_min_lines: int = 3  # a new error template must recur in the scored frame ...
    novelty_min_warning_lines: int = (
        3  # ... as must a new warning template (rejections are logged as warnings)
    )
    novelty_known_before_change_min: float = 20.0  # ... or after a change this far into the known history
    novelty_horizon_min: float = 120.0  # a template stays new this long after its first line
    forest_estimators: int = 100
    forest_max_samples: int = 512
    forest_quantile: float = 0.995  # the forest flags what scores above 99.5% of the training windows
    forest_min_z: float = 2.5  # ... and moves at least one signal noticeably (explainable flags only)
    forest_max_training_rows: int = 50_000
    random_state: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class WindowDetector:
    """Baselines plus an IsolationForest, fitted on trailing windows; picklable, plain attributes."""

    feature_set_id: str
    settings: DetectorSettings
    baselines: pl.DataFrame  # per service
    seasonal: pl.DataFrame  # per service and hour of day (only slots seen on enough days)
    forest: Any  # sklearn.ensemble.IsolationForest
    forest_threshold: float
    feature_columns: list[str]
    training_summary: dict[str, Any]
    history_start: datetime | None
    history_end: datetime | None
    training_rows: int
    services: list[str] = field(default_factory=list)

    @property
    def params(self) -> dict[str, Any]:
        return {
            **self.settings.to_dict(),
            "feature_set_id": self.feature_set_id,
            "feature_columns": ",".join(self.feature_columns),
            "training_rows": self.training_rows,
            "services": len(self.services),
            "forest_threshold": round(self.forest_threshold, 6),
        }


# --------------------------------------------------------------------------------------------- preparing


def _require_windows(windows: pl.DataFrame, what: str) -> None:
    require_frame(windows, what, ("service", "window_start"),
                  "signals.service_windows (qa_assets.lib.windows.WINDOWS)", DetectorInputError)


def _window_length(windows: pl.DataFrame) -> timedelta:
    if "window_minutes" in windows.columns and windows.height:
        minutes = windows["window_minutes"].drop_nulls()
        if minutes.len():
            return timedelta(minutes=int(minutes.mode().sort()[0]))
    return timedelta(minutes=1)


def _prepare(windows: pl.DataFrame, settings: DetectorSettings) -> pl.DataFrame:
    """Typed counts, logged gauges and the hour-of-day slot; one row per service and window."""
    frame = windows
    for name in COUNT_COLUMNS:
        frame = frame.with_columns(
            (
                pl.col(name).cast(pl.Int64, strict=False)
                if name in frame.columns
                else pl.lit(None, dtype=pl.Int64)
            )
            .fill_null(0)
            .clip(0)
            .alias(name)
        )
    for name in GAUGE_COLUMNS:
        frame = frame.with_columns(
            (
                pl.col(name).cast(pl.Float64, strict=False)
                if name in frame.columns
                else pl.lit(None, dtype=pl.Float64)
            ).alias(name)
        )
    if "latency_source" in frame.columns:
        from_metrics = pl.col("latency_source").fill_null("") == "metrics"
    else:
        from_metrics = pl.lit(False)
    trusted_latency = (pl.col("requests") >= settings.min_latency_requests) | from_metrics

    def log_positive(name: str) -> pl.Expr:
        return pl.when(pl.col(name) > 0).then(pl.col(name).log()).otherwise(None)

    frame = (
        frame.with_columns(pl.col("window_start").cast(TS))
        .unique(["service", "window_start"], keep="last", maintain_order=True)
        .sort("service", "window_start")
    )
    # Latency of a window with too few requests for a percentile of its own is judged on the pool of its
    # neighbours (centred, `pool_windows`): the request-weighted mean of their log latencies, when the
    # pool has `min_latency_requests` requests. A service with a request or two a minute is not blind to
    # a slowdown, and one slow request among a handful moves the pool too little to flag it.
    weight = pl.when((pl.col("requests") > 0) & (pl.col("latency_p50_ms") > 0)).then(
        pl.col("requests").cast(pl.Float64)).otherwise(0.0)
    frame = frame.with_columns(
        weight.alias("_lat_n"),
        (weight * log_positive("latency_p50_ms").fill_null(0.0)).alias("_lat_w50"),
        (weight * log_positive("latency_p95_ms").fill_null(0.0)).alias("_lat_w95"),
    )
    pooled_n = _pooled("_lat_n", settings.pool_windows)
    pooled_ok = (pl.col("requests") > 0) & (pooled_n >= settings.min_latency_requests)

    def latency(name: str, weighted: str) -> pl.Expr:
        return (
            pl.when(trusted_latency).then(log_positive(name))
            .when(pooled_ok).then(_pooled(weighted, settings.pool_windows) / pooled_n)
            .otherwise(None)
        )

    frame = frame.with_columns(
        latency("latency_p95_ms", "_lat_w95").alias("_log_p95"),
        latency("latency_p50_ms", "_lat_w50").alias("_log_p50"),
        pl.col("requests").cast(pl.Float64).log1p().alias("_log_requests"),
        log_positive("cpu_utilization").alias("_log_cpu"),
        log_positive("memory_bytes").alias("_log_memory"),
        pl.col("window_start").dt.hour().cast(pl.Int8).alias("_slot"),
        pl.col("window_start").dt.date().alias("_day"),
    ).drop("_lat_n", "_lat_w50", "_lat_w95")
    return frame


def _tail(k: np.ndarray, n: np.ndarray, p: np.ndarray) -> np.ndarray:
    """-log10 P(X >= k) for X ~ Binomial(n, p); 0 where k == 0."""
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    p = np.clip(np.asarray(p, dtype=float), 1e-12, 1 - 1e-9)
    from scipy import stats

    with np.errstate(divide="ignore", invalid="ignore"):
        log_sf = stats.binom.logsf(k - 1, np.maximum(n, k), p)
    out = -log_sf / math.log(10)
    out = np.where((k > 0) & np.isfinite(out), out, np.where(k > 0, 300.0, 0.0))
    return np.clip(out, 0.0, 300.0)


def _poisson_tail(k: np.ndarray, mu: np.ndarray) -> np.ndarray:
    k = np.asarray(k, dtype=float)
    mu = np.maximum(np.asarray(mu, dtype=float), 1e-9)
    from scipy import stats

    with np.errstate(divide="ignore", invalid="ignore"):
        log_sf = stats.poisson.logsf(k - 1, mu)
    out = -log_sf / math.log(10)
    out = np.where((k > 0) & np.isfinite(out), out, np.where(k > 0, 300.0, 0.0))
    return np.clip(out, 0.0, 300.0)


# --------------------------------------------------------------------------------------------- baselines


def _trimmed_rate(frame: pl.DataFrame, k: str, n: str, settings: DetectorSettings) -> pl.DataFrame:
    """Per service: the pooled rate k/n after leaving out windows whose neighbourhood (the wide pool of
    windows around them) is far in the tail of the current estimate, repeated `trim_rounds` times: an
    incident in the history must not become the baseline, also where one window holds too few requests
    to tell and where the incident takes a good part of the history (the estimate falls each round)."""
    joined = frame.select(
        "service",
        k,
        n,
        _pooled(k, settings.wide_pool_windows).alias("_kw"),
        _pooled(n, settings.wide_pool_windows).alias("_nw"),
    )
    kept = joined
    for _ in range(settings.trim_rounds):
        pooled = kept.group_by("service").agg((pl.col(k).sum() / pl.col(n).sum().clip(1)).alias("_p"))
        scored = joined.join(pooled, on="service", how="left")
        tail = _tail(
            scored["_kw"].to_numpy(),
            scored["_nw"].to_numpy(),
            np.maximum(scored["_p"].fill_null(0).to_numpy(), settings.rate_floor),
        )
        kept = (
            scored.with_columns(pl.Series("_tail", tail))
            .filter(pl.col("_tail") < settings.trim_threshold)
            .drop("_p", "_tail")
        )
    return (
        joined.select("service")
        .unique()
        .join(
            kept.group_by("service").agg(pl.col(k).sum().alias(f"{k}__k"), pl.col(n).sum().alias(f"{n}__n")),
            on="service",
            how="left",
        )
        .with_columns(
            # half an event of prior keeps a history without errors from claiming a 0% rate
            ((pl.col(f"{k}__k").fill_null(0) + 0.5) / (pl.col(f"{n}__n").fill_null(0) + 1.0))
            .clip(settings.rate_floor, 0.999)
            .alias(f"p0_{k}")
        )
        .select("service", f"p0_{k}")
    )


def _median_scale(frame: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    medians = frame.group_by(keys).agg(
        pl.col(column).median().alias(f"med{column}") for column, _, _ in _LOG_SIGNALS
    )
    joined = frame.join(medians, on=keys, how="left")
    scales = joined.group_by(keys).agg(
        *[
            ((pl.col(column) - pl.col(f"med{column}")).abs().median() * 1.4826)
            .clip(floor)
            .fill_null(floor)
            .alias(f"scale{column}")
            for column, _, floor in _LOG_SIGNALS
        ],
        pl.len().alias("_windows"),
    )
    return medians.join(scales, on=keys, how="left")


def _baselines(frame: pl.DataFrame, settings: DetectorSettings) -> tuple[pl.DataFrame, pl.DataFrame]:
    per_service = _median_scale(frame, ["service"])
    for k, n, _, _ in _RATE_SIGNALS:
        per_service = per_service.join(_trimmed_rate(frame, k, n, settings), on="service", how="left")
    restarts = frame.group_by("service").agg(
        (pl.col("restarts").sum() / pl.len()).clip(settings.restart_rate_floor).alias("p0_restarts"),
        pl.col("window_start").min().alias("_first"),
    )
    per_service = per_service.join(restarts, on="service", how="left")
    seasonal = (
        _median_scale(frame, ["service", "_slot"])
        .join(
            frame.group_by("service", "_slot").agg(pl.col("_day").n_unique().alias("_days")),
            on=["service", "_slot"],
            how="left",
        )
        .filter(pl.col("_days") >= settings.seasonal_min_days)
    )
    seasonal = seasonal.select(
        "service", "_slot", *[f"med{c}" for c in _SEASONAL], *[f"scale{c}" for c in _SEASONAL]
    )
    return per_service, seasonal


def _with_baselines(frame: pl.DataFrame, detector: WindowDetector) -> pl.DataFrame:
    """Join each window to its service's baseline; a service the detector has not seen enough of is
    baselined on the scored windows themselves (medians are robust to a minority of bad windows)."""
    settings = detector.settings
    known = detector.baselines.filter(pl.col("_windows") >= settings.min_service_windows)
    unknown = frame.filter(~pl.col("service").is_in(known["service"].implode()))
    own, _ = _baselines(unknown, settings) if unknown.height else (known.clear(), None)
    base = pl.concat(
        [
            known.with_columns(pl.lit("trained").alias("_baseline")),
            own.with_columns(pl.lit("self").alias("_baseline")),
        ],
        how="diagonal_relaxed",
    )
    out = frame.join(base, on="service", how="left")
    if detector.seasonal.height:
        seasonal = detector.seasonal.rename(
            {c: f"{c}_s" for c in detector.seasonal.columns if c not in ("service", "_slot")}
        )
        out = (
            out.join(seasonal, on=["service", "_slot"], how="left")
            .with_columns(
                *[pl.coalesce(f"med{c}_s", f"med{c}").alias(f"med{c}") for c in _SEASONAL],
                *[pl.coalesce(f"scale{c}_s", f"scale{c}").alias(f"scale{c}") for c in _SEASONAL],
                pl.when(pl.col(f"med{_SEASONAL[0]}_s").is_not_null())
                .then(pl.lit("seasonal"))
                .otherwise(pl.col("_baseline"))
                .alias("_baseline"),
            )
            .drop([c for c in seasonal.columns if c.endswith("_s")])
        )
    return out


def _standardize(frame: pl.DataFrame) -> pl.DataFrame:
    """The forest's inputs: every signal as a signed deviation from its baseline, clipped to +-30."""

    def rate_z(k: str, n: str, p0: str) -> pl.Expr:
        rate = pl.col(k) / pl.col(n).clip(1)
        se = (pl.col(p0) * (1 - pl.col(p0)) / pl.col(n).clip(1)).sqrt()
        return pl.when(pl.col(n) > 0).then((rate - pl.col(p0)) / se).otherwise(0.0)

    def log_z(column: str) -> pl.Expr:
        return ((pl.col(column) - pl.col(f"med{column}")) / pl.col(f"scale{column}")).fill_null(0.0)

    z = {
        "z_error_rate": rate_z("errors", "requests", "p0_errors"),
        "z_client_error_rate": rate_z("client_errors", "client_calls", "p0_client_errors"),
        "z_log_error_ratio": rate_z("log_error", "log_count", "p0_log_error"),
        "z_latency_p95": log_z("_log_p95"),
        "z_latency_p50": log_z("_log_p50"),
        "z_requests": log_z("_log_requests"),
        "z_cpu": log_z("_log_cpu"),
        "z_memory": log_z("_log_memory"),
        "z_restarts": (pl.col("restarts") - pl.col("p0_restarts")) / pl.col("p0_restarts").sqrt(),
        "z_new_templates": pl.col("new_template_count").cast(pl.Float64),
    }
    return frame.with_columns(
        expr.fill_null(0.0).fill_nan(0.0).clip(-30.0, 30.0).alias(name) for name, expr in z.items()
    )


def _distribution(values: np.ndarray) -> dict[str, Any]:
    """Summary of one standardized feature: moments, percentiles (KS drift) and decile edges (PSI)."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"count": 0}
    edges = np.unique(np.quantile(values, np.linspace(0.1, 0.9, 9)))
    counts = np.histogram(values, bins=np.concatenate([[-np.inf], edges, [np.inf]]))[0]
    return {
        "count": int(values.size),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
        "p50": float(np.median(values)),
        "p99": float(np.quantile(values, 0.99)),
        "edges": [float(e) for e in edges],
        "proportions": [float(c / values.size) for c in counts],
        "quantiles": [float(v) for v in np.quantile(values, np.linspace(0, 1, 101))],
    }


# ------------------------------------------------------------------------------------------------ fitting


def fit_detector(
    history_windows: pl.DataFrame, feature_set_id: str, *, settings: DetectorSettings | None = None
) -> WindowDetector:
    """Fit per-service baselines and an IsolationForest on trailing `signals.service_windows` rows."""
    from sklearn.ensemble import IsolationForest

    settings = settings or DetectorSettings()
    _require_windows(history_windows, "history_windows")
    if history_windows.height == 0:
        raise DetectorInputError(
            "history_windows is empty: fit the detector on at least one hour of signals.service_windows "
            "(the scored hour itself will do for a first run)"
        )
    frame = _prepare(history_windows, settings)
    baselines, seasonal = _baselines(frame, settings)
    detector = WindowDetector(
        feature_set_id=feature_set_id,
        settings=settings,
        baselines=baselines,
        seasonal=seasonal,
        forest=None,
        forest_threshold=float("inf"),
        feature_columns=list(FEATURES),
        training_summary={},
        history_start=frame["window_start"].min(),
        history_end=frame["window_start"].max(),
        training_rows=frame.height,
        services=sorted(frame["service"].unique().to_list()),
    )
    standardized = _standardize(_with_baselines(frame, detector))
    matrix = standardized.select(detector.feature_columns).to_numpy().astype(np.float64)
    if matrix.shape[0] > settings.forest_max_training_rows:
        rng = np.random.default_rng(settings.random_state)
        matrix_fit = matrix[rng.choice(matrix.shape[0], settings.forest_max_training_rows, replace=False)]
    else:
        matrix_fit = matrix
    forest = IsolationForest(
        n_estimators=settings.forest_estimators,
        max_samples=min(settings.forest_max_samples, matrix_fit.shape[0]),
        random_state=settings.random_state,
        n_jobs=1,
    )
    forest.fit(matrix_fit)
    training_scores = -forest.score_samples(matrix)
    detector.forest = forest
    detector.forest_threshold = float(np.quantile(training_scores, settings.forest_quantile))
    detector.training_summary = {
        "rows": int(matrix.shape[0]),
        "services": len(detector.services),
        "history_start": detector.history_start.isoformat() if detector.history_start else None,
        "history_end": detector.history_end.isoformat() if detector.history_end else None,
        "features": {name: _distribution(matrix[:, i]) for i, name in enumerate(detector.feature_columns)},
        "forest_score": _distribution(training_scores),
    }
    return detector


# ---------------------------------------------------------------------------------------------- detecting


def _changes(
    frame: pl.DataFrame, deployments: pl.DataFrame | None, window: timedelta, settings: DetectorSettings
) -> pl.DataFrame:
    """`after_change_id`: the latest change of the service that landed in the window or in the
    `change_lookback_min` before it, and `_minutes_after_change` from that change to the window's end
    (from the deployments frame, else the windows' own change columns)."""
    lookback = timedelta(minutes=settings.change_lookback_min)
    if (
        deployments is not None
        and deployments.height
        and {"service", "timestamp", "event_id"} <= set(deployments.columns)
    ):
        changes = (
            deployments.select(
                "service",
                pl.col("timestamp").cast(TS).alias("_change_at"),
                pl.col("event_id").alias("_change_id"),
            )
            .drop_nulls(["service", "_change_at"])
            .sort("_change_at")
        )
        keyed = frame.with_columns((pl.col("window_start") + window).alias("_window_end")).sort("_window_end")
        joined = keyed.join_asof(
            changes,
            left_on="_window_end",
            right_on="_change_at",
            by="service",
            strategy="backward",
            check_sortedness=False,
        )
        recent = pl.col("_change_at") >= pl.col("window_start") - lookback
        return (
            joined.with_columns(
                pl.when(recent).then(pl.col("_change_id")).alias("after_change_id"),
                pl.when(recent)
                .then((pl.col("_window_end") - pl.col("_change_at")).dt.total_seconds() / 60.0)
                .alias("_minutes_after_change"),
            )
            .drop("_window_end", "_change_at", "_change_id")
            .sort("service", "window_start")
        )
    if {"last_change_id", "minutes_since_change"} <= set(frame.columns):
        recent = pl.col("minutes_since_change").cast(pl.Float64) <= settings.change_lookback_min
        return frame.with_columns(
            pl.when(recent).then(pl.col("last_change_id")).alias("after_change_id"),
            pl.when(recent)
            .then(pl.col("minutes_since_change").cast(pl.Float64))
            .alias("_minutes_after_change"),
        )
    return frame.with_columns(
        pl.lit(None, dtype=pl.String).alias("after_change_id"),
        pl.lit(None, dtype=pl.Float64).alias("_minutes_after_change"),
    )


def _runs(flag: pl.Expr) -> pl.Expr:
    """Length of the run of consecutive True values each row belongs to (per service; 0 where False)."""
    run_id = (flag != flag.shift(1).over("service")).fill_null(True).cum_sum().over("service")
    return pl.when(flag).then(pl.len().over("service", run_id)).otherwise(0)


def _pooled(column: str, windows: int) -> pl.Expr:
    """Sum over a centred run of `windows` rows of the same service (rows are per window, sorted)."""
    half = windows // 2
    total = pl.col(column)
    for offset in range(1, half + 1):
        total = (
            total
            + pl.col(column).shift(offset).over("service").fill_null(0)
            + pl.col(column).shift(-offset).over("service").fill_null(0)
        )
    return total


def _load_ratio(poisson_z: float) -> pl.Expr:
    """Requests in the window over the service's usual requests (1 = usual load): lets grouping tell a
    slowdown under a traffic surge from a regression. 1 when the count is within `poisson_z` sqrt(usual)
    of the usual: two requests where one is usual is no surge."""
    usual = (pl.col("med_log_requests").exp() - 1).clip(0.5)
    requests = pl.col("requests").cast(pl.Float64)
    return pl.when(_poisson_far(requests, usual, poisson_z)).then(requests / usual).otherwise(1.0).round(3)


def _poisson_far(count: pl.Expr, expected: pl.Expr, z: float) -> pl.Expr:
    """A count at least `z` Poisson standard deviations (sqrt of the expected count, at least 1) from it."""
    return (count - expected).abs() >= z * expected.clip(1.0).sqrt()


def _rate_rows(frame: pl.DataFrame, settings: DetectorSettings) -> list[pl.DataFrame]:
    out = []
    factor = (
        pl.when(pl.col("after_change_id").is_not_null()).then(settings.change_threshold_factor).otherwise(1.0)
    )
    for k, n, signal, detector in _RATE_SIGNALS:
        p0 = f"p0_{k}"
        pooled = frame.select(
            _pooled(k, settings.pool_windows).alias("_k5"),
            _pooled(n, settings.pool_windows).alias("_n5"),
            _pooled(k, settings.wide_pool_windows).alias("_kw"),
            _pooled(n, settings.wide_pool_windows).alias("_nw"),
        )
        p = frame[p0].fill_null(settings.rate_floor).to_numpy()
        single = _tail(frame[k].to_numpy(), frame[n].to_numpy(), p)
        near = _tail(pooled["_k5"].to_numpy(), pooled["_n5"].to_numpy(), p)
        wide = _tail(pooled["_kw"].to_numpy(), pooled["_nw"].to_numpy(), p)
        scored = pl.concat([frame, pooled], how="horizontal").with_columns(
            pl.Series("_single", single),
            pl.Series("_near", near),
            pl.Series("_wide", wide),
            (pl.col(k) / pl.col(n).clip(1)).alias("_rate"),
            (pl.col("_k5") / pl.col("_n5").clip(1)).alias("_rate5"),
            (pl.col("_kw") / pl.col("_nw").clip(1)).alias("_ratew"),
            (settings.count_threshold * factor).alias("_threshold"),
        )

        def big_enough(rate: pl.Expr, p0: str = p0) -> pl.Expr:
            return (rate - pl.col(p0) >= settings.min_rate_rise) & (
                rate >= settings.min_rate_factor * pl.col(p0)
            )

        # A pooled test speaks for a window only when the window itself fails at a rate like the pool's
        # (half of it at least): windows next to a spike do not inherit it, while a service with a request
        # or two per window is judged over enough of them.
        def like(pool_rate: str, k: str = k) -> pl.Expr:
            return (
                (pl.col(k) > 0)
                & big_enough(pl.col("_rate"))
                & (pl.col("_rate") >= settings.pool_consistency * pl.col(pool_rate))
            )

        flagged = (
            ((pl.col("_single") >= pl.col("_threshold")) & big_enough(pl.col("_rate")))
            | (like("_rate5") & (pl.col("_near") >= pl.col("_threshold")) & big_enough(pl.col("_rate5")))
            | (like("_ratew") & (pl.col("_wide") >= pl.col("_threshold")) & big_enough(pl.col("_ratew")))
        )
        rows = (
            scored.filter(pl.col(n) > 0)
            .with_columns(
                pl.lit(detector).alias("detector"),
                pl.lit(signal).alias("signal"),
                pl.col("_rate").alias("value"),
                pl.col(p0).alias("expected"),
                pl.max_horizontal("_single", "_near", "_wide").alias("score"),
                flagged.alias("is_anomaly"),
                pl.struct(
                    pl.col(k).alias("count"),
                    pl.col(n).alias("of"),
                    pl.col("_k5").alias("count_pooled"),
                    pl.col("_n5").alias("of_pooled"),
                    pl.col("_kw").alias("count_wide"),
                    pl.col("_nw").alias("of_wide"),
                    pl.col("_threshold").round(3).alias("threshold"),
                    _load_ratio(settings.traffic_poisson_z).alias("load_ratio"),
                    pl.col("_minutes_after_change").round(2).alias("minutes_after_change"),
                    pl.col("_baseline").alias("baseline"),
                )
                .struct.json_encode()
                .alias("details"),
            )
            .filter(pl.col("is_anomaly"))
        )
        out.append(rows)
    return out


def _log_rows(frame: pl.DataFrame, settings: DetectorSettings) -> list[pl.DataFrame]:
    out = []
    factor = (
        pl.when(pl.col("after_change_id").is_not_null()).then(settings.change_threshold_factor).otherwise(1.0)
    )
    rules = {  # column: (two-sided, least ratio to the baseline)
        "_log_p95": (False, settings.min_latency_ratio),
        "_log_p50": (False, settings.min_latency_ratio),
        "_log_memory": (False, settings.min_memory_ratio),
        "_log_cpu": (True, settings.min_traffic_ratio),
        "_log_requests": (True, settings.min_traffic_ratio),
    }
    for column, signal, _ in _LOG_SIGNALS:
        two_sided, ratio = rules[column]
        z = (pl.col(column) - pl.col(f"med{column}")) / pl.col(f"scale{column}")
        if column == "_log_requests":  # log1p-scaled
            value, expected = pl.col("requests").cast(pl.Float64), pl.col(f"med{column}").exp() - 1
            moved = pl.col(column) - pl.col(f"med{column}")
        else:
            value, expected = pl.col(column).exp(), pl.col(f"med{column}").exp()
            moved = pl.col(column) - pl.col(f"med{column}")
        far = moved.abs() >= math.log(ratio) if two_sided else moved >= math.log(ratio)
        if column == "_log_requests":
            far = far & _poisson_far(value, expected, settings.traffic_poisson_z)
        signed = z.abs() if two_sided else z
        scored = frame.with_columns(signed.alias("_z"), far.fill_null(False).alias("_far"))
        sustained = (pl.col("_z") >= settings.log_z_sustained * factor) & pl.col("_far")
        flagged = ((pl.col("_z") >= settings.log_z_threshold * factor) & pl.col("_far")) | (
            _runs(sustained.fill_null(False)) >= settings.sustained_windows
        )
        rows = (
            scored.with_columns(flagged.fill_null(False).alias("is_anomaly"))
            .filter(pl.col("is_anomaly") & pl.col(column).is_not_null())
            .with_columns(
                pl.lit("baseline").alias("detector"),
                pl.lit(signal).alias("signal"),
                value.alias("value"),
                expected.alias("expected"),
                pl.col("_z").clip(0).alias("score"),
                pl.struct(
                    pl.col("_z").round(3).alias("robust_z"),
                    moved.round(4).alias("log_ratio"),
                    _load_ratio(settings.traffic_poisson_z).alias("load_ratio"),
                    pl.col("_minutes_after_change").round(2).alias("minutes_after_change"),
                    pl.col("_baseline").alias("baseline"),
                )
                .struct.json_encode()
                .alias("details"),
            )
        )
        out.append(rows)
    restarts = frame.filter(pl.col("restarts") > 0)
    if restarts.height:
        score = _poisson_tail(restarts["restarts"].to_numpy(), restarts["p0_restarts"].to_numpy())
        out.append(
            restarts.with_columns(pl.Series("score", score))
            .with_columns(
                pl.lit("baseline").alias("detector"),
                pl.lit("restarts").alias("signal"),
                pl.col("restarts").cast(pl.Float64).alias("value"),
                pl.col("p0_restarts").alias("expected"),
                (pl.col("score") >= settings.restart_threshold).alias("is_anomaly"),
                pl.struct(
                    pl.col("_minutes_after_change").round(2).alias("minutes_after_change"),
                    pl.col("_baseline").alias("baseline"),
                )
                .struct.json_encode()
                .alias("details"),
            )
            .filter(pl.col("is_anomaly"))
        )
    return out


def _forest_rows(frame: pl.DataFrame, detector: WindowDetector) -> pl.DataFrame:
    """A row per scored window: the forest's score, the signal that moved most and what it was."""
    settings = detector.settings
    matrix = frame.select(detector.feature_columns).to_numpy().astype(np.float64)
    scores = -detector.forest.score_samples(matrix) if matrix.shape[0] else np.zeros(0)
    top = np.abs(matrix).argmax(axis=1) if matrix.shape[0] else np.zeros(0, dtype=int)
    top_z = np.abs(matrix)[np.arange(matrix.shape[0]), top] if matrix.shape[0] else np.zeros(0)
    names = np.array(detector.feature_columns)[top] if matrix.shape[0] else np.array([], dtype=str)
    signals = [FEATURES[n] for n in names]
    raw_value = {
        "error_rate": pl.col("errors") / pl.col("requests").clip(1),
        "client_error_rate": pl.col("client_errors") / pl.col("client_calls").clip(1),
        "log_error": pl.col("log_error").cast(pl.Float64),
        "latency_p95_ms": pl.col("latency_p95_ms"),
        "latency_p50_ms": pl.col("latency_p50_ms"),
        "requests": pl.col("requests").cast(pl.Float64),
        "cpu_utilization": pl.col("cpu_utilization"),
        "memory_bytes": pl.col("memory_bytes"),
        "restarts": pl.col("restarts").cast(pl.Float64),
        "new_template_count": pl.col("new_template_count").cast(pl.Float64),
    }
    expected = {
        "error_rate": pl.col("p0_errors"),
        "client_error_rate": pl.col("p0_client_errors"),
        "log_error": pl.col("p0_log_error") * pl.col("log_count"),
        "latency_p95_ms": pl.col("med_log_p95").exp(),
        "latency_p50_ms": pl.col("med_log_p50").exp(),
        "requests": pl.col("med_log_requests").exp() - 1,
        "cpu_utilization": pl.col("med_log_cpu").exp(),
        "memory_bytes": pl.col("med_log_memory").exp(),
        "restarts": pl.col("p0_restarts"),
        "new_template_count": pl.lit(0.0),
    }
    frame = frame.with_columns(
        pl.Series("_signal", signals, dtype=pl.String), pl.Series("score", scores), pl.Series("_top_z", top_z)
    )
    value = pl.lit(None, dtype=pl.Float64)
    exp = pl.lit(None, dtype=pl.Float64)
    for signal in FEATURES.values():
        value = pl.when(pl.col("_signal") == signal).then(raw_value[signal].cast(pl.Float64)).otherwise(value)
        exp = pl.when(pl.col("_signal") == signal).then(expected[signal].cast(pl.Float64)).otherwise(exp)
    contributions = pl.struct(*[pl.col(c).round(2) for c in detector.feature_columns])
    return frame.with_columns(
        pl.lit("isolation_forest").alias("detector"),
        pl.col("_signal").alias("signal"),
        value.alias("value"),
        exp.alias("expected"),
        ((pl.col("score") >= detector.forest_threshold) & (pl.col("_top_z") >= settings.forest_min_z)).alias(
            "is_anomaly"
        ),
        pl.struct(
            pl.lit(round(detector.forest_threshold, 5)).alias("threshold"),
            contributions.alias("robust_z"),
            pl.col("_baseline").alias("baseline"),
        )
        .struct.json_encode()
        .alias("details"),
    )


def _template_rows(
    log_events: pl.DataFrame,
    detector: WindowDetector,
    window: timedelta,
    changes: pl.DataFrame,
    templates: pl.DataFrame | None,
) -> pl.DataFrame:
    """Never-seen error (or warning) templates that recur: a row per service, window and template for
    every window the new template occurs in, so the defect lasts as long as the new failure does.

    A template is new from its first line ever for `novelty_horizon_min` (from the registry's
    `first_seen` when `templates` is given, else from the lines marked `is_new_template`)."""
    settings = detector.settings
    needed = {"service", "timestamp", "level", "template_id", "is_new_template"}
    missing = needed - set(log_events.columns)
    if missing:
        raise DetectorInputError(
            f"log_events lacks column(s) {sorted(missing)}: pass signals.log_events rows"
        )
    if detector.history_start is None:
        return pl.DataFrame(schema=ANOMALIES)
    known_since = detector.history_start + timedelta(minutes=settings.novelty_warmup_min)
    exc = (
        pl.col("exception_type") if "exception_type" in log_events.columns else pl.lit(None, dtype=pl.String)
    )
    template = pl.col("template") if "template" in log_events.columns else pl.lit(None, dtype=pl.String)
    level = pl.col("level").fill_null("").str.to_uppercase()
    every = f"{max(1, int(window.total_seconds() // 60))}m"
    failing = log_events.filter(
        level.is_in([*ERROR_LEVELS, *WARNING_LEVELS]) | exc.is_not_null()
    ).with_columns(
        exc.alias("exception_type"),
        template.alias("template"),
        (level.is_in(ERROR_LEVELS) | exc.is_not_null()).alias("_error"),
        pl.col("timestamp").cast(TS).dt.truncate(every).alias("window_start"),
    )
    # Templates first seen after the history the detector knows, and recently.
    if templates is not None and {"template_id", "first_seen"} <= set(templates.columns):
        first = templates.select(
            "template_id", pl.col("first_seen").cast(TS).dt.truncate(every).alias("_since")
        )
        new = failing.select("service", "template_id").unique().join(first, on="template_id", how="inner")
    else:
        new = (
            failing.filter(pl.col("is_new_template").fill_null(False))
            .group_by("service", "template_id")
            .agg(pl.col("window_start").min().alias("_since"))
        )
    # Inside the warm-up, an error template a release brought is new all the same: first seen right after
    # a change of its service that came `novelty_known_before_change_min` or more into the known history
    # (the previous version was watched that long and never logged it: "new in this release").
    known_before_change = detector.history_start + timedelta(minutes=settings.novelty_known_before_change_min)
    change_at = pl.col("window_start") + window - pl.duration(seconds=pl.col("_minutes_after_change") * 60.0)
    released = changes.filter(pl.col("after_change_id").is_not_null()
                              & pl.col("_minutes_after_change").is_not_null()).select(
        "service", pl.col("window_start").alias("_since"), (change_at >= known_before_change).alias("_released"))
    new = (
        new.join(released, on=["service", "_since"], how="left")
        .with_columns(
            ((pl.col("_since") < known_since) & pl.col("_released").fill_null(False)).alias("_in_release"))
        .filter((pl.col("_since") >= known_since) | pl.col("_in_release"))
        .drop("_released")
    )
    if new.height == 0:
        return pl.DataFrame(schema=ANOMALIES)
    horizon = timedelta(minutes=settings.novelty_horizon_min)
    lines = failing.join(new, on=["service", "template_id"], how="inner").filter(
        (pl.col("window_start") >= pl.col("_since")) & (pl.col("window_start") < pl.col("_since") + horizon)
    )
    recurrence = lines.group_by("service", "template_id").agg(
        pl.len().alias("_lines"), pl.col("_error").any().alias("_is_error"), pl.col("_in_release").first()
    )
    rows = (
        lines.group_by("service", "window_start", "template_id")
        .agg(
            pl.len().alias("_window_lines"),
            pl.col("template").first(),
            pl.col("exception_type").drop_nulls().first(),
            pl.col("level").drop_nulls().first(),
        )
        .join(recurrence, on=["service", "template_id"], how="left")
        .join(changes.drop("_minutes_after_change"), on=["service", "window_start"], how="left")
    )
    needed_lines = (
        pl.when(pl.col("_is_error"))
        .then(settings.novelty_min_lines)
        .otherwise(settings.novelty_min_warning_lines)
    )
    return rows.with_columns(
        pl.col("window_start").dt.truncate("1h").alias("hour"),
        pl.lit("new_error_template").alias("detector"),
        pl.lit("new_template_count").alias("signal"),
        pl.col("_window_lines").cast(pl.Float64).alias("value"),
        pl.lit(0.0).alias("expected"),
        (pl.col("_lines").cast(pl.Float64) + 1).log(2).alias("score"),
        ((pl.col("_lines") >= needed_lines) & (pl.col("_is_error") | ~pl.col("_in_release"))).alias("is_anomaly"),
        pl.struct("template", "exception_type", "level", pl.col("_lines").alias("lines_in_frame"),
                  pl.col("_in_release").alias("new_in_release"))
        .struct.json_encode()
        .alias("details"),
    )


def _test_rows(failed_tests: pl.DataFrame, window: timedelta) -> pl.DataFrame:
    """Failing CI test cases per service and window; `flaky` when a failing test also passed on its
    version."""
    needed = {"service", "timestamp", "status", "name"}
    missing = needed - set(failed_tests.columns)
    if missing:
        raise DetectorInputError(f"failed_tests lacks column(s) {sorted(missing)}: pass raw.test_cases rows")
    tests = failed_tests.with_columns(
        (pl.col("classname") if "classname" in failed_tests.columns else pl.lit(None, dtype=pl.String)).alias(
            "classname"
        ),
        (pl.col("version") if "version" in failed_tests.columns else pl.lit(None, dtype=pl.String)).alias(
            "version"
        ),
        pl.col("status").fill_null("").str.to_lowercase().alias("status"),
    ).filter(pl.col("service").is_not_null())
    if tests.height == 0:
        return pl.DataFrame(schema=ANOMALIES)
    outcome = tests.group_by("service", "classname", "name", "version").agg(
        pl.col("status").is_in(FAILED_TEST_STATUSES).any().alias("_failed"),
        (pl.col("status") == "passed").any().alias("_passed"),
    )
    every = f"{max(1, int(window.total_seconds() // 60))}m"
    failed = (
        tests.filter(pl.col("status").is_in(FAILED_TEST_STATUSES))
        .join(
            outcome,
            on=["service", "classname", "name", "version"],
            how="left",
            nulls_equal=True,
        )
        .with_columns(pl.col("timestamp").cast(TS).dt.truncate(every).alias("window_start"))
    )
    if failed.height == 0:
        return pl.DataFrame(schema=ANOMALIES)
    rows = failed.group_by("service", "window_start").agg(
        pl.len().alias("_failures"),
        pl.col("name").unique().sort().alias("tests"),
        pl.col("version").drop_nulls().unique().sort().alias("versions"),
        (pl.col("_failed") & pl.col("_passed")).any().alias("flaky"),
    )
    return rows.with_columns(
        pl.col("window_start").dt.truncate("1h").alias("hour"),
        pl.lit("test_failure").alias("detector"),
        pl.lit("test_failures").alias("signal"),
        pl.col("_failures").cast(pl.Float64).alias("value"),
        pl.lit(0.0).alias("expected"),
        pl.col("_failures").cast(pl.Float64).alias("score"),
        pl.lit(True).alias("is_anomaly"),
        pl.lit(None, dtype=pl.String).alias("after_change_id"),
        pl.struct("tests", "versions", "flaky").struct.json_encode().alias("details"),
    )


def detect(
    windows: pl.DataFrame,
    detector: WindowDetector,
    *,
    log_events: pl.DataFrame | None = None,
    failed_tests: pl.DataFrame | None = None,
    deployments: pl.DataFrame | None = None,
    model_version: str,
    templates: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Score the windows with every detector; returns `defects.anomalies` rows (ANOMALIES).

    Every window gets an `isolation_forest` row (the scored windows); the other detectors add a row where
    they flag something. `log_events`: signals.log_events rows of the same period; `failed_tests`:
    raw.test_cases rows (passes too: they tell a flaky test from a broken one); `deployments`:
    raw.deployments rows covering at least `change_lookback_min` before the windows; `templates`:
    signals.log_templates (their `first_seen` keeps a template new across partitions)."""
    _require_windows(windows, "windows")
    settings = detector.settings
    window = _window_length(windows)
    parts: list[pl.DataFrame] = []
    change_keys = pl.DataFrame(
        schema={"service": pl.String, "window_start": TS, "after_change_id": pl.String,
                "_minutes_after_change": pl.Float64}
    )
    if windows.height:
        frame = _prepare(windows, settings)
        frame = _changes(frame, deployments, window, settings)
        frame = _standardize(_with_baselines(frame, detector))
        if "hour" not in frame.columns:
            frame = frame.with_columns(pl.col("window_start").dt.truncate("1h").alias("hour"))
        change_keys = frame.select("service", "window_start", "after_change_id", "_minutes_after_change")
        parts.extend(_rate_rows(frame, settings))
        parts.extend(_log_rows(frame, settings))
        parts.append(_forest_rows(frame, detector))
    if log_events is not None and log_events.height:
        parts.append(_template_rows(log_events, detector, window, change_keys, templates))
    if failed_tests is not None and failed_tests.height:
        tests = _test_rows(failed_tests, window)
        if tests.height and deployments is not None and deployments.height:
            tests = _changes(tests.drop("after_change_id"), deployments, window, settings)
        parts.append(tests)
    feature_set_id = detector.feature_set_id
    if windows.height and "feature_set_id" in windows.columns:
        ids = windows["feature_set_id"].drop_nulls().unique()
        if ids.len() == 1:
            feature_set_id = ids[0]
    columns = [c for c in ANOMALIES if c not in ("model_name", "model_version", "feature_set_id")]
    shaped = [
        p.with_columns(
            *[pl.lit(None, dtype=ANOMALIES[c]).alias(c) for c in columns if c not in p.columns]
        ).select([pl.col(c).cast(ANOMALIES[c]) for c in columns])
        for p in parts
        if p.height
    ]
    if not shaped:
        return pl.DataFrame(schema=ANOMALIES)
    out = pl.concat(shaped).with_columns(
        pl.lit(MODEL_NAME).alias("model_name"),
        pl.lit(str(model_version)).alias("model_version"),
        pl.lit(feature_set_id).alias("feature_set_id"),
        pl.col("score").fill_nan(0.0).fill_null(0.0).clip(0.0),
    )
    return out.select(list(ANOMALIES)).sort("service", "window_start", "detector", "signal")


# -------------------------------------------------------------------------------------------------- drift


def _psi(expected: list[float], actual: np.ndarray) -> float:
    eps = 1e-4
    e = np.clip(np.asarray(expected, dtype=float), eps, None)
    a = np.clip(actual, eps, None)
    return float(np.sum((a - e) * np.log(a / e)))


def _ks_against_quantiles(quantiles: list[float], values: np.ndarray) -> float:
    """Kolmogorov-Smirnov distance between the sample and the training distribution known by its
    percentiles (within 1% of the distance to the full training sample)."""
    q = np.sort(np.asarray(quantiles, dtype=float))
    values = np.sort(values[np.isfinite(values)])
    if values.size == 0:
        return 0.0
    points = np.unique(np.concatenate([values, q]))
    # Both CDFs as step functions, compared at every jump from the right and from the left; steps keep
    # the mass of tied values (counts, rates that are mostly zero) where it is.
    train_cdf = np.searchsorted(q, points, side="right") / q.size
    train_cdf_left = np.searchsorted(q, points, side="left") / q.size
    sample_cdf = np.searchsorted(values, points, side="right") / values.size
    sample_cdf_left = np.searchsorted(values, points, side="left") / values.size
    return float(
        max(np.max(np.abs(sample_cdf - train_cdf)), np.max(np.abs(sample_cdf_left - train_cdf_left)))
    )


def drift(
    detector: WindowDetector, windows: pl.DataFrame, *, alpha: float = 0.001, min_distance: float = 0.2
) -> dict[str, Any]:
    """Has the population of standardized features moved since training?

    Per feature the Kolmogorov-Smirnov distance between `windows` and the training distribution (kept as
    percentiles in `training_summary`); a feature drifted when the distance passes both the KS critical
    value at `alpha` for this many windows (chance alone rarely gets there) and `min_distance` (a shift
    large enough to matter). The population stability index over the training deciles is reported beside
    it (PSI > 0.25 is the usual alarm, but it is biased upwards on small samples, so it does not decide).
    `drifted`: retrain the detector."""
    _require_windows(windows, "windows")
    result: dict[str, Any] = {
        "method": "ks",
        "alpha": alpha,
        "rows": windows.height,
        "features": {},
        "psi": {},
    }
    if windows.height == 0:
        return {**result, "threshold": None, "max": 0.0, "max_feature": None, "drifted": False}
    from scipy import stats

    critical = float(stats.kstwo.ppf(1 - alpha, windows.height))
    threshold = max(critical, min_distance)
    frame = _standardize(_with_baselines(_prepare(windows, detector.settings), detector))
    for name in detector.feature_columns:
        trained = detector.training_summary.get("features", {}).get(name, {})
        if not trained.get("count"):
            continue
        values = frame[name].to_numpy().astype(float)
        result["features"][name] = round(_ks_against_quantiles(trained["quantiles"], values), 5)
        edges = np.concatenate([[-np.inf], trained["edges"], [np.inf]])
        actual = np.histogram(values, bins=edges)[0] / max(values.size, 1)
        result["psi"][name] = round(_psi(trained["proportions"], actual), 5)
    if result["features"]:
        worst = max(result["features"], key=result["features"].get)
        result.update(max=result["features"][worst], max_feature=worst)
    else:
        result.update(max=0.0, max_feature=None)
    result["threshold"] = round(threshold, 5)
    result["drifted"] = bool(result["max"] > threshold)
    return result
