"""Governance: the decision log and human feedback.

Decision log (``governance.decision_log``, ``DECISION_LOG``): one row per automated or human decision
(a defect classified, a cause ranked, a release gated, a model promoted, a correction applied) with the
model name and version, the feature-set id, the input partitions and row counts, the code version, a
rationale and a status. ``decision_rows`` builds the rows; their ``decision_id`` is a hash of stage,
decision, subject, model version and input partitions, so re-running a partition yields the same ids and
a writer that keeps the first row per id (or replaces by id) never duplicates a decision.

Feedback (``FEEDBACK``): corrections and verdicts that people drop into ``<landing>/feedback/`` as JSON
lines or YAML. One record::

    {"defect_id": "d-3f9a1c0b2e7d", "decision": "correct", "defect_type": "latency_regression",
     "severity": "S2", "root_cause_service": "inventory", "root_cause_change_id": "evt-1234",
     "author": "jane", "comment": "slow queries after the index change", "at": "2026-11-02T10:15:00Z"}

- ``defect_id`` (required): the ``defects.defects`` id the feedback is about.
- ``decision`` (required): ``approve`` (the automated result is right), ``reject`` (not a defect: a false
  positive), or ``correct`` (replace the fields given).
- ``defect_type``, ``severity``, ``root_cause_service``, ``root_cause_change_id``: the corrected values;
  only with ``correct``, which needs at least one of them. ``defect_type`` is one of ``DEFECT_TYPES``,
  ``severity`` one of ``S1``..``S4`` (S1 worst).
- ``author`` (required), ``comment`` (optional) and ``at`` (required): who, why, and when (ISO 8601 /
  RFC 3339; a time without an offset is UTC).

A file holds JSON lines (``.jsonl``, ``.ndjson``, ``.json``: also one object, concatenated objects, or a
JSON array) or YAML (``.yaml``, ``.yml``: one mapping or a list of mappings per ``---`` document). Other
extensions are read as JSON when the text starts with ``{`` or ``[``, else as YAML. Unknown fields are
rejected, so that a typo (``severty``) is reported instead of silently ignored. Every record is counted:
``records_read == accepted.height + quarantine.height``; the quarantine rows say what was wrong and where.
The same record dropped twice gets the same ``feedback_id`` (a hash of its content). docs/feedback.md is
the user-facing version of this description.

``apply_feedback`` applies the latest feedback per defect (by ``at``) to ``defects.defects`` rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache
from importlib import metadata as importlib_metadata
from pathlib import Path

import orjson
import polars as pl
import yaml

from qa_assets.lib.frames import require_frame
from qa_assets.lib.ingest.cdevents import (
    ParseResult,
    decode_text,
    excerpt_of,
    has_invalid_bytes,
    iter_json_records,
    parse_timestamp,
)
from qa_assets.lib.ingest.tables import QUARANTINE, conform, quarantine_rows

TS = pl.Datetime("us")

DECISION_LOG: dict[str, pl.DataType] = {
    "decision_id": pl.String,  # stable: hash of stage, decision, subject, model version, input partitions
    "decided_at": TS,
    "stage": pl.String,  # telemetry | signals | defects | root_causes | qa_artifacts | governance | feedback
    "decision": pl.String,  # what was decided, e.g. classify_defect, rank_root_cause, release_gate
    "subject_type": pl.String,  # defect | service_version | model | ...
    "subject_id": pl.String,
    "outcome": pl.String,  # the result, e.g. latency_regression, block, promoted
    "confidence": pl.Float64,  # 0-1
    "model_name": pl.String,
    "model_version": pl.String,
    "feature_set_id": pl.String,
    "input_partitions": pl.List(pl.String),
    "input_row_counts": pl.String,  # JSON object: input table -> rows read
    "code_version": pl.String,
    "rationale": pl.String,
    "status": pl.String,  # one of DECISION_STATUSES
}
# needs_review: below the confidence threshold, or an S1 or a block — waits for a person (escalation).
DECISION_STATUSES = ("proposed", "needs_review", "applied", "approved", "rejected", "reverted")

FEEDBACK: dict[str, pl.DataType] = {
    "feedback_id": pl.String,  # hash of the record's content: the same record twice has one id
    "defect_id": pl.String,
    "decision": pl.String,  # approve | reject | correct
    "defect_type": pl.String,
    "severity": pl.String,
    "root_cause_service": pl.String,
    "root_cause_change_id": pl.String,
    "author": pl.String,
    "comment": pl.String,
    "at": TS,
    "source_file": pl.String,
    "source_line": pl.Int64,
    "source_offset": pl.Int64,
}
FEEDBACK_DECISIONS = ("approve", "reject", "correct")
DEFECT_TYPES = (
    "error_spike", "new_exception", "latency_regression", "availability", "resource_exhaustion",
    "dependency_failure", "config_error", "data_validation", "flaky_test",
)
SEVERITIES = ("S1", "S2", "S3", "S4")
# Status a rejected defect gets: it stays in the table (with the reviewer's evidence) but is no defect.
REJECTED_STATUS = "rejected"
SOURCE_KIND = "feedback"

_CORRECTION_FIELDS = ("defect_type", "severity", "root_cause_service", "root_cause_change_id")
_KNOWN_FIELDS = ("defect_id", "decision", *_CORRECTION_FIELDS, "author", "comment", "at")
_JSON_SUFFIXES = (".json", ".jsonl", ".ndjson")
_YAML_SUFFIXES = (".yaml", ".yml")


# ---------------------------------------------------------------------------------- code version


@lru_cache(maxsize=1)
def code_version() -> str:
    """``<package version>+g<git sha>`` when the code runs from a git checkout, else the package
    version; ``unknown`` parts never raise. QA_ASSETS_CODE_VERSION overrides (for builds without .git)."""
    override = os.environ.get("QA_ASSETS_CODE_VERSION")
    if override:
        return override
    try:
        package = importlib_metadata.version("qa-assets")
    except Exception:
        package = "unknown"
    sha = _git_sha(Path(__file__).resolve().parents[2])
    return f"{package}+g{sha[:12]}" if sha else package


def _git_sha(start: Path) -> str | None:
    """The checked-out commit, read from .git files (no git binary needed); None when unknown."""
    try:
        for folder in (start, *start.parents):
            dot_git = folder / ".git"
            if dot_git.is_file():  # a worktree or submodule: "gitdir: <path>"
                text = dot_git.read_text().strip()
                if not text.startswith("gitdir:"):
                    return None
                dot_git = (folder / text.split(":", 1)[1].strip()).resolve()
            if dot_git.is_dir():
                return _resolve_head(dot_git)
    except (OSError, UnicodeDecodeError):
        return None
    return None


def _resolve_head(git_dir: Path) -> str | None:
    head = (git_dir / "HEAD").read_text().strip()
    if not head.startswith("ref:"):
        return head if re.fullmatch(r"[0-9a-f]{40,64}", head) else None
    ref = head.split(":", 1)[1].strip()
    common = git_dir
    if (git_dir / "commondir").is_file():  # worktrees keep refs in the main repository
        common = (git_dir / (git_dir / "commondir").read_text().strip()).resolve()
    for base in (git_dir, common):
        ref_file = base / ref
        if ref_file.is_file():
            return ref_file.read_text().strip() or None
    for base in (git_dir, common):
        packed = base / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[1] == ref:
                    return parts[0]
    return None  # a branch without commits yet


# ---------------------------------------------------------------------------------- decision log


class GovernanceInputError(ValueError):
    """Decision or feedback input that cannot be used; the message names the input and what to do."""


def decision_id(
    stage: str,
    decision: str,
    subject_type: str,
    subject_id: str,
    model_version: str | None,
    input_partitions: Sequence[str] | None,
) -> str:
    """A stable id: the same decision about the same subject from the same model and inputs."""
    partitions = ",".join(sorted(set(input_partitions or ())))
    key = "\x1f".join([stage, decision, subject_type, subject_id, model_version or "", partitions])
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def decision_rows(
    decisions: pl.DataFrame,
    *,
    stage: str,
    decision: str,
    subject_type: str | None = None,
    model_name: str | None = None,
    model_version: str | None = None,
    feature_set_id: str | None = None,
    input_partitions: Sequence[str] = (),
    input_row_counts: Mapping[str, int] | None = None,
    status: str = "applied",
    decided_at: datetime | None = None,
    code_version_text: str | None = None,
) -> pl.DataFrame:
    """Decision-log rows (``DECISION_LOG``), one per row of ``decisions``.

    ``decisions`` needs ``subject_id`` and ``outcome``; ``confidence`` and ``rationale`` are read when
    present. Any of ``subject_type``, ``model_name``, ``model_version``, ``feature_set_id``,
    ``input_partitions`` (list of str), ``status`` and ``decided_at`` may also be columns, which then
    win over the keyword values (for a decision whose inputs differ per subject). ``decided_at``
    defaults to now (UTC); it is not part of the id, so a re-run keeps its ids.
    """
    if not stage or not decision:
        raise GovernanceInputError("decision_rows needs a stage and a decision name (e.g. defects, classify_defect)")
    missing = [c for c in ("subject_id", "outcome") if c not in decisions.columns]
    if missing:
        raise GovernanceInputError(
            f"decisions for {stage}/{decision} lack column(s) {', '.join(missing)}: "
            "pass one row per subject with its subject_id and outcome"
        )
    if subject_type is None and "subject_type" not in decisions.columns:
        raise GovernanceInputError(
            f"decisions for {stage}/{decision}: give subject_type (e.g. defect) as a keyword or a column"
        )
    when = decided_at or datetime.now(UTC)
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    defaults: dict[str, pl.Expr] = {
        "subject_type": pl.lit(subject_type, pl.String),
        "model_name": pl.lit(model_name, pl.String),
        "model_version": pl.lit(model_version, pl.String),
        "feature_set_id": pl.lit(feature_set_id, pl.String),
        "input_partitions": pl.lit(sorted(set(input_partitions)), pl.List(pl.String)),
        "status": pl.lit(status, pl.String),
        "decided_at": pl.lit(when, TS),
        "confidence": pl.lit(None, pl.Float64),
        "rationale": pl.lit(None, pl.String),
    }
    frame = decisions.with_columns(
        [
            (pl.coalesce(pl.col(name).cast(DECISION_LOG[name]), expr) if name in decisions.columns else expr)
            .alias(name)
            for name, expr in defaults.items()
        ]
    ).with_columns(
        pl.col("subject_id").cast(pl.String),
        pl.col("outcome").cast(pl.String),
        pl.col("input_partitions").list.unique().list.sort(),
    )
    _check_decisions(frame, stage, decision)
    ids = [
        decision_id(stage, decision, st, sid, mv, parts)
        for st, sid, mv, parts in zip(
            frame["subject_type"], frame["subject_id"], frame["model_version"], frame["input_partitions"].to_list(),
            strict=True,
        )
    ]
    counts = json.dumps({str(k): int(v) for k, v in sorted((input_row_counts or {}).items())})
    return conform(
        frame.with_columns(
            pl.Series("decision_id", ids, dtype=pl.String),
            pl.lit(stage).alias("stage"),
            pl.lit(decision).alias("decision"),
            pl.lit(counts).alias("input_row_counts"),
            pl.lit(code_version_text or code_version()).alias("code_version"),
        ),
        DECISION_LOG,
    )


def _check_decisions(frame: pl.DataFrame, stage: str, decision: str) -> None:
    where = f"decisions for {stage}/{decision}"
    null_subjects = frame.filter(pl.col("subject_id").is_null() | pl.col("subject_type").is_null()).height
    if null_subjects:
        raise GovernanceInputError(f"{where}: {null_subjects} row(s) have no subject_id or subject_type")
    bad_status = frame.filter(~pl.col("status").is_in(DECISION_STATUSES))["status"].unique().to_list()
    if bad_status:
        raise GovernanceInputError(
            f"{where}: status {bad_status} is not one of {', '.join(DECISION_STATUSES)}"
        )
    out_of_range = frame.filter(
        pl.col("confidence").is_not_null() & ~pl.col("confidence").is_between(0.0, 1.0)
    )
    if out_of_range.height:
        example = out_of_range.row(0, named=True)
        raise GovernanceInputError(
            f"{where}: confidence must be within 0-1; subject {example['subject_id']!r} has {example['confidence']}"
        )


def feedback_decision_rows(feedback: pl.DataFrame, *, code_version_text: str | None = None) -> pl.DataFrame:
    """Decision-log rows for applied feedback: a human's verdict on a defect (stage ``feedback``).

    Each feedback record is its own decision (``input_partitions`` names the record), decided at its
    ``at``, with status approved / rejected / applied (a correction) and confidence 1.
    """
    if feedback.height == 0:
        return pl.DataFrame(schema=DECISION_LOG)
    corrections = [
        pl.when(pl.col(f).is_not_null()).then(pl.format(f"{f}={{}}", pl.col(f))) for f in _CORRECTION_FIELDS
    ]
    rows = feedback.select(
        pl.col("defect_id").alias("subject_id"),
        pl.col("decision").alias("outcome"),
        pl.lit(1.0).alias("confidence"),
        pl.format(
            "{} by {}{}{}",
            pl.col("decision"),
            pl.col("author"),
            pl.concat_str([pl.lit(": "), pl.concat_str(corrections, separator=", ", ignore_nulls=True)])
            .fill_null(""),
            pl.concat_str([pl.lit(" - "), pl.col("comment")]).fill_null(""),
        ).alias("rationale"),
        pl.concat_list(pl.concat_str([pl.lit("feedback:"), pl.col("feedback_id")])).alias("input_partitions"),
        pl.col("decision").replace_strict(
            {"approve": "approved", "reject": "rejected", "correct": "applied"}, return_dtype=pl.String
        ).alias("status"),
        pl.col("at").alias("decided_at"),
    )
    return decision_rows(
        rows, stage="feedback", decision="review_defect", subject_type="defect",
        model_name=None, code_version_text=code_version_text,
    )


# A person's review (feedback on a defect, `qa-assets gate approve|override`) settles the automated
# decisions about the same subject made before it.
REVIEWS_SETTLE: dict[str, tuple[str, ...]] = {
    "review_defect": ("classify_defect", "rank_root_cause"),
    "release_gate_approve": ("release_gate",),
    "release_gate_override": ("release_gate",),
}


def review_queue(decision_log: pl.DataFrame) -> pl.DataFrame:
    """Decisions waiting for a person, oldest first (``DECISION_LOG`` columns).

    The latest status of a decision is that of its newest row (by ``decided_at``) among the rows with the
    same ``decision``, ``subject_type`` and ``subject_id``: re-running a stage over a later partition
    decides about the same subject again, and that newer decision is the one to review. A decision is
    queued when that latest status is ``needs_review`` and no review that settles it (``REVIEWS_SETTLE``)
    of the same subject came at or after it."""
    _require(decision_log, "decision_log", ("decision_id", "decided_at", "decision", "subject_type",
                                            "subject_id", "status"), "governance.decision_log rows")
    if decision_log.height == 0:
        return conform(decision_log.clear(), DECISION_LOG)
    key = ["decision", "subject_type", "subject_id"]
    latest = (
        decision_log.sort(["decided_at", "decision_id"], nulls_last=False)
        .group_by(key, maintain_order=True).last()
        .filter(pl.col("status") == "needs_review")
    )
    settled_by = pl.DataFrame(
        [{"decision": settled, "_review": review}
         for review, settles in REVIEWS_SETTLE.items() for settled in settles],
        schema={"decision": pl.String, "_review": pl.String},
    )
    reviews = (
        decision_log.join(settled_by, left_on="decision", right_on="_review", how="inner", suffix="_settled")
        .group_by(pl.col("decision_settled").alias("decision"), "subject_type", "subject_id")
        .agg(pl.col("decided_at").max().alias("_reviewed_at"))
    )
    waiting = (
        latest.join(reviews, on=key, how="left")
        .filter(pl.col("_reviewed_at").is_null() | (pl.col("_reviewed_at") < pl.col("decided_at")))
    )
    return conform(waiting, DECISION_LOG).sort(["decided_at", "decision", "subject_id"], nulls_last=True)


# ------------------------------------------------------------------------------------- feedback


@dataclass
class _Record:
    line: int
    offset: int
    text: str
    value: object = None
    error: str | None = None


class _Rejected(Exception):
    """The quarantine reason of one feedback record."""


def parse_feedback(data: bytes, source_file: str) -> ParseResult:
    """Parse one feedback file (format in the module docstring); never raises on bad input."""
    text = decode_text(data)
    if not text.strip():
        records = [_Record(1, 0, "", error="the file is empty; a feedback file holds JSON lines or YAML records")]
    elif _is_json(source_file, text):
        records = [_Record(r.line, r.offset, r.text, r.value, r.error) for r in iter_json_records(text)]
    else:
        records = list(_yaml_records(text))
    rows: list[dict[str, object]] = []
    bad: list[tuple[str, _Record, datetime | None]] = []
    first_line_of: dict[str, int] = {}
    for record in records:
        if has_invalid_bytes(record.text):
            bad.append(("not valid UTF-8; write feedback files as UTF-8", record, None))
            continue
        if record.error is not None:
            bad.append((record.error, record, None))
            continue
        try:
            row = _read_feedback(record.value)
        except _Rejected as exc:
            bad.append((str(exc), record, _record_time(record.value)))
            continue
        if row["feedback_id"] in first_line_of:
            bad.append(
                (f"duplicate of the record at line {first_line_of[row['feedback_id']]}; the first was kept",
                 record, row["at"])
            )
            continue
        first_line_of[str(row["feedback_id"])] = record.line
        rows.append({**row, "source_file": source_file, "source_line": record.line,
                     "source_offset": record.offset})
    accepted = conform(pl.DataFrame(rows, schema=FEEDBACK) if rows else pl.DataFrame(schema=FEEDBACK), FEEDBACK)
    quarantine = quarantine_rows(
        SOURCE_KIND, source_file,
        [b[0] for b in bad], [b[1].line for b in bad], [b[1].offset for b in bad],
        [excerpt_of(b[1].text) for b in bad],
    )
    if bad:
        hours = pl.Series("hour", [b[2] for b in bad], dtype=TS).dt.truncate("1h")
        quarantine = conform(quarantine.with_columns(hours), QUARANTINE)
    return ParseResult(accepted=accepted, quarantine=quarantine, records_read=len(rows) + len(bad))


def _is_json(source_file: str, text: str) -> bool:
    suffixes = [s.lower() for s in Path(source_file).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    suffix = suffixes[-1] if suffixes else ""
    if suffix in _JSON_SUFFIXES:
        return True
    if suffix in _YAML_SUFFIXES:
        return False
    return text.lstrip()[:1] in ("{", "[")


_YAML_DOCUMENT_START = re.compile(r"^---(?:[ \t]|$)")


def _yaml_records(text: str):
    """Records of a YAML stream: each ``---`` document is parsed alone (a broken one does not take the
    others with it); a document holding a list yields its elements, with their own lines."""
    line_offsets = [0]
    for raw in text.splitlines(keepends=True):
        line_offsets.append(line_offsets[-1] + len(raw.encode("utf-8", "surrogateescape")))
    lines = text.splitlines(keepends=True)
    starts = [i for i, raw in enumerate(lines) if _YAML_DOCUMENT_START.match(raw)]
    bounds = sorted({0, *starts})
    for index, first in enumerate(bounds):
        last = bounds[index + 1] if index + 1 < len(bounds) else len(lines)
        chunk = lines[first:last]
        if chunk and _YAML_DOCUMENT_START.match(chunk[0]):
            chunk = ["\n", *chunk[1:]] if chunk[0].strip() == "---" else [chunk[0][3:], *chunk[1:]]
        document = "".join(chunk)
        content_lines = [i for i, raw in enumerate(chunk) if raw.strip() and not raw.lstrip().startswith("#")]
        if not content_lines or all(chunk[i].strip() == "..." for i in content_lines):
            continue
        yield from _yaml_document(document, first, line_offsets, content_lines[0])


def _yaml_document(document: str, first_line: int, line_offsets: list[int], first_content: int):
    def position(line_in_doc: int) -> tuple[int, int]:
        line = first_line + line_in_doc
        return line + 1, line_offsets[min(line, len(line_offsets) - 1)]

    try:
        node = yaml.compose(document, Loader=yaml.SafeLoader)
        value = yaml.load(document, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {first_line + mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        line, offset = position(first_content)
        yield _Record(line, offset, document.strip(), error=f"invalid YAML{where}: {problem}")
        return
    if node is None:
        return
    if isinstance(value, list) and isinstance(node, yaml.SequenceNode):
        for item_node, item in zip(node.value, value, strict=True):
            start, end = item_node.start_mark, item_node.end_mark
            line, offset = position(start.line)
            yield _Record(line, offset, document[start.index:end.index].strip(), value=item)
        return
    line, offset = position(node.start_mark.line)
    yield _Record(line, offset, document.strip(), value=value)


def _type_name(value: object) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _text(value: object, field: str, *, required: bool) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise _Rejected(f"missing {field}; every feedback record needs it")
        return None
    if isinstance(value, bool) or isinstance(value, float):
        raise _Rejected(f"{field} must be text, got {_type_name(value)} {value!r} (quote it)")
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str):
        raise _Rejected(f"{field} must be text, got {_type_name(value)}")
    return value.strip()


def _timestamp(value: object) -> datetime:
    if value is None or value == "":
        raise _Rejected("missing at; every feedback record needs the time it was given (2026-11-02T10:15:00Z)")
    if isinstance(value, datetime):  # YAML reads unquoted timestamps itself
        return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        moment = parse_timestamp(value, offset_required=False)
        if moment is not None:
            return moment
        raise _Rejected(f"at {value!r} is not an ISO 8601 time; write it like 2026-11-02T10:15:00Z")
    raise _Rejected(f"at must be an ISO 8601 time such as 2026-11-02T10:15:00Z, got {_type_name(value)}")


def _read_feedback(value: object) -> dict[str, object]:
    if not isinstance(value, dict):
        raise _Rejected(f"expected a feedback record (an object with defect_id, decision, author, at), "
                        f"got {_type_name(value)}")
    unknown = sorted(str(k) for k in value if k not in _KNOWN_FIELDS)
    if unknown:
        raise _Rejected(f"unknown field(s) {', '.join(unknown)}; known fields: {', '.join(_KNOWN_FIELDS)}")
    defect_id = _text(value.get("defect_id"), "defect_id", required=True)
    decision = (_text(value.get("decision"), "decision", required=True) or "").lower()
    if decision not in FEEDBACK_DECISIONS:
        raise _Rejected(f"decision {value.get('decision')!r} is not one of {', '.join(FEEDBACK_DECISIONS)}")
    corrections = {f: _text(value.get(f), f, required=False) for f in _CORRECTION_FIELDS}
    if corrections["defect_type"] is not None:
        corrections["defect_type"] = corrections["defect_type"].lower()
        if corrections["defect_type"] not in DEFECT_TYPES:
            raise _Rejected(
                f"defect_type {value.get('defect_type')!r} is not one of {', '.join(DEFECT_TYPES)}"
            )
    if corrections["severity"] is not None:
        corrections["severity"] = corrections["severity"].upper()
        if corrections["severity"] not in SEVERITIES:
            raise _Rejected(f"severity {value.get('severity')!r} is not one of {', '.join(SEVERITIES)} (S1 worst)")
    given = [f for f, v in corrections.items() if v is not None]
    if decision == "correct" and not given:
        raise _Rejected(f"decision correct needs at least one corrected field: {', '.join(_CORRECTION_FIELDS)}")
    if decision != "correct" and given:
        raise _Rejected(
            f"decision {decision} cannot carry corrections ({', '.join(given)}); use decision correct"
        )
    author = _text(value.get("author"), "author", required=True)
    comment = _text(value.get("comment"), "comment", required=False)
    at = _timestamp(value.get("at"))
    content = [defect_id, decision, *(corrections[f] for f in _CORRECTION_FIELDS), author, comment,
               at.isoformat()]
    feedback_id = hashlib.sha256(orjson.dumps(content)).hexdigest()[:32]
    return {"feedback_id": feedback_id, "defect_id": defect_id, "decision": decision, **corrections,
            "author": author, "comment": comment, "at": at}


def _record_time(value: object) -> datetime | None:
    if isinstance(value, dict):
        try:
            return _timestamp(value.get("at"))
        except _Rejected:
            return None
    return None


# ------------------------------------------------------------------------------ applying feedback


def latest_feedback(feedback: pl.DataFrame) -> pl.DataFrame:
    """One row per defect: its latest feedback by ``at`` (ties: the later file position wins)."""
    _require(feedback, "feedback", ("defect_id", "decision", "at"), "governance FEEDBACK rows (parse_feedback)")
    order = [c for c in ("at", "source_file", "source_line") if c in feedback.columns]
    return (
        feedback.filter(pl.col("defect_id").is_not_null())
        .sort(order, nulls_last=False, maintain_order=True)
        .group_by("defect_id", maintain_order=True)
        .last()
    )


def apply_feedback(defects: pl.DataFrame, feedback: pl.DataFrame) -> pl.DataFrame:
    """``defects.defects`` rows with people's latest verdict per defect applied.

    - ``correct``: the given ``defect_type`` / ``severity`` replace the detected ones; confidence 1.
    - ``approve``: labels kept, confidence 1 (a person confirmed them).
    - ``reject``: status ``rejected`` (a false positive), confidence 0.
    The applied record is added to the defect's ``evidence`` JSON under ``feedback``. Root-cause fields
    are not defect columns: ``latest_feedback`` gives them to root-cause evaluation and retraining.
    Defects without feedback, and feedback about unknown defects, change nothing. Columns and row order
    of ``defects`` are kept.
    """
    _require(defects, "defects", ("defect_id", "defect_type", "severity", "status", "confidence"),
             "defects.defects frame")
    if feedback.height == 0 or defects.height == 0:
        return defects
    latest = latest_feedback(feedback).select(
        "defect_id",
        pl.col("decision").alias("_decision"),
        pl.col("defect_type").alias("_type"),
        pl.col("severity").alias("_severity"),
        pl.struct(
            [c for c in ("feedback_id", "decision", *_CORRECTION_FIELDS, "author", "comment", "at")
             if c in feedback.columns]
        ).alias("_record"),
    )
    joined = defects.join(latest, on="defect_id", how="left", maintain_order="left")
    decision = pl.col("_decision")
    corrected = decision == "correct"
    updated = joined.with_columns(
        pl.when(corrected & pl.col("_type").is_not_null()).then(pl.col("_type"))
        .otherwise(pl.col("defect_type")).alias("defect_type"),
        pl.when(corrected & pl.col("_severity").is_not_null()).then(pl.col("_severity"))
        .otherwise(pl.col("severity")).alias("severity"),
        pl.when(decision == "reject").then(pl.lit(REJECTED_STATUS))
        .otherwise(pl.col("status")).alias("status"),
        pl.when(decision == "reject").then(pl.lit(0.0))
        .when(decision.is_in(["approve", "correct"])).then(pl.lit(1.0))
        .otherwise(pl.col("confidence")).cast(defects.schema["confidence"]).alias("confidence"),
    )
    if "evidence" in defects.columns:
        records = updated["_record"].to_list()
        evidence = [
            old if record is None else _with_feedback(old, record)
            for old, record in zip(updated["evidence"].to_list(), records, strict=True)
        ]
        updated = updated.with_columns(pl.Series("evidence", evidence, dtype=defects.schema["evidence"]))
    return updated.select(defects.columns)


def _with_feedback(evidence: str | None, record: dict) -> str:
    """The defect's evidence JSON with the applied feedback under ``feedback``."""
    applied = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in record.items() if v is not None}
    parsed: object = None
    if evidence:
        try:
            parsed = orjson.loads(evidence)
        except orjson.JSONDecodeError:
            parsed = evidence
    if not isinstance(parsed, dict):
        parsed = {} if parsed is None else {"evidence": parsed}
    return orjson.dumps({**parsed, "feedback": applied}).decode()


