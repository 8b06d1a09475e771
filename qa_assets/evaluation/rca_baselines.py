"""Baselines the root-cause evaluation runs beside `rank_root_causes`, in the same harness on the same
service windows (`signals.service_windows`), so their figures are comparable with ours.

- **naive**: told the fault's start, name the service whose own error rate or latency rose most over
  the first minutes of the fault against the hour before. It is what a person does with a dashboard;
  the issue asks for scenarios where it fails (a callee breaking its callers with healthy spans of its
  own, a root with no telemetry, blips elsewhere).
- **BARO-style** (Pham et al., FSE 2024, "BARO: Robust Root Cause Analysis for Microservices via
  Multivariate Bayesian Online Change Point Detection"): find the anomaly's start from all metrics
  together with Bayesian change-point detection, then score every metric by how far it moved after
  that point in robust units (median and inter-quartile range of the data before it, RobustScaler) and
  rank services by their highest-scoring metric. It is not told the fault time: it sees the windows
  from an hour before the defect's onset to a quarter of an hour after. The change point here is the
  posterior mode of a single mean shift in the standardized metrics (exact for one change in a window,
  which is what one incident is), not the online run-length recursion of BOCPD.

Both see only services with windows: a root that emits nothing is invisible to them, as it is to any
metric-only method.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import polars as pl

# Per-service metrics the baselines read, where present.
METRICS = (
    "error_rate",
    "latency_p50_ms",
    "latency_p95_ms",
    "requests",
    "client_errors",
    "log_error",
    "cpu_utilization",
    "memory_bytes",
    "restarts",
)
NAIVE_MINUTES = 15  # the naive method compares the fault's first 15 minutes with the hour before
BARO_BEFORE = timedelta(minutes=60)
BARO_AFTER = timedelta(minutes=15)
_ERROR_FLOOR = 0.01  # an error rate rising from 0 to 5% counts as a 6-fold rise, not an infinite one


def _frame(windows: pl.DataFrame, start: datetime, end: datetime) -> pl.DataFrame:
    columns = [c for c in METRICS if c in windows.columns]
    return (
        windows.filter((pl.col("window_start") >= start) & (pl.col("window_start") < end))
        .select("service", "window_start", *[pl.col(c).cast(pl.Float64) for c in columns])
        .sort("service", "window_start")
    )


def naive_ranking(windows: pl.DataFrame, fault_start: datetime) -> list[str]:
    """Services by the largest rise of their own error rate or p95 latency (ratio of the fault's first
    `NAIVE_MINUTES` to the hour before), best first."""
    before = _frame(windows, fault_start - timedelta(hours=1), fault_start)
    during = _frame(windows, fault_start, fault_start + timedelta(minutes=NAIVE_MINUTES))
    if during.height == 0:
        return []

    def means(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.group_by("service").agg(
            pl.col("error_rate").mean().alias("err"), pl.col("latency_p95_ms").mean().alias("p95")
        )

    joined = means(during).join(means(before), on="service", how="left", suffix="_before")
    scored = joined.with_columns(
        (
            (pl.col("err").fill_null(0) + _ERROR_FLOOR) / (pl.col("err_before").fill_null(0) + _ERROR_FLOOR)
        ).alias("err_rise"),
        (pl.col("p95") / pl.col("p95_before")).fill_null(1.0).fill_nan(1.0).alias("p95_rise"),
    ).with_columns(pl.max_horizontal("err_rise", "p95_rise").alias("rise"))
    return scored.sort(["rise", "service"], descending=[True, False])["service"].to_list()


def _change_point(series: np.ndarray) -> int:
    """The most probable start of a single mean shift in the rows of `series` (time x metrics, each
    standardized): Gaussian likelihood with unit variance, uniform prior over the split, means
    integrated out with a flat prior. Returns the first index after the change (at least 1)."""
    n = series.shape[0]
    if n < 3:
        return max(n - 1, 1)
    best, best_index = -math.inf, 1
    total = series.sum(axis=0)
    squares = float((series**2).sum())
    prefix = np.cumsum(series, axis=0)
    dims = series.shape[1]
    for k in range(1, n):
        left, right = prefix[k - 1], total - prefix[k - 1]
        # log marginal likelihood up to constants: the fitted means' explained sum of squares minus the
        # Occam factor of each segment's mean (dims/2 * log of its length)
        explained = float((left**2).sum()) / k + float((right**2).sum()) / (n - k)
        log_evidence = 0.5 * (explained - squares) - 0.5 * dims * (math.log(k) + math.log(n - k))
        if log_evidence > best:
            best, best_index = log_evidence, k
    return best_index


def baro_ranking(windows: pl.DataFrame, onset: datetime) -> list[str]:
    """BARO-style ranking around a defect's onset (see the module docstring), best first."""
    frame = _frame(windows, onset - BARO_BEFORE, onset + BARO_AFTER)
    metrics = [c for c in frame.columns if c not in ("service", "window_start")]
    if frame.height == 0 or not metrics:
        return []
    wide = (
        frame.unpivot(index=["service", "window_start"], on=metrics, variable_name="metric")
        .with_columns(pl.concat_str("service", pl.lit("\x1f"), "metric").alias("key"))
        .pivot("key", index="window_start", values="value", aggregate_function="mean")
        .sort("window_start")
    )
    keys = [c for c in wide.columns if c != "window_start" and wide[c].is_not_null().any()]
    if not keys:
        return []
    values = wide.select(keys).to_numpy().astype(float)
    # a missing minute of a metric is its median (a gap is no evidence either way)
    values = np.where(np.isnan(values), np.nanmedian(values, axis=0, keepdims=True), values)
    # Standardize each metric robustly over the whole span for the change-point search.
    median = np.median(values, axis=0)
    spread = np.subtract(*np.percentile(values, [75, 25], axis=0))
    spread = np.where(spread > 0, spread, np.maximum(np.abs(median) * 0.05, 1e-6))
    standardized = np.clip((values - median) / spread, -50, 50)
    moving = standardized.std(axis=0) > 0
    cut = _change_point(standardized[:, moving]) if moving.any() else max(values.shape[0] - 1, 1)
    # RobustScaler fitted before the change point; each metric scores its largest deviation after it.
    fit = values[:cut]
    center = np.median(fit, axis=0)
    iqr = np.subtract(*np.percentile(fit, [75, 25], axis=0))
    iqr = np.where(iqr > 0, iqr, np.maximum(np.abs(center) * 0.05, 1e-6))
    scores = np.abs((values[cut:] - center) / iqr).max(axis=0)
    best: dict[str, float] = {}
    for key, score in zip(keys, scores, strict=True):
        service = key.split("\x1f", 1)[0]
        best[service] = max(best.get(service, 0.0), float(score))
    return [s for s, _ in sorted(best.items(), key=lambda item: (-item[1], item[0]))]
