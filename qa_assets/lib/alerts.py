"""Alerts on failed runs and failed checks: always to the log, optionally to a webhook (JSON POST)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

from qa_assets.lib.http_client import send_json

_LOG = logging.getLogger("qa_assets.alerts")


def send_alert(payload: dict, *, webhook: str | None, log=None, attempts: int = 3, timeout_s: float = 5.0,
               sleep: Callable[[float], None] = time.sleep) -> bool:
    """Post `payload` to `webhook` with retries and backoff; never raises (an alert must not fail a run)."""
    logger = log or _LOG
    logger.warning(f"alert: {json.dumps(payload, default=str)[:2000]}")
    if not webhook:
        return False
    result = send_json("POST", webhook, payload, attempts=attempts, timeout_s=timeout_s, backoff_s=0.5,
                       sleep=sleep, log=logger)
    if not result.ok:
        logger.warning(f"alert webhook failed: {result.error}")
    return result.ok
