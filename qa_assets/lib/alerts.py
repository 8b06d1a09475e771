"""Alerts on failed runs and failed checks: always to the log, optionally to a webhook (JSON POST)."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request

_LOG = logging.getLogger("qa_assets.alerts")


def send_alert(payload: dict, *, webhook: str | None, log=None, attempts: int = 3, timeout_s: float = 5.0) -> bool:
    """Post `payload` to `webhook` with retries and backoff; never raises (an alert must not fail a run)."""
    logger = log or _LOG
    logger.warning(f"alert: {json.dumps(payload, default=str)[:2000]}")
    if not webhook:
        return False
    body = json.dumps(payload, default=str).encode("utf-8")
    delay = 0.5
    for attempt in range(1, attempts + 1):
        request = urllib.request.Request(webhook, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - configured URL
                if 200 <= response.status < 300:
                    return True
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            logger.warning(f"alert webhook attempt {attempt}/{attempts} failed: {exc}")
        time.sleep(delay)
        delay *= 2
    return False
