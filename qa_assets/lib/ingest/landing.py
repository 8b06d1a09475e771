"""Ingest a landing directory into the warehouse: new files once, grown files from where they stopped.

The flow per file (each file is one DuckDB transaction, so a crash never leaves half a file behind):

1. Discover: the top folder names the kind (`otlp/`, `logs/<service>/`, `deployments/`, `tests/`,
   `catalog/`, `feedback/`). Other files are recorded in the ledger as ignored, with the reason.
2. Decide from the ledger `raw.ingested_files`: a file whose content hash was already ingested under
   another path is a duplicate (nothing counted twice); a file that grew with its old bytes unchanged
   resumes where it stopped; a file whose old bytes changed is re-ingested after its earlier records are
   removed; a whole-file format (XML, YAML, one JSON document) is read only after it has settled.
3. Parse in chunks (bounded memory), mask personal data and secrets, and write the records into
   `staging.<table>` with the UTC `hour` each record belongs to; rejected records go to `raw.quarantine`
   with a reason, the file and the line or offset. The hourly partition assets then move staged rows of
   their hour into `raw.<table>` (see `publish_hour`).

Accounting: for every file, records read = accepted + quarantined, kept in the ledger row.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl
import yaml

from qa_assets.lib import warehouse
from qa_assets.lib.ingest import tables
from qa_assets.lib.ingest.cdevents import ParseResult
from qa_assets.lib.ingest.reader import BadLine, ReadState, iter_line_chunks, read_whole
from qa_assets.lib.masking import KINDS as MASK_KINDS
from qa_assets.lib.masking import mask_columns

CONFIG_FILE = "qa-assets.yaml"
PARTITIONED_TABLES = ("spans", "logs", "metrics", "deployments", "test_cases")
KIND_FOLDERS = ("otlp", "logs", "deployments", "tests", "catalog", "feedback")

# Free text that may carry personal data or secrets, per table.
MASKED_COLUMNS: dict[str, tuple[str, ...]] = {
    "spans": ("name", "status_message", "http_route", "db_statement", "exception_message", "attributes",
              "resource_attributes"),
    "logs": ("body", "exception_message", "exception_stacktrace", "attributes"),
    "metrics": ("attributes", "resource_attributes"),
    "deployments": ("author", "custom_data"),
    "test_cases": ("name", "message", "details"),
    "quarantine": ("excerpt",),
    "catalog": ("annotations",),
    "feedback": ("comment", "author"),
}

LEDGER: dict[str, pl.DataType] = {
    "path": pl.String,  # absolute path of the file
    "kind": pl.String,  # otlp | logs | deployments | tests | catalog | feedback | unknown
    "service": pl.String,  # logs/<service>/ folder
    "size": pl.Int64,  # bytes on disk when last read
    "mtime": tables.TS,
    "content_sha256": pl.String,  # of the bytes on disk when last read
    "status": pl.String,  # ingested | partial | waiting | duplicate | ignored
    "reason": pl.String,  # why waiting / duplicate / ignored / partial
    "duplicate_of": pl.String,
    "bytes_consumed": pl.Int64,  # decompressed bytes covered so far (resume point)
    "lines_consumed": pl.Int64,
    "records_read": pl.Int64,
    "accepted": pl.Int64,
    "quarantined": pl.Int64,
    "first_hour": tables.TS,
    "last_hour": tables.TS,
    "ingested_at": tables.TS,
}
LEDGER_TABLE = "raw.ingested_files"
MASK_COUNTS: dict[str, pl.DataType] = {"path": pl.String, "ingested_at": tables.TS,
                                       **{kind: pl.Int64 for kind in MASK_KINDS}}
MASK_COUNTS_TABLE = "raw.masked_values"


class LandingError(ValueError):
    """The landing directory or its configuration is unusable; the message says how to fix it."""


@dataclass
class LandingConfig:
    log_formats: dict[str, str] = field(default_factory=dict)  # service -> logparser format
    default_log_format: str | None = None

    def log_format_for(self, service: str | None) -> str | None:
        if service and service in self.log_formats:
            return self.log_formats[service]
        return self.default_log_format


def read_landing_config(landing: Path) -> LandingConfig:
    """`<landing>/qa-assets.yaml`: `log_formats: {service: format}` and an optional `default_log_format`."""
    path = landing / CONFIG_FILE
    if not path.exists():
        return LandingConfig()
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise LandingError(f"{path} is not valid YAML ({exc}); fix it or remove it") from exc
    if not isinstance(document, dict):
        raise LandingError(f"{path} must be a mapping with `log_formats:`; found {type(document).__name__}")
    formats = document.get("log_formats") or {}
    if not isinstance(formats, dict) or not all(isinstance(v, str) for v in formats.values()):
        raise LandingError(f"{path}: `log_formats` must map service names to format strings like "
                           "'<Date> <Time> <Level> <Component>: <Content>'")
    default = document.get("default_log_format")
    if default is not None and not isinstance(default, str):
        raise LandingError(f"{path}: `default_log_format` must be a format string")
    return LandingConfig(log_formats={str(k): v for k, v in formats.items()}, default_log_format=default)


@dataclass(frozen=True)
class LandedFile:
    path: Path
    kind: str
    service: str | None
    size: int
    mtime: datetime


def discover(landing: Path) -> list[LandedFile]:
    """Every regular file under the landing directory (hidden files and the config file aside), sorted."""
    if not landing.is_dir():
        raise LandingError(f"landing directory {landing} does not exist or is not a directory")
    found = []
    for path in sorted(landing.rglob("*")):
        relative = path.relative_to(landing)
        if not path.is_file() or any(part.startswith(".") for part in relative.parts):
            continue
        if relative.as_posix() == CONFIG_FILE:
            continue
        top = relative.parts[0] if len(relative.parts) > 1 else ""
        kind = top if top in KIND_FOLDERS else "unknown"
        service = relative.parts[1] if kind == "logs" and len(relative.parts) > 2 else None
        stat = path.stat()
        found.append(LandedFile(path=path.resolve(), kind=kind, service=service, size=stat.st_size,
                                mtime=datetime.fromtimestamp(stat.st_mtime, UTC).replace(tzinfo=None)))
    return found


def file_sha256(path: Path, limit: int | None = None) -> str:
    digest = hashlib.sha256()
    remaining = limit
    with open(path, "rb") as handle:
        while True:
            block = handle.read(8 * 1024 * 1024 if remaining is None else min(8 * 1024 * 1024, remaining))
            if not block:
                break
            digest.update(block)
            if remaining is not None:
                remaining -= len(block)
                if remaining <= 0:
                    break
    return digest.hexdigest()


def mask_key(data_dir: Path) -> bytes:
    """The masking key: QA_ASSETS_MASK_KEY, else a random key kept beside the warehouse (created once)."""
    from_env = os.environ.get("QA_ASSETS_MASK_KEY")
    if from_env:
        return from_env.encode("utf-8")
    key_file = data_dir / "mask.key"
    if not key_file.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    return key_file.read_text().strip().encode("utf-8")


# ---------------------------------------------------------------------------------------- schema


def ensure_ingest_tables(con: duckdb.DuckDBPyConnection) -> None:
    for name in PARTITIONED_TABLES:
        warehouse.ensure_table(con, f"staging.{name}", tables.RAW_TABLES[name])
        warehouse.ensure_table(con, f"raw.{name}", tables.RAW_TABLES[name])
    warehouse.ensure_table(con, "raw.quarantine", tables.QUARANTINE)
    warehouse.ensure_table(con, "raw.catalog", tables.CATALOG)
    warehouse.ensure_table(con, LEDGER_TABLE, LEDGER)
    warehouse.ensure_table(con, MASK_COUNTS_TABLE, MASK_COUNTS)
    feedback_schema = _feedback_schema()
    if feedback_schema is not None:
        warehouse.ensure_table(con, "raw.feedback", feedback_schema)


def _feedback_schema() -> dict[str, pl.DataType] | None:
    try:
        from qa_assets.lib.governance import FEEDBACK
    except ImportError:
        return None
    return FEEDBACK


def _whole_file_parser(kind: str) -> Callable[[bytes, str], ParseResult] | None:
    if kind == "deployments":
        from qa_assets.lib.ingest.cdevents import parse_cdevents

        return parse_cdevents
    if kind == "tests":
        from qa_assets.lib.ingest.junit import parse_junit

        return parse_junit
    if kind == "catalog":
        from qa_assets.lib.ingest.catalog import parse_catalog

        return parse_catalog
    if kind == "feedback":
        try:
            from qa_assets.lib.governance import parse_feedback
        except ImportError:
            return None
        return parse_feedback
    return None


# ---------------------------------------------------------------------------------------- parsing


@dataclass
class Parsed:
    """Records of one chunk of one file: accepted rows per table and quarantine rows."""

    rows: dict[str, pl.DataFrame]
    quarantine: pl.DataFrame
    records_read: int


def _bad_line_rows(kind: str, source_file: str, bad: list[BadLine]) -> pl.DataFrame:
    return tables.quarantine_rows(
        kind, source_file, [b.reason for b in bad], [b.line for b in bad], [b.offset for b in bad],
        [b.excerpt for b in bad],
    )


def _is_json_lines(path: Path, first_line: str | None) -> bool:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return True
    return bool(first_line) and first_line.lstrip().startswith("{")


def _parse_line_file(
    landed: LandedFile, state: ReadState, config: LandingConfig, *, final: bool, otlp_con
) -> Iterator[Parsed]:
    source_file = str(landed.path)
    if landed.kind == "otlp" and landed.path.name.lower().removesuffix(".gz").endswith(".json") \
            and state.bytes_consumed == 0:
        document = _parse_otlp_document(landed, state, otlp_con=otlp_con)
        if document is not None:
            yield document
            return  # else: JSON lines after all, read below
    from qa_assets.lib.ingest.otlp import parse_otlp_lines

    mode: str | None = None
    for chunk in iter_line_chunks(landed.path, state, final=final):
        quarantine = _bad_line_rows(landed.kind, source_file, chunk.bad_lines)
        lines = chunk.lines.filter(pl.col("line").str.strip_chars().str.len_bytes() > 0)
        if landed.kind == "otlp":
            frames = parse_otlp_lines(otlp_con, lines, source_file)
            yield Parsed({"spans": frames.spans, "logs": frames.logs, "metrics": frames.metrics},
                         pl.concat([quarantine, frames.quarantine]), frames.records_read + len(chunk.bad_lines))
            continue
        from qa_assets.lib.ingest.applogs import parse_json_log, parse_text_log

        if mode is None and lines.height:
            mode = "json" if _is_json_lines(landed.path, lines["line"][0]) else "text"
        if mode == "json":
            result = parse_json_log(lines, service=landed.service, source_file=source_file,
                                    reference_time=landed.mtime)
        elif mode == "text":
            log_format = config.log_format_for(landed.service)
            # The file's modification time dates syslog-style stamps written without a year.
            result = parse_text_log(lines, log_format=log_format, service=landed.service or "unknown",
                                    source_file=source_file, reference_time=landed.mtime)
        else:
            result = ParseResult(tables.empty(tables.LOGS), tables.empty(tables.QUARANTINE), 0)
        yield Parsed({"logs": result.accepted}, pl.concat([quarantine, result.quarantine]),
                     result.records_read + len(chunk.bad_lines))
    if state.truncated:
        yield Parsed({}, tables.quarantine_rows(
            landed.kind, source_file,
            [f"{state.truncated}; records after decompressed byte {state.bytes_consumed} are lost in this file; "
             "ask the producer to resend it"],
            [state.lines_consumed + 1], [state.bytes_consumed], [None]), 1)


def _parse_otlp_document(landed: LandedFile, state: ReadState, *, otlp_con) -> Parsed | None:
    """A `.json` export holding one pretty-printed request (as in the OTLP examples); None if it is not one."""
    from qa_assets.lib.ingest.otlp import parse_otlp_lines, single_document_as_line

    data, problem = read_whole(landed.path)
    text = data.decode("utf-8", errors="replace")
    line = single_document_as_line(text) if problem is None else None
    if line is None:
        return None
    state.bytes_consumed, state.lines_consumed = len(data), text.count("\n") + 1
    lines = pl.DataFrame({"line": [line], "source_line": [1], "source_offset": [0]},
                         schema={"line": pl.String, "source_line": pl.Int64, "source_offset": pl.Int64})
    frames = parse_otlp_lines(otlp_con, lines, str(landed.path))
    return Parsed({"spans": frames.spans, "logs": frames.logs, "metrics": frames.metrics}, frames.quarantine,
                  frames.records_read)


def _parse_whole_file(landed: LandedFile, parser) -> Parsed:
    source_file = str(landed.path)
    data, problem = read_whole(landed.path)
    if problem is not None and not data:
        return Parsed({}, tables.quarantine_rows(landed.kind, source_file, [problem], [None], [0], [None]), 1)
    result: ParseResult = parser(data, source_file)
    table = {"deployments": "deployments", "tests": "test_cases", "catalog": "catalog",
             "feedback": "feedback"}[landed.kind]
    accepted = result.accepted
    if table == "test_cases":  # reports without a timestamp belong to the hour the file was written
        accepted = accepted.with_columns(
            pl.col("timestamp").fill_null(landed.mtime),
        ).with_columns(pl.col("timestamp").dt.truncate("1h").alias("hour"))
    quarantine = result.quarantine
    records = result.records_read
    if problem is not None:
        quarantine = pl.concat([quarantine, tables.quarantine_rows(
            landed.kind, source_file, [f"{problem}; only the readable part was parsed"], [None], [len(data)],
            [None])])
        records += 1
    return Parsed({table: accepted}, quarantine, records)


# ---------------------------------------------------------------------------------------- ingestion


@dataclass
class FileOutcome:
    path: str
    kind: str
    status: str
    records_read: int = 0
    accepted: int = 0
    quarantined: int = 0
    reason: str | None = None


@dataclass
class IngestSummary:
    files: list[FileOutcome] = field(default_factory=list)
    mask_counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MASK_KINDS, 0))
    hours: set[datetime] = field(default_factory=set)

    def count(self, status: str) -> int:
        return sum(1 for f in self.files if f.status == status)

    @property
    def records_read(self) -> int:
        return sum(f.records_read for f in self.files)

    @property
    def accepted(self) -> int:
        return sum(f.accepted for f in self.files)

    @property
    def quarantined(self) -> int:
        return sum(f.quarantined for f in self.files)


def _ledger_rows(con: duckdb.DuckDBPyConnection) -> dict[str, dict]:
    frame = warehouse.read_table(con, LEDGER_TABLE)
    return {row["path"]: row for row in frame.iter_rows(named=True)}


def _mask(table: str, frame: pl.DataFrame, key: bytes, counts: dict[str, int]) -> pl.DataFrame:
    columns = [c for c in MASKED_COLUMNS.get(table, ()) if c in frame.columns and frame.schema[c] == pl.String]
    if frame.height == 0 or not columns:
        return frame
    masked, found = mask_columns(frame, columns, key)
    for kind, n in found.items():
        counts[kind] = counts.get(kind, 0) + n
    return masked


def _forget_file(con: duckdb.DuckDBPyConnection, path: str) -> None:
    """Remove every record an earlier version of a rewritten file left behind."""
    for name in PARTITIONED_TABLES:
        for schema in ("staging", "raw"):
            con.execute(warehouse.statement("DELETE FROM {t} WHERE source_file = ?", t=f"{schema}.{name}"), [path])
    for name in ("raw.quarantine", "raw.catalog"):
        con.execute(warehouse.statement("DELETE FROM {t} WHERE source_file = ?", t=name), [path])
    if warehouse.table_exists(con, "raw.feedback"):
        con.execute("DELETE FROM raw.feedback WHERE source_file = ?", [path])


def ingest_landing(
    con: duckdb.DuckDBPyConnection,
    landing: Path,
    *,
    key: bytes,
    settle_seconds: float = 30.0,
    now: datetime | None = None,
    progress: Callable[[int, int, LandedFile], None] | None = None,
) -> IngestSummary:
    """Ingest what is new in `landing` into staging/raw tables of `con`; see the module docstring."""
    landing = Path(landing)
    config = read_landing_config(landing)
    ensure_ingest_tables(con)
    now = now or datetime.now(UTC).replace(tzinfo=None)
    ledger = _ledger_rows(con)
    known_hashes = {row["content_sha256"]: path for path, row in ledger.items()
                    if row["status"] in ("ingested", "partial")}
    summary = IngestSummary()
    files = discover(landing)
    from qa_assets.lib.ingest.otlp import parse_connection

    otlp_con = parse_connection()
    try:
        for index, landed in enumerate(files):
            if progress:
                progress(index, len(files), landed)
            outcome = _ingest_file(con, landed, ledger.get(str(landed.path)), known_hashes, config, key=key,
                                   final=(now - landed.mtime).total_seconds() >= settle_seconds,
                                   otlp_con=otlp_con, summary=summary, now=now)
            if outcome is not None:
                summary.files.append(outcome)
    finally:
        otlp_con.close()
    return summary


def _ingest_file(con, landed: LandedFile, previous: dict | None, known_hashes: dict[str, str],
                 config: LandingConfig, *, key: bytes, final: bool, otlp_con, summary: IngestSummary,
                 now: datetime) -> FileOutcome | None:
    path = str(landed.path)
    unchanged = previous is not None and previous["size"] == landed.size and previous["mtime"] == landed.mtime
    if unchanged and previous["status"] in ("ingested", "duplicate", "ignored"):
        return None  # nothing new
    if landed.kind == "unknown":
        return _record(con, landed, None, "ignored", now,
                       reason="not under a known folder (otlp/, logs/<service>/, deployments/, tests/, catalog/, "
                              "feedback/); move it into one to ingest it")
    sha = file_sha256(landed.path)
    if previous is not None and previous["content_sha256"] == sha and previous["status"] in ("ingested", "duplicate"):
        return None  # touched, not changed
    if landed.size and sha in known_hashes and known_hashes[sha] != path:  # empty files are not copies
        return _record(con, landed, sha, "duplicate", now, duplicate_of=known_hashes[sha],
                       reason=f"same content as {known_hashes[sha]}, already ingested")
    state = ReadState()
    counts = {"records_read": 0, "accepted": 0, "quarantined": 0}
    rewritten = False
    if previous is not None and previous["status"] in ("ingested", "partial"):
        old_size = previous["size"] or 0
        if landed.size >= old_size and file_sha256(landed.path, old_size) == previous["content_sha256"]:
            state = ReadState(bytes_consumed=previous["bytes_consumed"] or 0,
                              lines_consumed=previous["lines_consumed"] or 0)
            counts = {k: previous[k] or 0 for k in counts}
        else:
            rewritten = True  # the bytes read before changed: start over
    line_based = landed.kind in ("otlp", "logs")
    parser = None if line_based else _whole_file_parser(landed.kind)
    if not line_based and parser is None:
        return _record(con, landed, sha, "waiting", now, reason=f"no parser for {landed.kind} files in this version")
    if not line_based and not final:
        return _record(con, landed, sha, "waiting", now, reason="file is still being written (modified recently)")
    if landed.kind == "logs" and not _is_json_file(landed) and config.log_format_for(landed.service) is None:
        return _record(con, landed, sha, "waiting", now,
                       reason=f"no log_format for service {landed.service!r}: add it under `log_formats:` in "
                              f"{CONFIG_FILE} at the landing root (or set `default_log_format`)")
    hours: set[datetime] = set()
    mask_counts = dict.fromkeys(MASK_KINDS, 0)
    con.execute("BEGIN TRANSACTION")
    try:
        if rewritten:
            _forget_file(con, path)
        chunks = _parse_line_file(landed, state, config, final=final, otlp_con=otlp_con) if line_based \
            else iter([_parse_whole_file(landed, parser)])
        for parsed in chunks:
            _store(con, parsed, key, mask_counts, hours, counts)
        status = "partial" if state.pending_tail or (line_based and not final) else "ingested"
        reason = "the last line is unterminated; it is read once the file settles" if state.pending_tail else None
        outcome = _record(con, landed, sha, status, now, state=state, counts=counts, hours=hours, reason=reason,
                          commit=False)
        warehouse.insert(con, MASK_COUNTS_TABLE, tables.conform(pl.DataFrame(
            {"path": [path], "ingested_at": [now], **{k: [v] for k, v in mask_counts.items()}}), MASK_COUNTS))
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    known_hashes[sha] = path
    for kind, n in mask_counts.items():
        summary.mask_counts[kind] = summary.mask_counts.get(kind, 0) + n
    summary.hours |= hours
    return outcome


def _is_json_file(landed: LandedFile) -> bool:
    if landed.path.name.lower().removesuffix(".gz").endswith((".jsonl", ".ndjson", ".json")):
        return True
    data = b""
    state = ReadState()
    for chunk in iter_line_chunks(landed.path, state, final=True, chunk_bytes=64 * 1024):
        lines = chunk.lines.filter(pl.col("line").str.strip_chars().str.len_bytes() > 0)
        if lines.height:
            data = lines["line"][0].encode()
            break
    return data.lstrip().startswith(b"{")


def _store(con, parsed: Parsed, key: bytes, mask_counts: dict[str, int], hours: set[datetime],
           counts: dict[str, int]) -> None:
    accepted = 0
    for table, frame in parsed.rows.items():
        if frame.height == 0:
            continue
        frame = _mask(table, frame, key, mask_counts)
        accepted += frame.height
        if table in PARTITIONED_TABLES:
            hours.update(h for h in frame["hour"].unique().to_list() if h is not None)
            warehouse.insert(con, f"staging.{table}", frame)
        else:
            warehouse.insert(con, f"raw.{table}", frame)
    quarantine = _mask("quarantine", parsed.quarantine, key, mask_counts)
    if quarantine.height:
        warehouse.insert(con, "raw.quarantine", quarantine)
    counts["records_read"] += parsed.records_read
    counts["accepted"] += accepted
    counts["quarantined"] += quarantine.height


def _record(con, landed: LandedFile, sha: str | None, status: str, now: datetime, *, reason: str | None = None,
            duplicate_of: str | None = None, state: ReadState | None = None, counts: dict | None = None,
            hours: set[datetime] | None = None, commit: bool = True) -> FileOutcome:
    counts = counts or {"records_read": 0, "accepted": 0, "quarantined": 0}
    row = {
        "path": str(landed.path), "kind": landed.kind, "service": landed.service, "size": landed.size,
        "mtime": landed.mtime, "content_sha256": sha, "status": status, "reason": reason,
        "duplicate_of": duplicate_of, "bytes_consumed": state.bytes_consumed if state else 0,
        "lines_consumed": state.lines_consumed if state else 0, **counts,
        "first_hour": min(hours) if hours else None, "last_hour": max(hours) if hours else None,
        "ingested_at": now,
    }
    frame = tables.conform(pl.DataFrame([row], schema_overrides={"mtime": tables.TS}), LEDGER)
    if commit:
        warehouse.replace_where(con, LEDGER_TABLE, frame, "path", [row["path"]])
    else:  # already inside the file's transaction
        con.execute(warehouse.statement("DELETE FROM {t} WHERE path = ?", t=LEDGER_TABLE), [row["path"]])
        warehouse.insert(con, LEDGER_TABLE, frame)
    return FileOutcome(path=row["path"], kind=landed.kind, status=status, reason=reason, **counts)


# ---------------------------------------------------------------------------------------- partitions


def staged_hours(con: duckdb.DuckDBPyConnection) -> list[datetime]:
    """Hours with staged records not yet published into raw tables."""
    if not all(warehouse.table_exists(con, f"staging.{name}") for name in PARTITIONED_TABLES):
        return []
    union = " UNION ".join(
        warehouse.statement("SELECT DISTINCT hour FROM {t} WHERE hour IS NOT NULL", t=f"staging.{name}")
        for name in PARTITIONED_TABLES
    )
    return sorted(row[0] for row in con.execute(union).fetchall())


def publish_hour(con: duckdb.DuckDBPyConnection, hour: datetime) -> dict[str, int]:
    """Move staged rows of `hour` into `raw.*` in one transaction; returns rows per table in raw for that hour.

    Idempotent: publishing an hour again moves only what arrived since (late data), and rows already
    in raw are never duplicated because staging rows are deleted in the same transaction.
    """
    ensure_ingest_tables(con)
    totals: dict[str, int] = {}
    con.execute("BEGIN TRANSACTION")
    try:
        for name in PARTITIONED_TABLES:
            names = {"target": f"raw.{name}", "staged": f"staging.{name}"}
            con.execute(warehouse.statement(
                "INSERT INTO {target} BY NAME SELECT * FROM {staged} WHERE hour = ?", **names), [hour])
            con.execute(warehouse.statement("DELETE FROM {staged} WHERE hour = ?", staged=names["staged"]), [hour])
            totals[name] = con.execute(
                warehouse.statement("SELECT count(*) FROM {target} WHERE hour = ?", target=names["target"]), [hour]
            ).fetchone()[0]
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return totals


def load_landing_frames(landing: Path, *, key: bytes = b"qa-assets-test-key") -> dict[str, pl.DataFrame]:
    """Parse a landing directory in memory: every raw table as a frame (for tests, evaluation and benchmarks)."""
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET enable_progress_bar = false")
        ingest_landing(con, Path(landing), key=key, settle_seconds=0)
        frames = {name: warehouse.read_table(con, f"staging.{name}") for name in PARTITIONED_TABLES}
        frames["quarantine"] = warehouse.read_table(con, "raw.quarantine")
        frames["catalog"] = warehouse.read_table(con, "raw.catalog")
        frames["files"] = warehouse.read_table(con, LEDGER_TABLE)
        return frames
    finally:
        con.close()
