"""Defect type and severity.

**Type.** `defect_features` turns defects into a numeric frame (the `features` object that grouping
stores in each defect's evidence, plus a few columns). `rule_type` maps it to a type with a confidence by
rules that encode how an engineer triages (below); they bootstrap the labels. `DefectTypeClassifier` is a
scikit-learn random forest trained on labelled defects (simulator labels, human feedback) over the same
features; `classify_types` uses it where it is at least as sure as the rules, else the rules.

The rules, first match wins:

1. Only CI evidence: **flaky_test** when the same test both passed and failed on one version (or, less
   sure, when the failure is about timing: a wait with a deadline, a race), else the failure's words
   decide (see 5-7) and a plain failing test is an **error_spike** of the build.
2. A service without telemetry of its own, seen through its callers: a datastore or external dependency
   is a **dependency_failure**; a service that stops answering is an **availability** defect.
3. Memory climbing (with or without restarts), or out-of-memory words: **resource_exhaustion**.
4. Restarts, or answers that are "unavailable" (502/503/504, connection refused) without exceptions
   of its own: **availability** (crash loop, pods down).
5. Configuration words in the errors, or errors of the service's own right after a configuration
   change: **config_error**.
6. Validation / deserialization words, or 4xx answers: **data_validation**.
7. Most of the service's failures are its outgoing calls failing, or the errors are timeouts and
   refused connections: **dependency_failure**.
8. Latency up without errors: **latency_regression**.
9. Errors: **error_spike** when the rate jumped, **new_exception** when a never-seen error signature
   appeared without a large rate change.

**Severity** S1 (worst) to S4 from impact: how much of the service's traffic fails (or how much slower
it got), the service's tier in the catalog, restarts/outage, and how long it lasted; the confidence is
how far the impact score sits from the nearest class boundary, lowered when the tier is unknown.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

DEFECT_TYPES = (
    "error_spike",
    "new_exception",
    "latency_regression",
    "availability",
    "resource_exhaustion",
    "dependency_failure",
    "config_error",
    "data_validation",
    "flaky_test",
)
SEVERITIES = ("S1", "S2", "S3", "S4")
RULES_VERSION = "rules-1"  # bump when a rule or a threshold below changes

# The numeric features of a defect, in the order the classifier sees them. Grouping computes them per
# defect (qa_assets.lib.defects.grouping) and stores them under evidence["features"].
FEATURE_COLUMNS: tuple[str, ...] = (
    "error_rate_peak",  # highest error rate of the service in the defect's windows
    "error_rate_baseline",  # the detector's expected error rate
    "error_rate_rise",  # peak - baseline
    "log_errors",  # log1p(failed requests + error log lines)
    "log_requests",  # log1p(requests of the service over the defect)
    "client_failure_share",  # failing outgoing calls / own failures (1: failures come from dependencies)
    "latency_ratio_log2",  # log2(peak p95 / baseline p95), >= 0
    "latency_only",  # latency moved, errors did not
    "memory_ratio_log2",  # log2(peak memory / baseline memory)
    "restarts",  # restarts during the defect
    "cpu_ratio_log2",  # log2(lowest CPU / baseline CPU): negative when CPU dropped (pods down)
    "new_signature",  # a never-seen error template appeared
    "after_change",  # a change of the service landed shortly before the onset
    "after_config_change",  # ... and it was a configuration change
    "kw_dependency",  # share of error texts about timeouts, refused/reset connections, unreachable hosts
    "kw_validation",  # ... about validation, parsing, deserialization, schemas
    "kw_config",  # ... about configuration, settings, properties, feature flags, environment
    "kw_resource",  # ... about memory, heap, OOM, disk, file handles
    "share_4xx",  # share of failed answers with a 4xx status
    "share_unavailable",  # share answered 502/503/504 or refused
    "blind_service",  # the service has no telemetry of its own (seen through callers)
    "datastore",  # the service is a datastore / external dependency
    "test_evidence",  # the defect comes from CI test results only
    "test_flaky",  # the failing test also passed on the same version
    "test_timing",  # the failure depends on timing or concurrency (waits with deadlines, races)
    "duration_log",  # log1p(minutes)
    "error_windows",  # windows with an error anomaly
    "latency_windows",  # windows with a latency anomaly
    "resource_windows",  # windows with a memory/restart anomaly
)

_FEATURE_STRUCT = pl.Struct({name: pl.Float64 for name in FEATURE_COLUMNS})


class ClassifierInputError(ValueError):
    """Features or labels the classifier cannot use; the message says what is wrong and what to do."""


# --------------------------------------------------------------------------------------------- features


def defect_features(defects: pl.DataFrame) -> pl.DataFrame:
    """The numeric feature frame of `defects.defects` rows (FEATURE_COLUMNS, Float64, nulls as 0).

    Features come from each row's evidence JSON (`{"features": {...}}`, written by grouping); a frame
    that already holds the feature columns is passed through (typed and ordered)."""
    if all(c in defects.columns for c in FEATURE_COLUMNS):
        return defects.select(
            [pl.col(c).cast(pl.Float64).fill_null(0.0).fill_nan(0.0) for c in FEATURE_COLUMNS]
        )
    if "evidence" not in defects.columns:
        raise ClassifierInputError(
            "defects have neither the feature columns nor an `evidence` column: pass defects.defects rows "
            "(grouping writes the features into evidence) or a frame with classify.FEATURE_COLUMNS"
        )
    if defects.height == 0:
        return pl.DataFrame(schema={c: pl.Float64 for c in FEATURE_COLUMNS})
    decoded = defects.select(
        pl.col("evidence")
        .fill_null("{}")
        .str.json_decode(pl.Struct({"features": _FEATURE_STRUCT}))
        .struct.field("features")
        .alias("_f")
    ).unnest("_f")
    return decoded.select([pl.col(c).cast(pl.Float64).fill_null(0.0).fill_nan(0.0) for c in FEATURE_COLUMNS])


# ------------------------------------------------------------------------------------------------ rules


def rule_type(defects_features: pl.DataFrame) -> tuple[pl.Series, pl.Series]:
    """Type and confidence for each row of a `defect_features` frame, by the rules in the module doc."""
    f = defect_features(defects_features)
    c = pl.col
    has_errors = c("error_windows") > 0  # anomalous errors, not a noisy peak
    blind_or_store = c("blind_service") > 0
    rules: list[tuple[pl.Expr, str, pl.Expr]] = [
        ((c("test_evidence") > 0) & (c("test_flaky") > 0), "flaky_test", pl.lit(0.9)),
        ((c("test_evidence") > 0) & (c("test_timing") > 0), "flaky_test", pl.lit(0.6)),
        ((c("test_evidence") > 0) & (c("kw_validation") >= 0.3), "data_validation", pl.lit(0.6)),
        ((c("test_evidence") > 0) & (c("kw_config") >= 0.3), "config_error", pl.lit(0.6)),
        ((c("test_evidence") > 0) & (c("kw_dependency") >= 0.3), "dependency_failure", pl.lit(0.55)),
        (c("test_evidence") > 0, "error_spike", pl.lit(0.5)),
        (blind_or_store & (c("datastore") > 0), "dependency_failure", pl.lit(0.8)),
        (blind_or_store, "availability", pl.lit(0.75)),
        (
            (c("memory_ratio_log2") >= 0.3) | ((c("kw_resource") >= 0.3) & (c("restarts") > 0)),
            "resource_exhaustion",
            pl.lit(0.8),
        ),
        (
            (c("restarts") > 0) | ((c("share_unavailable") >= 0.5) & (c("client_failure_share") < 0.5)),
            "availability",
            pl.lit(0.7),
        ),
        (
            has_errors
            & (
                (c("kw_config") >= 0.3)
                | (
                    (c("after_config_change") > 0)
                    & (c("client_failure_share") < 0.5)
                    & (c("kw_dependency") < 0.5)
                )
            ),
            "config_error",
            pl.when(c("kw_config") >= 0.3).then(0.8).otherwise(0.6),
        ),
        (
            has_errors & ((c("kw_validation") >= 0.3) | (c("share_4xx") >= 0.5)),
            "data_validation",
            pl.when(c("kw_validation") >= 0.3).then(0.8).otherwise(0.65),
        ),
        (
            has_errors & ((c("client_failure_share") >= 0.5) | (c("kw_dependency") >= 0.5)),
            "dependency_failure",
            pl.lit(0.3) + 0.5 * pl.max_horizontal(c("client_failure_share"), c("kw_dependency")).clip(0, 1),
        ),
        (
            (c("latency_windows") > 0) & ~has_errors,
            "latency_regression",
            (0.6 + 0.1 * c("latency_ratio_log2")).clip(0.6, 0.9),
        ),
        (
            has_errors & (c("new_signature") > 0) & (c("error_rate_rise") < 0.05),
            "new_exception",
            pl.lit(0.65),
        ),
        (has_errors, "error_spike", (0.55 + c("error_rate_rise")).clip(0.55, 0.85)),
    ]
    kind = pl.lit("error_spike")
    confidence: pl.Expr = pl.lit(0.3)  # nothing matched: an unexplained anomaly, typed weakly
    for condition, name, conf in reversed(rules):
        kind = pl.when(condition).then(pl.lit(name)).otherwise(kind)
        confidence = pl.when(condition).then(conf).otherwise(confidence)
    out = f.select(kind.alias("defect_type"), confidence.cast(pl.Float64).round(4).alias("confidence"))
    return out["defect_type"], out["confidence"]


# ------------------------------------------------------------------------------------------- classifier


@dataclass
class DefectTypeClassifier:
    """A random forest over `defect_features`, trained on labelled defects; picklable.

    `fit` keeps cross-validated metrics in `.metrics` when there are enough labels per type.
    `min_labels`: fewer labelled defects than this and `fit` refuses (use the rules meanwhile)."""

    n_estimators: int = 300
    min_samples_leaf: int = 1
    random_state: int = 0
    min_labels: int = 10
    model: Any = None
    classes_: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def params(self) -> dict[str, Any]:
        return {
            "n_estimators": self.n_estimators,
            "min_samples_leaf": self.min_samples_leaf,
            "random_state": self.random_state,
            "features": ",".join(FEATURE_COLUMNS),
        }

    def fit(
        self,
        features: pl.DataFrame,
        labels: Sequence[str] | pl.Series,
        sample_weight: Sequence[float] | np.ndarray | None = None,
    ) -> DefectTypeClassifier:
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.model_selection import StratifiedKFold, cross_val_predict

        x = defect_features(features).to_numpy()
        y = np.asarray(pl.Series(labels).cast(pl.String).to_list(), dtype=object)
        if x.shape[0] != y.shape[0]:
            raise ClassifierInputError(
                f"{x.shape[0]} feature rows but {y.shape[0]} labels: pass one label per row"
            )
        unknown = sorted({str(v) for v in y if v not in DEFECT_TYPES})
        if unknown:
            raise ClassifierInputError(
                f"labels {unknown} are not defect types; use one of {', '.join(DEFECT_TYPES)}"
            )
        if y.shape[0] < self.min_labels or len(set(y)) < 2:
            raise ClassifierInputError(
                f"{y.shape[0]} labelled defects of {len(set(y))} type(s): the classifier needs at least "
                f"{self.min_labels} labels of 2+ types; keep using classify.rule_type until feedback arrives"
            )
        weights = None if sample_weight is None else np.asarray(sample_weight, dtype=float)

        def forest() -> Any:
            return RandomForestClassifier(
                n_estimators=self.n_estimators,
                min_samples_leaf=self.min_samples_leaf,
                class_weight="balanced",
                random_state=self.random_state,
                n_jobs=1,
            )

        counts = {label: int((y == label).sum()) for label in sorted(set(y))}
        self.metrics = {"labels": int(y.shape[0]), "label_counts": counts}
        folds = min(5, min(counts.values()))
        if folds >= 2:
            predicted = cross_val_predict(
                forest(),
                x,
                y,
                cv=StratifiedKFold(folds, shuffle=True, random_state=self.random_state),
                params={"sample_weight": weights} if weights is not None else None,
            )
            self.metrics["cv_accuracy"] = round(float((predicted == y).mean()), 4)
            self.metrics["cv_folds"] = folds
        self.model = forest().fit(x, y, sample_weight=weights)
        self.classes_ = [str(v) for v in self.model.classes_]
        self.metrics["train_accuracy"] = round(float((self.model.predict(x) == y).mean()), 4)
        return self

    def predict_proba(self, features: pl.DataFrame) -> np.ndarray:
        """Probabilities per row, columns in `classes_` order."""
        if self.model is None:
            raise ClassifierInputError("the classifier is not fitted: call fit(features, labels) first")
        return self.model.predict_proba(defect_features(features).to_numpy())

    def predict(self, features: pl.DataFrame) -> tuple[pl.Series, pl.Series]:
        """Type and confidence (the top class probability) per row."""
        proba = self.predict_proba(features)
        if proba.shape[0] == 0:
            return pl.Series("defect_type", [], dtype=pl.String), pl.Series(
                "confidence", [], dtype=pl.Float64
            )
        best = proba.argmax(axis=1)
        return (
            pl.Series("defect_type", [self.classes_[i] for i in best], dtype=pl.String),
            pl.Series("confidence", np.round(proba.max(axis=1), 4), dtype=pl.Float64),
        )


FEEDBACK_WEIGHT = 3.0  # a person's correction counts as much as three simulator labels


def training_set(defects: pl.DataFrame, labels: pl.DataFrame) -> tuple[pl.DataFrame, pl.Series, np.ndarray]:
    """Features, labels and sample weights for `DefectTypeClassifier.fit`.

    `labels`: `defect_id`, `defect_type` and optionally `source` (`feedback` for human triage, anything
    else - e.g. `simulator` - for generated labels) and `labelled_at`. Per defect the human label wins
    over generated ones, and the latest label over earlier ones; human labels weigh FEEDBACK_WEIGHT.
    Rows keep the order of `defects` (one per labelled defect)."""
    missing = [c for c in ("defect_id", "defect_type") if c not in labels.columns]
    if missing:
        raise ClassifierInputError(
            f"labels lack column(s) {missing}: pass defect_id and defect_type per label"
        )
    ranked = (
        labels.with_columns(
            (pl.col("source") == "feedback").fill_null(False).alias("_human")
            if "source" in labels.columns
            else pl.lit(False).alias("_human"),
            (
                pl.col("labelled_at")
                if "labelled_at" in labels.columns
                else pl.lit(None, dtype=pl.Datetime("us"))
            ).alias("_at"),
            pl.int_range(pl.len()).alias("_order"),
        )
        .sort("_human", "_at", "_order", nulls_last=False)
        .unique("defect_id", keep="last")
    )
    joined = defects.unique("defect_id", keep="last", maintain_order=True).join(
        ranked.select("defect_id", pl.col("defect_type").alias("_label"), "_human"),
        on="defect_id",
        how="inner",
        maintain_order="left",
    )
    weights = np.where(joined["_human"].to_numpy(), FEEDBACK_WEIGHT, 1.0)
    return defect_features(joined), joined["_label"], weights


def classify_types(
    features: pl.DataFrame,
    classifier: DefectTypeClassifier | None = None,
) -> tuple[pl.Series, pl.Series, pl.Series]:
    """Type, confidence and source (`rules` | `classifier`) per row: the classifier where it is at least
    as confident as the rules, the rules elsewhere (and everywhere when there is no classifier)."""
    rule_kind, rule_conf = rule_type(features)
    if classifier is None or classifier.model is None or features.height == 0:
        return rule_kind, rule_conf, pl.Series("source", ["rules"] * features.height, dtype=pl.String)
    model_kind, model_conf = classifier.predict(features)
    use_model = (model_conf >= rule_conf) | (model_kind == rule_kind)
    kind = pl.select(pl.when(use_model).then(model_kind).otherwise(rule_kind).alias("defect_type"))[
        "defect_type"
    ]
    conf = pl.select(pl.when(use_model).then(model_conf).otherwise(rule_conf).alias("confidence"))[
        "confidence"
    ]
    source = pl.select(
        pl.when(use_model).then(pl.lit("classifier")).otherwise(pl.lit("rules")).alias("source")
    )["source"]
    return kind, conf, source


# --------------------------------------------------------------------------------------------- severity


def tier_rank(tier: pl.Expr) -> pl.Expr:
    """1 (most critical) to 3 from catalog tier spellings (`1`, `tier-1`, `tier1`, `critical`, `high`...);
    null when unknown."""
    text = tier.cast(pl.String).str.to_lowercase().str.strip_chars()
    digits = text.str.extract(r"(\d+)").cast(pl.Int64, strict=False)
    word = (
        pl.when(text.str.contains(r"critical|mission|tier.?0|^p0$|high|gold"))
        .then(1)
        .when(text.str.contains(r"medium|standard|silver|normal"))
        .then(2)
        .when(text.str.contains(r"low|bronze|best.?effort|experimental"))
        .then(3)
    )
    return pl.coalesce(word, digits.clip(1, 3)).cast(pl.Int64)


# Impact points and the boundaries between classes. The points are additive (see `severity`).
SEVERITY_BOUNDS = {"S1": 6.0, "S2": 4.5, "S3": 2.5}


def severity(defects: pl.DataFrame, *, tiers: pl.DataFrame | None = None) -> tuple[pl.Series, pl.Series]:
    """Severity (S1 worst .. S4) and a confidence per defect, from impact.

    Points: failure impact up to 3 (peak error rate 50%+ gives 3) or latency impact up to 2 (4x slower
    gives 2), whichever is larger; +1 for restarts or an outage type; tier 1: +2, tier 2: +1, tier 3: 0,
    unknown: +1; duration up to +2 (15 minutes: +1, 45: +2). S1 from 6, S2 from 4.5, S3 from 2.5.
    A flaky test is S4; a failing CI test at most S3; a new exception of low volume at most S3.
    `tiers`: optional service -> tier frame (graph nodes or the catalog) for defects without a tier."""
    if defects.height == 0:
        return pl.Series("severity", [], dtype=pl.String), pl.Series(
            "severity_confidence", [], dtype=pl.Float64
        )
    features = defect_features(defects)
    frame = pl.concat(
        [
            defects.select(
                (pl.col("service") if "service" in defects.columns else pl.lit(None, dtype=pl.String)).alias(
                    "_service"
                ),
                (pl.col("tier") if "tier" in defects.columns else pl.lit(None, dtype=pl.String)).alias(
                    "_tier"
                ),
                (
                    pl.col("defect_type")
                    if "defect_type" in defects.columns
                    else pl.lit(None, dtype=pl.String)
                ).alias("_type"),
                (
                    pl.col("peak_error_rate")
                    if "peak_error_rate" in defects.columns
                    else pl.lit(None, dtype=pl.Float64)
                )
                .cast(pl.Float64)
                .alias("_peak"),
            ),
            features,
        ],
        how="horizontal",
    )
    if tiers is not None and tiers.height and {"service", "tier"} <= set(tiers.columns):
        lookup = (
            tiers.select(
                pl.col("service").alias("_service"), pl.col("tier").cast(pl.String).alias("_tier_lookup")
            )
            .drop_nulls("_service")
            .unique("_service", keep="first")
        )
        frame = frame.join(lookup, on="_service", how="left", maintain_order="left").with_columns(
            pl.coalesce("_tier", "_tier_lookup").alias("_tier")
        )
    c = pl.col
    peak = pl.coalesce(c("_peak"), c("error_rate_peak")).fill_null(0.0)
    failure = (peak / 0.5).clip(0, 1) * 3
    slower = (c("latency_ratio_log2") / 2).clip(0, 1) * 2
    outage = ((c("restarts") > 0) | c("_type").is_in(["availability", "resource_exhaustion"])).cast(
        pl.Float64
    )
    rank = tier_rank(c("_tier"))
    tier_points = (
        pl.when(rank == 1).then(2.0).when(rank == 2).then(1.0).when(rank >= 3).then(0.0).otherwise(1.0)
    )
    minutes = c("duration_log").exp() - 1
    duration = (1 + minutes / 15).log(2).clip(0, 2)
    points = pl.max_horizontal(failure, slower) + outage + tier_points + duration
    cap = (
        pl.when(c("_type") == "flaky_test")
        .then(0.0)
        .when(c("test_evidence") > 0)
        .then(SEVERITY_BOUNDS["S3"])
        .when((c("_type") == "new_exception") & (peak < 0.05))
        .then(SEVERITY_BOUNDS["S3"])
        .otherwise(100.0)
    )
    points = pl.min_horizontal(points, cap)
    label = (
        pl.when(points >= SEVERITY_BOUNDS["S1"])
        .then(pl.lit("S1"))
        .when(points >= SEVERITY_BOUNDS["S2"])
        .then(pl.lit("S2"))
        .when(points >= SEVERITY_BOUNDS["S3"])
        .then(pl.lit("S3"))
        .otherwise(pl.lit("S4"))
    )
    nearest = pl.min_horizontal(*[(points - bound).abs() for bound in SEVERITY_BOUNDS.values()])
    confidence = (0.5 + 0.5 * (nearest / 1.0).clip(0, 1)) * pl.when(rank.is_null()).then(0.85).otherwise(1.0)
    confidence = pl.when(c("_type") == "flaky_test").then(0.8).otherwise(confidence)
    out = frame.select(
        label.alias("severity"),
        confidence.round(4).alias("severity_confidence"),
        points.round(3).alias("severity_points"),
    )
    return out["severity"], out["severity_confidence"]


def log_ratio(value: float | None, baseline: float | None) -> float:
    if not value or not baseline or value <= 0 or baseline <= 0:
        return 0.0
    return math.log2(value / baseline)
