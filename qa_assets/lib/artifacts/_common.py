"""Shared pieces of the artifact renderers: input checks, safe embedding of telemetry text, feedback.

Telemetry is hostile input for every format an artifact is written in: a route or exception message can
hold quotes, newlines, backticks, ``{}``, HTML or markdown. The helpers here are the only way text from
telemetry reaches generated code or markdown:

- Python: values go through ``repr()`` (``py_literal``); docstrings and comments through ``py_docstring_text`` /
  ``py_comment_text`` (quotes and backslashes escaped, newlines flattened in comments, control characters dropped).
- Markdown: ``md_code`` (a code span whose backtick fence is longer than any run inside), ``md_fence`` (a fenced
  block likewise), ``md_text`` (backslash-escaped prose, newlines flattened, ``@`` broken so nobody is pinged).
"""

from __future__ import annotations

import hashlib
import math
import pprint
import re
import unicodedata
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
import polars as pl

from qa_assets.lib import frames
from qa_assets.lib.summary import escape_markdown

TS = pl.Datetime("us")
SEVERITIES = ("S1", "S2", "S3", "S4")
OPEN_STATUSES = ("open", "regression")


class ArtifactInputError(ValueError):
    """An input frame or value lacks what artifact generation needs; the message says which and what to do."""


class NotRenderable(ValueError):
    """This defect has nothing a generated artifact could check (no request, test case or template seen)."""


# ------------------------------------------------------------------------------------------ inputs


def require_frame(frame: Any, name: str, columns: Sequence[str], producer: str) -> pl.DataFrame:
    return frames.require_frame(frame, name, columns, producer, ArtifactInputError)


def top_causes(root_causes: pl.DataFrame) -> pl.DataFrame:
    """The most likely cause per defect (lowest rank; rank 1 by contract)."""
    if root_causes.height == 0:
        return root_causes
    return root_causes.sort(["defect_id", "rank"], nulls_last=True).unique("defect_id", keep="first",
                                                                          maintain_order=True)


def causes_for(root_causes: Sequence[dict] | pl.DataFrame | None, defect_id: str) -> list[dict]:
    """The ranked causes of one defect as dicts, best first."""
    if root_causes is None:
        return []
    if isinstance(root_causes, pl.DataFrame):
        if root_causes.height == 0 or "defect_id" not in root_causes.columns:
            return []
        rows = root_causes.filter(pl.col("defect_id") == defect_id).to_dicts()
    else:
        rows = [dict(r) for r in root_causes if r.get("defect_id") in (None, defect_id)]
    return sorted(rows, key=lambda r: (r.get("rank") is None, r.get("rank") or 0))


def parse_json(text: Any) -> Any:
    if text is None or text == "":
        return None
    if isinstance(text, dict | list):
        return text
    try:
        return orjson.loads(text)
    except (orjson.JSONDecodeError, TypeError):
        return None


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(sep=" ", timespec="seconds")


def number(value: Any, digits: int = 4) -> float | None:
    if value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) or math.isinf(out) else round(out, digits)


# ------------------------------------------------------------------------------------------ names


def slug(value: Any, limit: int = 48) -> str:
    """Lower-case [a-z0-9_] only: safe in file names, Python identifiers (after a letter) and job names."""
    text = unicodedata.normalize("NFKD", "" if value is None else str(value)).encode("ascii", "ignore").decode()
    text = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return text[:limit].strip("_") or "x"


def stable_stem(value: Any, limit: int = 48) -> str:
    """A file stem from an id: readable slug plus a short hash of the exact id, so two ids that slug alike
    (``a/b`` and ``a_b``) never share a file."""
    digest = hashlib.sha256(("" if value is None else str(value)).encode("utf-8")).hexdigest()[:10]
    return f"{slug(value, limit)}_{digest}"


def env_suffix(value: Any) -> str:
    """Upper-case suffix for an environment variable name (``QA_TARGET_BASE_URL_<SERVICE>``)."""
    return slug(value, 60).upper()


def label(value: Any, limit: int = 50) -> str:
    """A tracker label: no spaces or commas (Jira rejects spaces; GitHub splits on commas in some UIs)."""
    text = re.sub(r"[^A-Za-z0-9._:/-]+", "-", "" if value is None else str(value)).strip("-")
    return text[:limit] or "unknown"


def one_line(value: Any, limit: int | None = None, *, strip: bool = True) -> str:
    """Control characters and line breaks become spaces; for titles, summaries and comments."""
    text = "" if value is None else str(value)
    text = "".join(" " if unicodedata.category(ch)[0] == "C" or ch in "\u2028\u2029" else ch for ch in text)
    text = re.sub(r"\s+", " ", text)
    if strip:
        text = text.strip()
    if limit is not None and len(text) > limit:
        text = text[: max(0, limit - 1)] + "…"
    return text


# ------------------------------------------------------------------------------------------ python


def _plain(value: Any) -> Any:
    """Plain data for a literal: NaN/inf become None, datetimes ISO strings, unknown objects their str()."""
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, str | int) else k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def py_literal(value: Any, width: int = 110) -> str:
    """A Python literal for plain data (str, int, float, bool, None, lists, dicts), laid out by pprint: every
    string goes through repr(), so telemetry text can never end the literal or run as code."""
    return pprint.pformat(_plain(value), width=width, sort_dicts=False)


