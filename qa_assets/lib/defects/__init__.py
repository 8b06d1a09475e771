"""The defects stage: anomalies over service windows, defects grouped from them, and their classification."""
