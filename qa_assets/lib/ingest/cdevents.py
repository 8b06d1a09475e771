"""CDEvents (https://cdevents.dev, spec v0.4 and earlier) service events into ``raw.deployments``.

Input: one event per file, JSON lines, concatenated (pretty-printed) events, or a JSON array of events;
an event may also come wrapped in a CloudEvents structured-mode envelope (``specversion`` + ``data``).
Accepted types: ``dev.cdevents.service.{deployed,upgraded,rolledback,removed}.<any spec version>``.

Columns:

- ``event_id`` = ``context.id``; ``event_type`` = the predicate (deployed/upgraded/rolledback/removed);
  ``timestamp`` = ``context.timestamp`` (RFC 3339, any offset, converted to UTC; an offset is required);
  ``hour`` = ``timestamp`` truncated to the hour.
- ``environment`` = ``subject.content.environment.id`` (else its ``name``, else ``customData`` environment).
- ``artifact_id`` = ``subject.content.artifactId`` (a package URL, ``pkg:oci/cart@sha256:...?tag=1.4.2``).
- ``service``, in this order: a ``service``/``serviceName``/``service.name`` key in ``customData``; else
  ``subject.id`` (its last path segment) when there is no artifact (``service.removed`` carries none) or
  when the artifact's name is built from it (``cart`` for ``pkg:generic/cart-config@7``); else the package
  URL's name, without a configuration affix when the artifact is a configuration bundle
  (``cart-config`` -> ``cart``).
- ``version``: the package URL's ``tag`` qualifier, else its version (percent-decoded, so a digest reads
  ``sha256:...``), else a ``version`` key in ``customData``.
- From ``customData`` (keys matched case- and separator-insensitively, one level of nesting as dotted
  keys): ``commit`` (commit, commitSha, commitId, gitCommit, git.commit, git.sha, vcs.revision,
  revision), ``author`` (author, commitAuthor, git.author, triggeredBy; an object gives its name or
  email), ``changed_files`` (changedFiles, changed_files, files, git.changedFiles; a single string is one
  file), ``previous_version`` (previousVersion, fromVersion, rollbackFrom, previous.version),
  ``change_kind`` (changeKind, change_kind, change.kind, kind).
- ``change_kind``: ``config`` or ``code``. A ``customData`` value naming config/configuration/settings/
  feature flags gives ``config``; code/app/image/binary gives ``code``; otherwise ``config`` when the
  artifact's package-URL name or namespace has a word config/configs/configuration/conf/cfg/settings/
  configmap/flags, else ``code``.
- ``custom_data`` = ``customData`` as JSON text (a JSON string in ``customData`` is parsed first).

Counting: every event is a record - each top-level JSON value, each element of a top-level array - and so
is each stretch of bytes that could not be read as JSON (skipped up to the next line that starts with
``{``). ``records_read == accepted.height + quarantine.height`` always holds. An empty file is one
quarantined record. Rejected: invalid JSON, invalid UTF-8, a value that is not an object, another CDEvent
type, a missing id/timestamp/service, a timestamp that is not an RFC 3339 string, a repeated event id
(the first is kept).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from urllib.parse import unquote

import orjson
import polars as pl

from qa_assets.lib.ingest.tables import DEPLOYMENTS, QUARANTINE, conform, empty, quarantine_rows

SOURCE_KIND = "deployments"
SUPPORTED_PREDICATES = ("deployed", "upgraded", "rolledback", "removed")
_TYPE = re.compile(
    r"dev\.cdevents\.(?P<subject>[A-Za-z]+)\.(?P<predicate>[A-Za-z]+)(?:\.(?P<version>\d+\.\d+\.\d+\S*))?"
)


@dataclass(frozen=True)
class ParseResult:
    """What a parser returns for one file (CDEvents, JUnit and catalog parsers share this shape).

    ``records_read`` is counted by the parser from the input itself (what a record is differs per
    format; each parser's docstring says), and ``accepted.height + quarantine.height == records_read``.
    ``ignored`` counts things read but deliberately not kept and not counted as records (catalog
    entities of kinds other than Component and Resource); it is 0 for the other parsers.
    """

    accepted: pl.DataFrame
    quarantine: pl.DataFrame
    records_read: int
    ignored: int = 0


# ------------------------------------------------------------------------------------ shared helpers

_RFC3339 = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[Tt ](?P<h>\d{2}):(?P<m>\d{2}):(?P<s>\d{2})(?:[.,](?P<frac>\d+))?"
    r"[ ]?(?P<tz>[Zz]|UTC|GMT|[+-]\d{2}:?\d{2})?"
)


def parse_timestamp(text: str, *, offset_required: bool) -> datetime | None:
    """An ISO 8601 / RFC 3339 timestamp as naive UTC; fractions beyond microseconds are cut.

    Without an offset the time is taken as UTC when ``offset_required`` is False, else None.
    """
    found = _RFC3339.fullmatch(text.strip())
    if found is None:
        return None if offset_required else _rfc2822_timestamp(text)
    if found["tz"] is None and offset_required:
        return None
    fraction = (found["frac"] or "")[:6].ljust(6, "0")
    try:
        moment = datetime.fromisoformat(f"{found['date']}T{found['h']}:{found['m']}:{found['s']}.{fraction}")
    except ValueError:
        return None
    tz = found["tz"]
    if tz and tz not in ("Z", "z", "UTC", "GMT"):
        sign = 1 if tz[0] == "+" else -1
        digits = tz[1:].replace(":", "")
        offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
        if offset >= timedelta(hours=24):
            return None
        moment = moment.replace(tzinfo=timezone(sign * offset)).astimezone(UTC).replace(tzinfo=None)
    return moment


def _rfc2822_timestamp(text: str) -> datetime | None:
    """``Sun, 24 Jan 2021 19:21:45 GMT`` (some TestNG and .NET reporters) as naive UTC."""
    try:
        moment = parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def decode_text(data: bytes) -> str:
    """Bytes to text: a UTF-8 or UTF-16 byte-order mark is honoured; invalid UTF-8 bytes are kept as
    surrogate escapes so that the records holding them can be reported (see ``has_invalid_bytes``)."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    elif data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            pass
    return data.decode("utf-8", "surrogateescape")


_INVALID_BYTE = re.compile("[\udc80-\udcff]")


def has_invalid_bytes(text: str) -> bool:
    return _INVALID_BYTE.search(text) is not None


def excerpt_of(text: str, limit: int = 1000) -> str:
    """Record text for a quarantine excerpt: invalid bytes shown as U+FFFD."""
    return _INVALID_BYTE.sub("\ufffd", text[:limit])


class _Positions:
    """Line numbers and byte offsets of character positions, computed incrementally (positions asked in
    increasing order), so that non-ASCII text costs no more than one pass."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._ascii = text.isascii()
        self._char = 0
        self._byte = 0
        self._line = 1

    def at(self, index: int) -> tuple[int, int]:
        if index < self._char:  # asked out of order: start over (rare)
            self._char, self._byte, self._line = 0, 0, 1
        segment = self._text[self._char:index]
        self._line += segment.count("\n")
        self._byte += len(segment) if self._ascii else len(segment.encode("utf-8", "surrogateescape"))
        self._char = index
        return self._line, self._byte


@dataclass
class _RawRecord:
    line: int
    offset: int
    text: str  # the record's own text
    value: object = None
    error: str | None = None  # why it could not be read as JSON


_WHITESPACE = re.compile(r"[ \t\r\n]*")
_NEXT_OBJECT_LINE = re.compile(r"\n(?=\{)")


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def iter_json_records(text: str) -> Iterator[_RawRecord]:
    """Top-level JSON values separated by whitespace (one document, JSON lines, or concatenated
    documents); a top-level array yields its elements. After a syntax error, reading resumes at the next
    line that starts with ``{``; the skipped stretch is one record with the error."""
    positions = _Positions(text)
    index = _WHITESPACE.match(text, 0).end()
    while index < len(text):
        if text.startswith("[", index):
            index = yield from _iter_array(text, index, positions)
            index = _WHITESPACE.match(text, index).end()
            continue
        line, offset = positions.at(index)
        try:
            value, end = _DECODER.raw_decode(text, index)
        except ValueError as exc:
            index = yield from _skip_unreadable(text, index, line, offset, _json_error(exc))
            continue
        yield _RawRecord(line, offset, text[index:end], value=value)
        index = _WHITESPACE.match(text, end).end()


def _skip_unreadable(text: str, index: int, line: int, offset: int, error: str) -> Iterator[_RawRecord]:
    """One record for the stretch from ``index`` to the next line starting with ``{``; returns the
    position to go on from."""
    resume = _NEXT_OBJECT_LINE.search(text, index + 1)
    stop = resume.start() + 1 if resume else len(text)
    yield _RawRecord(line, offset, text[index:stop].rstrip(), error=error)
    return stop


def _iter_array(text: str, index: int, positions: _Positions) -> Iterator[_RawRecord]:
    """The elements of the array starting at ``index``; returns the position after it."""
    array_line, array_offset = positions.at(index)
    index = _WHITESPACE.match(text, index + 1).end()
    if text.startswith("]", index):
        return index + 1
    while index < len(text):
        line, offset = positions.at(index)
        try:
            value, end = _DECODER.raw_decode(text, index)
        except ValueError as exc:
            error = (
                _json_error(exc)
                + f" (in the array starting at line {array_line}); the rest of the array could not be read"
            )
            return (yield from _skip_unreadable(text, index, line, offset, error))
        yield _RawRecord(line, offset, text[index:end], value=value)
        index = _WHITESPACE.match(text, end).end()
        if text.startswith(",", index):
            index = _WHITESPACE.match(text, index + 1).end()
        elif text.startswith("]", index):
            return index + 1
        else:
            line, offset = positions.at(index)
            error = (
                f"invalid JSON: expected ',' or ']' in the array starting at line {array_line}; "
                "the rest of the array could not be read"
            )
            return (yield from _skip_unreadable(text, index, line, offset, error))
    yield _RawRecord(array_line, array_offset, text[array_offset:].rstrip() if text.isascii() else "",
                     error="invalid JSON: the array is not closed; the file may be cut short")
    return index


def _json_error(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    return f"invalid JSON: {exc}"


def _type_name(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


# ---------------------------------------------------------------------------------------- purl


@dataclass(frozen=True)
class PackageUrl:
    type: str
    namespace: str | None
    name: str
    version: str | None
    qualifiers: dict[str, str]


def parse_purl(text: str) -> PackageUrl | None:
    """A package URL (https://github.com/package-url/purl-spec): ``pkg:type/namespace/name@version?q=v#s``."""
    if not isinstance(text, str) or not text.lower().startswith("pkg:"):
        return None
    rest = text[4:].lstrip("/").split("#", 1)[0]
    rest, _, query = rest.partition("?")
    qualifiers = {}
    for pair in query.split("&") if query else []:
        key, _, value = pair.partition("=")
        if key and value:
            qualifiers[key.lower()] = unquote(value)
    type_, _, path = rest.partition("/")
    path = path.strip("/")
    version = None
    if "@" in path:
        path, _, version = path.rpartition("@")
        version = unquote(version) or None
    segments = [unquote(s) for s in path.split("/") if s]
    if not type_ or not segments:
        return None
    return PackageUrl(
        type=type_.lower(),
        namespace="/".join(segments[:-1]) or None,
        name=segments[-1],
        version=version,
        qualifiers=qualifiers,
    )


_CONFIG_WORDS = frozenset(
    {"config", "configs", "configuration", "conf", "cfg", "settings", "configmap", "flags"}
)
_WORD_SPLIT = re.compile(r"[-_./\s]+")
_CONFIG_AFFIX = re.compile(
    r"^(?:config|configs|configuration|conf|cfg|settings)[-_.](.+)$"
    r"|^(.+?)[-_.](?:config|configs|configuration|conf|cfg|settings|configmap|flags)$",
    re.I,
)


def is_config_artifact(purl: PackageUrl) -> bool:
    words = _WORD_SPLIT.split(f"{purl.namespace or ''}/{purl.name}".lower())
    return any(word in _CONFIG_WORDS for word in words)


# ----------------------------------------------------------------------------------- customData

_FIELD_KEYS: dict[str, tuple[str, ...]] = {
    "service": ("service", "servicename", "service.name"),
    "commit": ("commit", "commitsha", "commitid", "gitcommit", "git.commit", "git.sha", "git.commitsha",
               "vcs.revision", "revision"),
    "author": ("author", "commitauthor", "git.author", "triggeredby", "deployedby"),
    "changed_files": ("changedfiles", "files", "git.changedfiles", "changes.files"),
    "previous_version": ("previousversion", "fromversion", "rollbackfrom", "previous.version"),
    "change_kind": ("changekind", "change.kind", "kind"),
    "version": ("version", "service.version"),
    "environment": ("environment", "env"),
}


def _normalized_key(key: str) -> str:
    return re.sub(r"[-_\s]", "", key).lower()


def _flatten(custom: dict) -> dict[str, object]:
    """``{"git": {"commit": "x"}}`` -> ``{"git.commit": "x"}`` (one level), keys normalized."""
    flat: dict[str, object] = {}
    for key, value in custom.items():
        name = _normalized_key(str(key))
        flat.setdefault(name, value)
        if isinstance(value, dict):
            for inner_key, inner_value in value.items():
                flat.setdefault(f"{name}.{_normalized_key(str(inner_key))}", inner_value)
    return flat


def _scalar_text(value: object) -> str | None:
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict):  # an author object
        for key in ("name", "login", "username", "email"):
            if isinstance(value.get(key), str) and value[key].strip():
                return value[key].strip()
    return None


def _custom_field(flat: dict[str, object], field: str) -> object:
    for key in _FIELD_KEYS[field]:
        if key in flat and flat[key] is not None:
            return flat[key]
    return None


def _changed_files(value: object) -> list[str] | None:
    if isinstance(value, str):
        return [value] if value.strip() else None
    if isinstance(value, list):
        files = [item if isinstance(item, str) else _scalar_text(item) for item in value]
        return [f for f in files if f] or None
    return None


def _change_kind(value: object, purl: PackageUrl | None) -> str:
    text = _scalar_text(value)
    if text:
        lowered = text.lower()
        if any(word in lowered for word in ("config", "setting", "flag")):
            return "config"
        if any(word in lowered for word in ("code", "app", "image", "binary", "release")):
            return "code"
    return "config" if purl is not None and is_config_artifact(purl) else "code"


# ---------------------------------------------------------------------------------------- events


class _Rejected(Exception):
    """A record that cannot be accepted; the message is the quarantine reason."""


def _text_field(container: dict, key: str, where: str, *, required: bool) -> str | None:
    value = container.get(key)
    if value is None or value == "":
        if required:
            raise _Rejected(f"missing {where}; every CDEvent needs it")
        return None
    if isinstance(value, int | float) and not isinstance(value, bool) and key == "id":
        return str(value)
    if not isinstance(value, str):
        raise _Rejected(f"{where} must be a string, got {_type_name(value)}")
    return value.strip()


def _service_name(subject_id: str | None, purl: PackageUrl | None) -> str | None:
    subject_name = subject_id.rstrip("/").rsplit("/", 1)[-1] if subject_id else None
    if purl is None:
        return subject_name
    if subject_name:
        lowered, name = subject_name.lower(), purl.name.lower()
        built_from = rf"^(?:{re.escape(lowered)}[-_.].+|.+[-_.]{re.escape(lowered)})$"
        if name == lowered or re.match(built_from, name):
            return subject_name
    if is_config_artifact(purl):
        stripped = _CONFIG_AFFIX.match(purl.name)
        if stripped:
            return stripped.group(1) or stripped.group(2)
    return purl.name


def _read_event(value: object) -> dict[str, object]:
    """One JSON value to a deployments row (without provenance), or raise _Rejected."""
    if not isinstance(value, dict):
        raise _Rejected(f"expected a CDEvent JSON object, got {_type_name(value)}")
    envelope: dict = {}
    if "specversion" in value and isinstance(value.get("data"), dict):  # CloudEvents structured mode
        envelope, value = value, value["data"]
    context = value.get("context", {}) if "context" in value else {}
    if not isinstance(context, dict):
        raise _Rejected(f"context must be an object, got {_type_name(context)}")
    context = {
        "id": context.get("id", envelope.get("id")),
        "type": context.get("type", envelope.get("type")),
        "timestamp": context.get("timestamp", envelope.get("time")),
    }
    event_type = _text_field(context, "type", "context.type", required=True)
    parsed_type = _TYPE.fullmatch(event_type)
    if parsed_type is None or parsed_type["subject"].lower() != "service" or (
        parsed_type["predicate"].lower() not in SUPPORTED_PREDICATES
    ):
        raise _Rejected(
            f"unsupported CDEvent type {event_type!r}; qa-assets reads "
            "service.deployed|upgraded|rolledback|removed"
        )
    event_id = _text_field(context, "id", "context.id", required=True)
    raw_time = context.get("timestamp")
    if raw_time is None or raw_time == "":
        raise _Rejected("missing context.timestamp; every CDEvent needs it")
    if not isinstance(raw_time, str):
        raise _Rejected(
            "context.timestamp must be an RFC 3339 string such as 2024-05-01T10:00:00Z, "
            f"got {_type_name(raw_time)}"
        )
    timestamp = parse_timestamp(raw_time, offset_required=True)
    if timestamp is None:
        raise _Rejected(
            f"context.timestamp {raw_time!r} is not an RFC 3339 time with an offset "
            "(write it like 2024-05-01T10:00:00Z or 2024-05-01T12:00:00+02:00)"
        )
    subject = value.get("subject", {})
    if not isinstance(subject, dict):
        raise _Rejected(f"subject must be an object, got {_type_name(subject)}")
    content = subject.get("content", {})
    if not isinstance(content, dict):
        raise _Rejected(f"subject.content must be an object, got {_type_name(content)}")
    custom = value.get("customData")
    if isinstance(custom, str):
        try:
            custom = orjson.loads(custom)
        except orjson.JSONDecodeError:
            pass
    flat = _flatten(custom) if isinstance(custom, dict) else {}

    artifact_id = content.get("artifactId")
    artifact_id = artifact_id.strip() if isinstance(artifact_id, str) and artifact_id.strip() else None
    purl = parse_purl(artifact_id) if artifact_id else None
    subject_id = subject.get("id")
    if isinstance(subject_id, str | int) and not isinstance(subject_id, bool):
        subject_id = str(subject_id).strip() or None
    else:
        subject_id = None
    service = _scalar_text(_custom_field(flat, "service")) or _service_name(subject_id, purl)
    if not service:
        raise _Rejected(
            "no service named: give subject.content.artifactId (a package URL), subject.id, "
            "or customData.service"
        )
    version = None
    if purl is not None:
        version = purl.qualifiers.get("tag") or purl.version
    version = version or _scalar_text(_custom_field(flat, "version"))
    environment_value = content.get("environment")
    environment = None
    if isinstance(environment_value, dict):
        environment = _scalar_text(environment_value.get("id")) or _scalar_text(environment_value.get("name"))
    elif isinstance(environment_value, str):
        environment = environment_value.strip() or None
    environment = environment or _scalar_text(_custom_field(flat, "environment"))
    return {
        "event_id": event_id,
        "event_type": parsed_type["predicate"].lower(),
        "timestamp": timestamp,
        "service": service,
        "version": version,
        "artifact_id": artifact_id,
        "environment": environment,
        "change_kind": _change_kind(_custom_field(flat, "change_kind"), purl),
        "commit": _scalar_text(_custom_field(flat, "commit")),
        "author": _scalar_text(_custom_field(flat, "author")),
        "changed_files": _changed_files(_custom_field(flat, "changed_files")),
        "previous_version": _scalar_text(_custom_field(flat, "previous_version")),
        "custom_data": None if custom is None else orjson.dumps(custom).decode(),
    }


def _event_time(value: object) -> datetime | None:
    """The record's own time, when it can be read, for the quarantine row's hour."""
    if isinstance(value, dict):
        data = value.get("data") if isinstance(value.get("data"), dict) else value
        context = data.get("context") if isinstance(data.get("context"), dict) else {}
        raw = context.get("timestamp", value.get("time"))
        if isinstance(raw, str):
            return parse_timestamp(raw, offset_required=True)
    return None


def parse_cdevents(data: bytes, source_file: str) -> ParseResult:
    """Parse one deployments file; never raises on bad input (see the module docstring)."""
    text = decode_text(data)
    rows: list[dict[str, object]] = []
    bad: list[tuple[str, int | None, int | None, str, datetime | None]] = []
    if not text.strip():
        bad.append(("the file is empty; a deployments file holds CDEvents as JSON", 1, 0, "", None))
    first_seen: dict[str, int] = {}
    for record in iter_json_records(text) if text.strip() else ():
        if has_invalid_bytes(record.text):
            bad.append(
                ("not valid UTF-8; CDEvents are UTF-8 JSON (re-encode the producer's output as UTF-8)",
                 record.line, record.offset, record.text, None)
            )
            continue
        if record.error is not None:
            bad.append((record.error, record.line, record.offset, record.text, None))
            continue
        try:
            row = _read_event(record.value)
        except _Rejected as exc:
            bad.append((str(exc), record.line, record.offset, record.text, _event_time(record.value)))
            continue
        event_id = str(row["event_id"])
        if event_id in first_seen:
            bad.append(
                (f"duplicate event id {event_id!r} (first seen at line {first_seen[event_id]}); "
                 "the first was kept",
                 record.line, record.offset, record.text, row["timestamp"])
            )
            continue
        first_seen[event_id] = record.line
        rows.append({**row, "source_line": record.line, "source_offset": record.offset})
    accepted = _deployments_frame(rows, source_file)
    quarantine = quarantine_rows(
        SOURCE_KIND,
        source_file,
        [b[0] for b in bad],
        [b[1] for b in bad],
        [b[2] for b in bad],
        [excerpt_of(b[3]) for b in bad],
    )
    if bad:
        hours = pl.Series("hour", [b[4] for b in bad], dtype=pl.Datetime("us")).dt.truncate("1h")
        quarantine = conform(quarantine.with_columns(hours), QUARANTINE)
    return ParseResult(accepted=accepted, quarantine=quarantine, records_read=len(rows) + len(bad))


def _deployments_frame(rows: list[dict[str, object]], source_file: str) -> pl.DataFrame:
    if not rows:
        return empty(DEPLOYMENTS)
    schema = {name: dtype for name, dtype in DEPLOYMENTS.items() if name not in ("hour", "source_file")}
    frame = pl.DataFrame(rows, schema=schema)
    return conform(
        frame.with_columns(
            pl.col("timestamp").dt.truncate("1h").alias("hour"),
            pl.lit(source_file).alias("source_file"),
        ),
        DEPLOYMENTS,
    )