def py_docstring_text(value: Any) -> str:
    """Text for inside a triple-double-quoted docstring: backslashes and double quotes escaped, control
    characters (other than newline) dropped, so no content can close the docstring."""
    text = "" if value is None else str(value)
    text = "".join(ch for ch in text if ch == "\n" or unicodedata.category(ch)[0] != "C")
    text = text.replace("\u2028", " ").replace("\u2029", " ")
    return text.replace("\\", "\\\\").replace('"', '\\"')


def py_comment_text(value: Any, limit: int = 200) -> str:
    """Text for after a ``#``: one line, so nothing can escape the comment."""
    return one_line(value, limit)


# ------------------------------------------------------------------------------------------ markdown


def md_text(value: Any, limit: int | None = None) -> str:
    """Markdown prose from telemetry: one line, markdown punctuation escaped, ``@`` followed by a zero-width
    joiner so a mention in telemetry never notifies anybody."""
    return escape_markdown(one_line(value, limit, strip=False)).replace("@", "@\u2060")


def md_code(value: Any, limit: int | None = 200) -> str:
    """An inline code span that shows the value verbatim (flattened to one line): the backtick fence is one
    longer than the longest backtick run inside, padded when the value starts or ends with a backtick."""
    text = one_line(value, limit)
    if not text:
        return "` `"
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def md_fence(value: Any, language: str = "") -> str:
    """A fenced code block holding the value verbatim; the fence outgrows any backtick run inside."""
    text = "" if value is None else str(value)
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch)[0] != "C")
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{text}\n{fence}"


def md_defang(markdown: Any) -> str:
    """Markdown written by another stage (e.g. RCA explanations), kept as markdown but without raw HTML,
    mentions or headings: ``<`` becomes ``&lt;``, ``@name`` is broken up and a heading becomes bold text
    (the text is embedded under our own headings). Its own escaping is trusted for the rest."""
    text = "" if markdown is None else str(markdown)
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch)[0] != "C")
    text = re.sub(r"@(?=\w)", "@\u2060", text.replace("&", "&amp;").replace("<", "&lt;"))
    text = re.sub(r"(?m)^\s*#{1,6}[ \t]+(.*?)[ \t#]*$", r"**\1**", text)
    return re.sub(r"(?m)^(\s*)#", r"\1\\#", text)  # a '#' line that is no heading stays text


def md_table(frame: pl.DataFrame, max_rows: int = 50, max_cell: int = 200) -> str:
    """A markdown table whose cells are escaped prose (``md_text``): telemetry cannot add rows, cells,
    HTML or mentions."""
    if frame.width == 0:
        return "(no columns)"
    lines = ["| " + " | ".join(md_text(c) for c in frame.columns) + " |",
             "|" + "|".join(" --- " for _ in frame.columns) + "|"]
    for row in frame.head(max_rows).iter_rows():
        lines.append("| " + " | ".join("" if v is None else md_text(v, max_cell) for v in row) + " |")
    if frame.height > max_rows:
        lines.append(f"\n… {frame.height - max_rows} more rows")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ feedback

FEEDBACK_EVENTS: dict[str, pl.DataType] = {
    "defect_id": pl.String,
    # defect (an approval or rejection of the whole result) | defect_type | severity | root_cause_service |
    # root_cause_change_id
    "field": pl.String,
    "action": pl.String,  # approve | reject | correct
    "value": pl.String,  # the corrected value
    "created_at": TS,
    "author": pl.String,
    "comment": pl.String,
}


def feedback_events(feedback: pl.DataFrame | None) -> pl.DataFrame:
    """Human feedback in long form (``FEEDBACK_EVENTS``): one row per defect, corrected field and verdict.

    Takes governance ``FEEDBACK`` rows (``parse_feedback``: ``defect_id, decision, defect_type, severity,
    root_cause_service, root_cause_change_id, author, comment, at``) or rows already in the long form of
    ``governance.feedback_as_events``."""
    if feedback is None or feedback.height == 0:
        return pl.DataFrame(schema=FEEDBACK_EVENTS)
    if not isinstance(feedback, pl.DataFrame):
        raise ArtifactInputError(f"feedback must be a polars DataFrame, got {type(feedback).__name__}")
    if {"defect_id", "decision", "at"} <= set(feedback.columns):
        from qa_assets.lib.governance import feedback_as_events

        events = feedback_as_events(feedback)
    elif {"defect_id", "field", "action"} <= set(feedback.columns):
        events = feedback
    else:
        raise ArtifactInputError(
            "feedback needs the governance FEEDBACK columns (defect_id, decision, at, ...) or the long form "
            f"(defect_id, field, action, ...); got {', '.join(feedback.columns)}"
        )
    return (
        events.select([
            (pl.col(c) if c in events.columns else pl.lit(None)).cast(t, strict=False).alias(c)
            for c, t in FEEDBACK_EVENTS.items()
        ])
        .filter(pl.col("defect_id").is_not_null())
        .sort("created_at", "defect_id", "field", nulls_last=False)
    )