def feedback_as_events(feedback: pl.DataFrame) -> pl.DataFrame:
    """Feedback in long form, one row per (defect, field, verdict): ``defect_id, field, action, value,
    created_at, author, comment``. ``field`` is the corrected field; approvals and rejections are about
    the whole defect (``field`` ``defect``, no value). For consumers that read field-level events."""
    _require(feedback, "feedback", ("defect_id", "decision", "at"), "governance FEEDBACK rows (parse_feedback)")
    base = [pl.col("defect_id"), pl.col("decision").alias("action"), pl.col("at").alias("created_at"),
            pl.col("author"), pl.col("comment")]
    verdicts = feedback.filter(pl.col("decision") != "correct").select(
        *base, pl.lit("defect").alias("field"), pl.lit(None, pl.String).alias("value")
    )
    parts = [verdicts]
    corrections = feedback.filter(pl.col("decision") == "correct")
    for field in _CORRECTION_FIELDS:
        if field in corrections.columns:
            parts.append(
                corrections.filter(pl.col(field).is_not_null()).select(
                    *base, pl.lit(field).alias("field"), pl.col(field).cast(pl.String).alias("value")
                )
            )
    columns = ["defect_id", "field", "action", "value", "created_at", "author", "comment"]
    return pl.concat([p.select(columns) for p in parts]).sort("created_at", "defect_id", "field")


def _require(frame: object, name: str, columns: Sequence[str], what: str) -> None:
    require_frame(frame, name, columns, what, GovernanceInputError)
