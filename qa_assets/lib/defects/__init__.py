"""The defects stage's domain logic, as plain functions over polars frames (no Dagster here).

- `anomalies`: `fit_detector` (per-service robust baselines, seasonal by hour of day, and an
  IsolationForest over the standardized signals) and `detect` over `signals.service_windows`, plus
  detectors for never-seen error templates, error-log bursts and failing CI tests; `drift`.
- `grouping`: `group_defects` turns anomalies, error spans, error logs and CI failures into
  `defects.defects` rows with stable ids, continuity across partitions, regressions and incidents.
- `classify`: defect features, rule-based types, the scikit-learn type classifier and severity.
"""
