"""JSON over HTTP with retries and exponential backoff: the one HTTP client of the project.

Alerts (``alerts.send_alert``) and ticket delivery (``artifacts.delivery``) both go through ``send_json``.
It never raises for network or HTTP failures: it returns an ``HttpResult`` that says whether the request
succeeded, what the server answered, and whether trying again later may help (``retryable``: the server
could not be reached, timed out, answered 5xx, 408 or 429). ``sleep`` is injectable so tests do not wait.
"""

from __future__ import annotations

import http.client
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_LOG = logging.getLogger("qa_assets.http")
RETRY_STATUSES = frozenset({408, 425, 429})  # besides every 5xx
MAX_BACKOFF_S = 60.0


@dataclass(frozen=True)
class HttpResult:
    """The outcome of ``send_json``: the last answer, or why there was none."""

    ok: bool
    status: int | None  # the last HTTP status; None when no answer came (connection refused, timeout)
    body: Any  # the answer parsed as JSON, its text when it is not JSON, None when empty
    error: str | None  # what went wrong on the last attempt; None when ok
    attempts: int  # requests made
    retryable: bool  # the failure may pass: a later run should try again


def redact_url(url: str) -> str:
    """The URL without credentials and query string, for messages that are logged and stored."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def _parse_body(data: bytes) -> Any:
    if not data:
        return None
    text = data.decode("utf-8", "replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def _retry_after_s(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:  # an HTTP date: fall back to our own backoff
        return None


def send_json(
    method: str,
    url: str,
    payload: Any = None,
    *,
    headers: Mapping[str, str] | None = None,
    attempts: int = 3,
    timeout_s: float = 10.0,
    backoff_s: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
    log: Any = None,
) -> HttpResult:
    """Send ``payload`` as JSON; retry what may pass, waiting ``backoff_s``, then twice that, and so on
    (a server's ``Retry-After`` is honoured up to a minute). 4xx answers other than 408/425/429 are not
    retried: the same request would be refused again."""
    logger = log or _LOG
    body = None if payload is None else json.dumps(payload, default=str, ensure_ascii=False).encode("utf-8")
    request_headers = {"Content-Type": "application/json", "Accept": "application/json", **(headers or {})}
    where = f"{method} {redact_url(url)}"
    delay = backoff_s
    result = HttpResult(False, None, None, f"{where}: not attempted (attempts={attempts})", 0, True)
    for attempt in range(1, max(1, attempts) + 1):
        request = urllib.request.Request(url, data=body, method=method, headers=request_headers)
        retry_after = None
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - configured URL
                answer = _parse_body(response.read())
                if 200 <= response.status < 300:
                    return HttpResult(True, response.status, answer, None, attempt, False)
                result = HttpResult(False, response.status, answer, f"{where}: HTTP {response.status}", attempt,
                                    response.status >= 500 or response.status in RETRY_STATUSES)
        except urllib.error.HTTPError as exc:
            answer = _parse_body(exc.read() or b"")
            detail = answer if isinstance(answer, str) else json.dumps(answer, default=str)
            retryable = exc.code >= 500 or exc.code in RETRY_STATUSES
            result = HttpResult(False, exc.code, answer, f"{where}: HTTP {exc.code} {exc.reason}: {detail[:500]}",
                                attempt, retryable)
            retry_after = _retry_after_s(exc.headers)
        except (urllib.error.URLError, http.client.HTTPException, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            result = HttpResult(False, None, None, f"{where}: {reason}", attempt, True)
        if not result.retryable:
            return result
        logger.warning(f"attempt {attempt}/{attempts} failed: {result.error}")
        if attempt < attempts:
            sleep(min(MAX_BACKOFF_S, max(delay, retry_after or 0.0)))
            delay *= 2
    return result
