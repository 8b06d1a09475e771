"""The partitions every stage shares: UTC hours, from a start that reaches back far enough for old telemetry."""

from __future__ import annotations

import os

import dagster as dg

# Telemetry from years back is processed without code changes: the default start is early, and
# QA_ASSETS_PARTITIONS_START (YYYY-MM-DD) moves it when older data arrives.
PARTITIONS_START = os.environ.get("QA_ASSETS_PARTITIONS_START", "2010-01-01")

hourly_partitions = dg.HourlyPartitionsDefinition(
    start_date=f"{PARTITIONS_START}-00:00", timezone="UTC", fmt="%Y-%m-%d-%H:%M",
    end_offset=1,  # the current hour too: post-deploy checks look at telemetry as it arrives
)

# Every hourly-partitioned asset carries this tag, so jobs and sensors select "the hour's graph" by it.
HOURLY_TAG = {"qa-assets/partitions": "hourly"}
