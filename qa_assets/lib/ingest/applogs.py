"""Application logs from the landing directory's ``logs/<service>/`` folders into ``raw.logs``.

Two kinds of file, both read as chunks of lines (``reader.iter_line_chunks``). Nothing here masks: the
caller masks the free-text columns before storing.

Plain text (``parse_text_log``), split by the service's logparser-style ``log_format``
(``<Date> <Time> <Level> <Component>: <Content>``):

- A record starts at a line that matches the format and whose time fields hold at least one digit (so a
  stack line such as ``Caused by: x.Y: msg`` that happens to fit the format does not start a record).
  The lines after it that don't start a record (stack traces, wrapped messages) belong to it and are kept,
  joined by newlines, in ``exception_stacktrace``; ``exception_type`` / ``exception_message`` are read from
  that text (``exception_columns``). ``body`` is the ``Content`` field.
- Lines before the first record of a chunk are one quarantined record whose reason names the lines and
  the format they do not match. (A chunk boundary can fall inside a stack trace; chunks are 32 MiB, so
  this is rare, and the reason says so when the run does not start the file.)
- Header fields are recognised by name, ignoring case and punctuation: the time from Timestamp/Datetime/
  Ts/..., else Date + Time, else [Year] Month Day Time, else Time or Date alone (whichever reads the most
  values), plus a Timezone/Tz/Zone/Offset field; the level from Level/Severity/Lvl/Loglevel/Priority;
  the component from Component/Logger/Class/Module/Category/Source/Caller/Name; trace_id/span_id from
  TraceId/SpanId; service/service_version from Service/App/Version fields (else the folder's service).
  The other header fields go to ``attributes`` (a JSON object).

JSON lines (``parse_json_log``), any common dialect (pino, bunyan, zap, logrus, logstash-logback-encoder,
python-json-logger, structlog, ECS, Serilog CLEF, GELF, log4j2 JSON layout, OpenTelemetry-style flat
records): one line is one record. Keys are matched ignoring case (and ``-`` vs ``_``), at the top level,
as flat dotted keys (ECS ``"log.level"``) and one level inside ``log``/``error``/``err``/``exception``/
``exc``/``service``/``trace``/``span``/``resource``/``attributes``/``dd``/``otel``/``logger`` objects;
``JSON_KEYS`` lists the spellings of each column in order of preference. ``error``/``err``/``exception``
given as text is the exception message, or its stack when it spans lines. A bare ``version`` key is not
taken for the service version (GELF and others use it for their own format's version). Every key not used
goes to ``attributes`` (a JSON object, nesting kept; a less preferred spelling of a used key stays there
too). Lines that are not valid JSON or not a JSON object are quarantined with the parser's reason; the
valid lines around them are kept. Blank lines are ``ignored``. Speed: lines are decoded with orjson, and
records sharing one key set are read column-wise with the key choice made once per key set; records
with nested objects under those keys, or nulls in chosen keys, are read one by one.

Times (both kinds) are read vectorized: candidate layouts (ISO 8601 with or without ``T``, fraction,
offset or ``Z``; ``2026-11-02 10:00:00,123``; ``2026/11/02 10:00:00.123456``; ``081109 203615``;
``17/06/09 20:10:40``; ``02/Nov/2026:10:00:00 +0000``; ``Nov 2, 2026 10:00:00 PM``; ctime; RFC 1123;
syslog ``Jun 14 15:16:01``; ``2005-06-03-15.42.50.675872``; epoch seconds/milli/micro/nanoseconds told
apart by digit count, nanoseconds cut to microseconds; ... see ``LAYOUTS``) are tried on a sample of
the column, and the one that reads the most values parses the column (ties: the one with the fewest
backward steps in time, then the list order, so ``17/06/09`` is year/month/day unless the data says
otherwise); values it cannot read get the next best layout, then a pass with whitespace, brackets and
comma fractions cleaned and time-zone names resolved.
Offsets (``+01:00``, ``-0500``, ``Z``, ``UTC``/``GMT``, unambiguous abbreviations such as ``CET``/``PST``,
IANA names such as ``Europe/Berlin``) are converted to UTC; times without one are taken as UTC. Ambiguous
abbreviations (``CST``, ``IST``) are not guessed. A time without a year (syslog) gets the year of
``reference_time`` (pass the file's modification time; default: now), or the year before when that
would put it after the day following the reference day (a log is not written in the future).
Readings before 1900 or after 2999 are misreadings (chrono's ``%Y`` reads ``17`` as the year 17). A
record whose time is missing or unreadable (in JSON also: a boolean, an object) is quarantined with a
reason naming the value. ``hour`` is the time truncated to the hour.

Levels (both kinds) are normalised to TRACE|DEBUG|INFO|WARN|ERROR|FATAL from words (``warning``, ``err``,
``erro``, ``crit``, ``critical``, ``severe``, ``notice``, ``fine``, ``panic``, ``DEBUG1``, ...), single
letters (glog/logcat ``V D I W E F``) and numbers, by the key's meaning where it tells (``severity_number``:
OpenTelemetry 1-24; ``levelno``: Python 10-50; ``level_value``: logback 5000-50000; ``priority``/``syslog``
keys: syslog 0-7), else 10-69 as pino/bunyan, 0-7 as syslog and 5000-69999 as logback. Unknown words give
a null ``level``. ``severity_text`` keeps the producer's text; ``severity_number`` is the producer's
OpenTelemetry number when it sent one, else the one of the level.

trace_id/span_id are lower-case hex: UUID dashes are dropped, 64-bit trace ids are padded to 32 digits,
and decimal ids (Datadog ``dd.trace_id``) are converted; other values are kept as written.

Counting: ``records_read`` = records started by a header line (text) or non-blank lines (JSON), plus the
quarantined runs of orphan lines (text); ``accepted.height + quarantine.height == records_read``.
"""

from __future__ import annotations

import re
import zoneinfo
from collections import deque
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from itertools import repeat
from operator import itemgetter

import orjson
import polars as pl

from qa_assets.lib.ingest.cdevents import ParseResult
from qa_assets.lib.ingest.tables import LOGS, QUARANTINE, TS, conform, empty
from qa_assets.lib.log_format import LogFormatError, compile_log_format, split_log_lines

SOURCE_KIND = "logs"
EXCERPT_CHARS = 1000
SAMPLE_ROWS = 512  # values a time layout is chosen on, spread over the column
LINES_SCHEMA = {"line": pl.String, "source_line": pl.Int64, "source_offset": pl.Int64}

# ---------------------------------------------------------------------------------------------- levels

LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")
OTEL_SEVERITY = {"TRACE": 1, "DEBUG": 5, "INFO": 9, "WARN": 13, "ERROR": 17, "FATAL": 21}
LEVEL_WORDS: dict[str, str] = {
    **dict.fromkeys(("trace", "trac", "trc", "finest", "finer", "verbose", "vrb", "v", "t"), "TRACE"),
    **dict.fromkeys(("debug", "debu", "dbg", "d", "fine", "config"), "DEBUG"),
    **dict.fromkeys(("info", "inf", "information", "informational", "i", "notice", "note", "log"), "INFO"),
    **dict.fromkeys(("warn", "warning", "wrn", "wrng", "w"), "WARN"),
    **dict.fromkeys(("error", "err", "erro", "eror", "e", "severe", "failure", "fail"), "ERROR"),
    **dict.fromkeys(
        ("fatal", "fata", "ftl", "f", "critical", "crit", "crt", "alert", "emerg", "emergency", "panic",
         "pani", "a"),
        "FATAL",
    ),
}
_SYSLOG_SEVERITY = ("FATAL", "FATAL", "FATAL", "ERROR", "WARN", "INFO", "INFO", "DEBUG")  # 0 emerg .. 7 debug


def _step_level(step: pl.Expr) -> pl.Expr:
    """0 TRACE, 1 DEBUG, 2 INFO, 3 WARN, 4 ERROR, 5 and above FATAL; negative or null: null."""
    return pl.when(step >= 0).then(
        step.clip(upper_bound=5).cast(pl.Int64, strict=False).replace_strict(
            list(range(6)), list(LEVELS), default=None, return_dtype=pl.String
        )
    )


def _syslog_level(number: pl.Expr) -> pl.Expr:
    return pl.when(number.is_between(0, 7) & (number == number.floor())).then(
        number.cast(pl.Int64, strict=False).replace_strict(
            list(range(8)), list(_SYSLOG_SEVERITY), default=None, return_dtype=pl.String
        )
    )


def numeric_level(number: pl.Expr, scale: pl.Expr) -> pl.Expr:
    """A level from a number; `scale` names its numbering (otel|python|logback|syslog) or is null."""
    by_size = (
        pl.when(number.is_between(0, 7)).then(_syslog_level(number))
        .when(number.is_between(10, 69)).then(_step_level((number / 10).floor() - 1))  # pino, bunyan
        .when(number.is_between(5_000, 69_999)).then(_step_level((number / 10_000).floor()))  # logback
    )
    return (
        pl.when(scale == "otel").then(
            pl.when(number.is_between(1, 24)).then(_step_level(((number - 1) / 4).floor()))
        )
        .when(scale == "python").then(
            pl.when(number < 10).then(pl.lit("TRACE")).otherwise(_step_level((number / 10).floor().clip(1, 5)))
        )
        .when(scale == "logback").then(_step_level((number / 10_000).floor()))
        .when(scale == "syslog").then(_syslog_level(number))
        .otherwise(by_size)
    )


def level_columns(text: pl.Expr, number: pl.Expr, scale: pl.Expr, other_number: pl.Expr,
                  other_scale: pl.Expr) -> list[pl.Expr]:
    """``level`` and ``severity_number`` from the producer's level text, a numeric level with its scale
    (otel|python|logback|syslog|null), and a second number with its scale (a ``severity_number`` /
    ``levelno`` / ``level_value`` key sent beside the level).

    A word wins over a number; a number written as text (``"30"``) counts as a number.
    """
    word = (
        text.str.strip_chars()
        .str.strip_chars("[]<>():|")
        .str.strip_chars()
        .str.to_lowercase()
        .str.replace(r"^debug[1-5]$", "debug")  # PostgreSQL DEBUG1..DEBUG5
    )
    level = pl.coalesce(
        word.replace_strict(LEVEL_WORDS, default=None, return_dtype=pl.String),
        numeric_level(number, scale),
        numeric_level(other_number, other_scale),
        numeric_level(word.cast(pl.Float64, strict=False), scale),
    )
    number = pl.coalesce(number, pl.when(other_number.is_null()).then(word.cast(pl.Float64, strict=False)))
    sent = pl.coalesce(pl.when(other_scale == "otel").then(other_number), pl.when(scale == "otel").then(number))
    sent = pl.when(sent.is_between(1, 24)).then(sent.cast(pl.Int32, strict=False))
    derived = level.replace_strict(OTEL_SEVERITY, default=None, return_dtype=pl.Int32)
    return [level.alias("level"), pl.coalesce(sent, derived).alias("severity_number")]


def normalise_levels(frame: pl.DataFrame, text: str, number: str | None = None, scale: str | None = None,
                     other_number: str | None = None, other_scale: str | None = None) -> pl.DataFrame:
    """`frame` with ``level`` and ``severity_number`` (``level_columns`` of the named columns; a missing
    one counts as null). Worked out once per distinct combination: a log has few."""
    names = {"_t": text, "_n": number, "_s": scale, "_on": other_number, "_os": other_scale}
    types = {"_t": pl.String, "_n": pl.Float64, "_s": pl.String, "_on": pl.Float64, "_os": pl.String}
    keyed = frame.with_columns(
        (pl.col(source) if source else pl.lit(None)).cast(types[key]).alias(key) for key, source in names.items()
    )
    keys = list(names)
    mapping = keyed.select(keys).unique().with_columns(
        level_columns(pl.col("_t"), pl.col("_n"), pl.col("_s"), pl.col("_on"), pl.col("_os"))
    )
    return keyed.drop([c for c in ("level", "severity_number") if c in keyed.columns]).join(
        mapping, on=keys, how="left", nulls_equal=True, maintain_order="left"
    ).drop(keys)


# ------------------------------------------------------------------------------------------- times


@dataclass(frozen=True)
class Layout:
    chrono: str  # polars (chrono) strptime format
    year_less: bool = False  # read with the inferred year in front ("%Y " + chrono)


def _layouts() -> tuple[Layout, ...]:
    with_time = (
        "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M:%S,%3f", "%Y-%m-%dT%H:%M:%S,%3f",
        "%Y/%m/%d %H:%M:%S%.f", "%Y/%m/%d %H:%M:%S,%3f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M",
        "%Y.%m.%d %H:%M:%S%.f", "%Y-%m-%d-%H.%M.%S%.f", "%Y%m%dT%H%M%S%.f", "%Y%m%d %H%M%S",
        "%Y%m%d %H:%M:%S%.f", "%y%m%d %H%M%S", "%y%m%d %H:%M:%S%.f", "%y/%m/%d %H:%M:%S%.f",
        "%d/%m/%y %H:%M:%S%.f", "%m/%d/%y %H:%M:%S%.f", "%d/%m/%Y %H:%M:%S%.f", "%m/%d/%Y %H:%M:%S%.f",
        "%d.%m.%Y %H:%M:%S%.f", "%y-%m-%d %H:%M:%S%.f", "%d/%b/%Y:%H:%M:%S%.f", "%d/%b/%Y %H:%M:%S%.f",
        "%d-%b-%Y %H:%M:%S%.f", "%d %b %Y %H:%M:%S%.f", "%d %b %Y %H:%M:%S,%3f", "%b %d, %Y %I:%M:%S %p",
        "%b %d, %Y %H:%M:%S%.f", "%b %d %Y %H:%M:%S%.f", "%a %b %d %H:%M:%S%.f %Y", "%a, %d %b %Y %H:%M:%S%.f",
        "%A, %d-%b-%y %H:%M:%S", "%Y-%m-%d %I:%M:%S %p", "%m/%d/%Y %I:%M:%S %p",
    )
    zones = ("", "%z", " %z", "Z", " UTC", " GMT")
    layouts = [Layout(base + zone) for base in with_time for zone in zones]
    layouts += [Layout(base) for base in ("%Y-%m-%d", "%Y/%m/%d", "%Y.%m.%d", "%d/%b/%Y")]
    layouts += [
        Layout(base, year_less=True)
        for base in ("%b %d %H:%M:%S%.f", "%b %d %H:%M", "%m-%d %H:%M:%S%.f", "%m/%d %H:%M:%S%.f")
    ]
    return tuple(layouts)


LAYOUTS = _layouts()
EPOCH = Layout("epoch")  # digits: seconds / milli / micro / nanoseconds by size
_EPOCH_TEXT = r"^\d{9,19}(?:\.\d+)?$"
EARLIEST, LATEST = datetime(1900, 1, 1), datetime(3000, 1, 1)  # times outside are misreadings
_EARLIEST, _LATEST = pl.lit(EARLIEST, dtype=TS), pl.lit(LATEST, dtype=TS)
# A zone written after a time; offsets count only right after hh:mm[:ss[.f]] (checked separately).
_ZONE = (
    r"^(?P<base>.*\d)\s*(?P<zone>[+-]\d{2}(?::?\d{2})?|Z|z|UTC|GMT|UT|[A-Z]{3,5}"
    r"|[A-Za-z]+/[A-Za-z_]+(?:/[A-Za-z_]+)?)$"
)
_AFTER_TIME_OF_DAY = r"(?::\d{2}(?:[.,]\d+)?|T\d{4,6}(?:[.,]\d+)?)$"
ZONE_ABBREVIATIONS = {  # minutes east of UTC; only unambiguous ones (CST, IST, AST are not guessed)
    "UTC": 0, "GMT": 0, "UT": 0, "Z": 0, "z": 0, "WET": 0, "WEST": 60, "BST": 60, "CET": 60, "CEST": 120,
    "MET": 60, "MEST": 120, "EET": 120, "EEST": 180, "MSK": 180, "JST": 540, "KST": 540, "HKT": 480,
    "SGT": 480, "AEST": 600, "AEDT": 660, "ACST": 570, "ACDT": 630, "AWST": 480, "NZST": 720, "NZDT": 780,
    "EST": -300, "EDT": -240, "CDT": -300, "MST": -420, "MDT": -360, "PST": -480, "PDT": -420,
    "AKST": -540, "AKDT": -480, "HST": -600,
}


def _nulls(length: int, dtype: pl.DataType = TS) -> pl.Series:
    return pl.repeat(None, length, dtype=dtype, eager=True)


def _epoch_expr(number: pl.Expr) -> pl.Expr:
    size = number.abs()
    micros = (
        pl.when(~number.is_finite() | (size < 1e8)).then(None)
        .when(size < 1e10).then(number * 1e6)
        .when(size < 1e13).then(number * 1e3)
        .when(size < 1e16).then(number)
        .when(size < 1e19).then(number / 1e3)
    )
    return micros.round(0).cast(pl.Int64, strict=False).cast(TS)


def epoch_to_datetime(numbers: pl.Series) -> pl.Series:
    """Epoch seconds, milliseconds, microseconds or nanoseconds (told apart by size) as naive UTC.

    Below 10^10 seconds, below 10^13 milliseconds, below 10^16 microseconds, below 10^19 nanoseconds;
    values under 10^8 (1973 as seconds) or not finite are not read as times.
    """
    frame = pl.DataFrame({"n": numbers.cast(pl.Float64, strict=False)})
    return frame.select(_epoch_expr(pl.col("n"))).to_series()


def _strptime_expr(text: pl.Expr, layout: Layout, year: int) -> pl.Expr:
    if layout is EPOCH:
        # whole numbers exactly (a float cannot hold nanoseconds since 1970), fractions as floats
        digits = text.str.len_bytes()
        whole = text.cast(pl.Int64, strict=False)
        exact = (
            pl.when(digits <= 10).then(whole * 1_000_000)
            .when(digits <= 13).then(whole * 1_000)
            .when(digits <= 16).then(whole)
            .otherwise(whole // 1_000)
        ).cast(TS)
        parsed = (
            pl.when(~text.str.contains(_EPOCH_TEXT)).then(None)
            .when(whole.is_not_null()).then(exact)
            .otherwise(_epoch_expr(text.cast(pl.Float64, strict=False)))
        )
    else:
        chrono = layout.chrono
        if layout.year_less:
            text, chrono = pl.concat_str(pl.lit(f"{year} "), text), "%Y " + chrono
        parsed = text.str.strptime(pl.Datetime("us"), chrono, strict=False, exact=True)
        if "%z" in chrono:  # read as UTC-aware
            parsed = parsed.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        parsed = parsed.cast(TS)
    # chrono's %Y also reads "17" as the year 17: such a reading is not a time a log was written
    return pl.when((parsed >= _EARLIEST) & (parsed < _LATEST)).then(parsed)


def layout_expr(text: pl.Expr, layout: Layout, reference: datetime) -> pl.Expr:
    """Naive-UTC times read from `text` with one layout (null where it does not fit)."""
    parsed = _strptime_expr(text, layout, reference.year)
    if not layout.year_less:
        return parsed
    # after the day following the reference day (clock skew aside), or 29 February of a common year:
    # the year before
    earlier = _strptime_expr(text, layout, reference.year - 1)
    limit = datetime.combine(reference.date(), datetime.min.time()) + timedelta(days=2)
    late = parsed.is_null() | (parsed >= pl.lit(limit))
    return pl.when(late).then(earlier).otherwise(parsed)


@lru_cache(maxsize=8)
def _ranking_exprs(reference_day: date) -> tuple[tuple[int, Layout, pl.Expr], ...]:
    """Every layout as an expression over column ``text`` (built once per reference day: building
    a few hundred expressions costs more than running them on a sample)."""
    reference = datetime.combine(reference_day, datetime.min.time())
    return tuple(
        (position, layout, layout_expr(pl.col("text"), layout, reference).alias(str(position)))
        for position, layout in enumerate((EPOCH, *LAYOUTS))
    )


def _sample(values: pl.Series) -> pl.Series:
    present = values.drop_nulls()
    if len(present) <= SAMPLE_ROWS:
        return present
    step = len(present) / SAMPLE_ROWS
    return present.gather([int(i * step) for i in range(SAMPLE_ROWS)])


def rank_layouts(sample: pl.Series, reference: datetime, skip: frozenset[Layout] = frozenset()) -> list[
    tuple[int, int, int, Layout]
]:
    """(values read, backward steps, list position, layout) for each layout reading any of `sample`,
    best first. All layouts are tried in one query."""
    candidates = [item for item in _ranking_exprs(reference.date()) if item[1] not in skip]
    if len(sample) == 0 or not candidates:
        return []
    parsed = pl.DataFrame({"text": sample.cast(pl.String)}).select(expr for _, _, expr in candidates)
    stats = parsed.select(
        *[pl.col(c).count().alias(f"read{c}") for c in parsed.columns],
        *[(pl.col(c).drop_nulls().diff().dt.total_microseconds() < 0).sum().alias(f"back{c}")
          for c in parsed.columns],
    ).row(0, named=True)
    ranked = [
        (stats[f"read{position}"], stats[f"back{position}"], position, layout)
        for position, layout, _ in candidates
        if stats[f"read{position}"]
    ]
    ranked.sort(key=lambda item: (-item[0], item[1], item[2]))
    return ranked


def _parse_by_layouts(values: pl.Series, reference: datetime,
                      ranked: list[tuple[int, int, int, Layout]] | None = None) -> pl.Series:
    """Best layout for the bulk, then the best for what is left, until no layout reads a sampled value."""
    result = _nulls(len(values))
    pending = values.is_not_null()
    used: set[Layout] = set()
    while pending.any():
        indices = None if not used else pending.arg_true()
        subset = values if indices is None else values.gather(indices)
        if ranked is None:
            ranked = rank_layouts(_sample(subset), reference, frozenset(used))
        if not ranked:
            break
        layout = ranked[0][3]
        used.add(layout)
        ranked = None
        parsed = pl.DataFrame({"text": subset}).select(layout_expr(pl.col("text"), layout, reference)).to_series()
        if indices is None:
            result = parsed
            pending = pending & parsed.is_null()
            continue
        found = parsed.is_not_null()
        result = result.scatter(indices.filter(found), parsed.filter(found))
        pending = pending.scatter(indices.filter(found), False)
    return result


def _clean_time_text(values: pl.Series) -> pl.Series:
    """Whitespace runs, brackets/quotes around the value, and comma fractions (``10:00:00,123``)."""
    return (
        values.str.replace_all(r"\s+", " ")
        .str.strip_chars(" []()\"'")
        .str.replace(r"(:\d{2}),(\d)", "$1.$2")
    )


@lru_cache(maxsize=1024)
def _is_iana(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _parse_named_zones(values: pl.Series, reference: datetime) -> pl.Series:
    """Times followed by a zone the layouts don't read: abbreviations, IANA names, offsets after odd
    layouts."""
    parts = values.str.extract_groups(_ZONE).struct.unnest()
    base, zone = parts.get_column("base"), parts.get_column("zone")
    is_offset = zone.str.starts_with("+") | zone.str.starts_with("-")
    usable = (zone.is_not_null() & (~is_offset | base.str.contains(_AFTER_TIME_OF_DAY))).fill_null(False)
    if not usable.any():
        return _nulls(len(values))
    local = _parse_by_layouts(base.zip_with(usable, _nulls(len(values), pl.String)), reference)
    zone_text = pl.col("zone")
    digits = zone_text.str.slice(1).str.replace(":", "", literal=True)
    numeric = pl.when(zone_text.str.starts_with("-")).then(-1).otherwise(1) * (
        digits.str.slice(0, 2).cast(pl.Int64, strict=False) * 60
        + digits.str.slice(2, 2).cast(pl.Int64, strict=False).fill_null(0)
    )
    offsets = pl.DataFrame({"zone": zone, "is_offset": is_offset}).select(
        pl.when(pl.col("is_offset")).then(numeric)
        .otherwise(zone_text.replace_strict(ZONE_ABBREVIATIONS, default=None, return_dtype=pl.Int64))
    ).to_series()
    result = local - (offsets * 60_000_000).cast(pl.Duration("us"))
    names = [name for name in zone.filter(zone.str.contains("/")).unique().to_list() if _is_iana(name)]
    for name in names:  # a handful of distinct zone names per chunk
        converted = (
            local.dt.replace_time_zone(name, ambiguous="earliest", non_existent="null")
            .dt.convert_time_zone("UTC")
            .dt.replace_time_zone(None)
            .cast(TS)
        )
        result = converted.zip_with((zone == name).fill_null(False), result)
    return result.zip_with(usable, _nulls(len(values)))


def parse_time_text(values: pl.Series, *, reference_time: datetime | None = None,
                    ranked: list[tuple[int, int, int, Layout]] | None = None) -> pl.Series:
    """Times written as text, in whatever layout the column uses, as naive UTC (null where unreadable).

    The module docstring lists the layouts, how one is chosen and how a year-less time gets its year.
    `ranked` is ``rank_layouts`` of a sample when the caller has it already.
    """
    reference = _reference(reference_time)
    values = values.cast(pl.String)
    result = _parse_by_layouts(values, reference, ranked)
    pending = result.is_null() & values.is_not_null()
    if pending.any():
        indices = pending.arg_true()
        cleaned = _clean_time_text(values.gather(indices))
        retry = _parse_by_layouts(cleaned, reference)
        left = retry.is_null()
        if left.any():
            retry = retry.scatter(left.arg_true(), _parse_named_zones(cleaned.filter(left), reference))
        result = result.scatter(indices, retry)
    return result.alias(values.name)


def _reference(reference_time: datetime | None) -> datetime:
    if reference_time is None:
        return datetime.now(UTC).replace(tzinfo=None)
    if reference_time.tzinfo is not None:
        return reference_time.astimezone(UTC).replace(tzinfo=None)
    return reference_time


# -------------------------------------------------------------------------------------- exceptions

# Python: the last line of a traceback names the exception.
_PYTHON_LAST = r"(?:^|\n)(?P<type>[A-Za-z_][\w.]*)(?::[ \t]*(?P<message>[^\n]*))?[ \t\r]*$"
# Go: a panic or a fatal runtime error.
_GO_PANIC = r"(?m)^(?P<type>panic|fatal error): (?P<message>.*)$"
# JVM, .NET, Node, Python without a traceback: `pkg.FooException: msg`, `TypeError: msg`, `Caused by: ...`.
_EXCEPTION_LINE = (
    r"(?m)^(?:Exception in thread \"[^\"]*\"[ \t]+|Caused by:[ \t]+|Unhandled [Ee]xception[.:]?[ \t]+"
    r"|Uncaught[ \t]+|panic: )?"
    r"(?P<type>(?:[A-Za-z_$][\w$]*\.)+[A-Z][\w$]*"
    r"|(?:[A-Z][\w$]*)?(?:Error|Exception|Throwable|Fault|Failure|Panic|Interrupt|Exit|Warning))"
    r"(?::[ \t]*(?P<message>.*))?$"
)


def exception_columns(stacktrace: pl.Expr) -> list[pl.Expr]:
    """``exception_type`` and ``exception_message`` read from a stack trace text.

    A Python traceback gives its last line (``ValueError: bad``); a Go ``panic: msg`` / ``fatal error:
    msg`` gives ``panic`` / ``fatal error``; otherwise the first line shaped like an exception
    (``java.lang.IllegalStateException: msg``, ``System.InvalidOperationException: msg``,
    ``TypeError: msg``, ``Caused by: x.YException``). Null when nothing fits.
    """
    python = stacktrace.str.extract_groups(_PYTHON_LAST)
    go = stacktrace.str.extract_groups(_GO_PANIC)
    generic = stacktrace.str.extract_groups(_EXCEPTION_LINE)
    is_python = stacktrace.str.contains("Traceback (most recent call last)", literal=True)
    has_panic = go.struct.field("type").is_not_null()

    def pick(field: str) -> pl.Expr:
        return (
            pl.when(is_python & python.struct.field("type").is_not_null())
            .then(python.struct.field(field))
            .when(has_panic)
            .then(go.struct.field(field))
            .otherwise(generic.struct.field(field))
        )

    message = pick("message").str.strip_chars()
    return [
        pick("type").alias("exception_type"),
        pl.when(message != "").then(message).alias("exception_message"),
    ]


def _hex_id(value: pl.Expr, digits: int) -> pl.Expr:
    """Lower-case hex ids: UUID dashes dropped, 64-bit trace ids padded to 32 digits, decimal ids (Datadog's
    dd.trace_id / dd.span_id hold the low 64 bits in decimal) converted; anything else kept as written."""
    text = value.str.strip_chars()
    plain = text.str.to_lowercase().str.replace_all("-", "", literal=True)
    lengths = [digits, 16] if digits == 32 else [digits]
    is_hex = plain.str.contains(r"^[0-9a-f]+$") & plain.str.len_chars().is_in(lengths)
    as_int = pl.when(text.str.contains(r"^\d{1,20}$")).then(text.cast(pl.UInt64, strict=False))
    hexed = pl.concat_str(
        [
            ((as_int // (16**power)) % 16).cast(pl.Int64).replace_strict(
                list(range(16)), list("0123456789abcdef"), return_dtype=pl.String
            )
            for power in reversed(range(16))
        ]
    ).str.pad_start(digits, "0")
    return (
        pl.when(text.is_null() | (text == "")).then(None)
        .when(is_hex).then(plain.str.pad_start(digits, "0"))
        .when(as_int.is_not_null()).then(hexed)
        .otherwise(text)
    )


# ------------------------------------------------------------------------------------ shared output


def _prepared(lines: pl.DataFrame) -> pl.DataFrame:
    missing = [name for name in LINES_SCHEMA if name not in lines.columns]
    if missing:
        raise ValueError(f"lines frame lacks column(s) {missing}; pass reader.iter_line_chunks(...).lines")
    return lines.select(
        pl.col("line").cast(pl.String).fill_null("").str.strip_chars_end("\r"),
        pl.col("source_line").cast(pl.Int64),
        pl.col("source_offset").cast(pl.Int64),
    )


def _quarantine(frame: pl.DataFrame, source_file: str) -> pl.DataFrame:
    """Rows with reason, excerpt, source_line, source_offset (and hour when known) as quarantine rows."""
    return conform(
        frame.with_columns(
            pl.lit(SOURCE_KIND).alias("source_kind"),
            pl.lit(source_file).alias("source_file"),
            pl.col("excerpt").str.slice(0, EXCERPT_CHARS),
        ),
        QUARANTINE,
    )


def _empty_result(ignored: int = 0) -> ParseResult:
    return ParseResult(empty(LOGS), empty(QUARANTINE), 0, ignored)


def _quoted(value: pl.Expr, limit: int = 120) -> pl.Expr:
    """A value for a reason text: quoted, cut to `limit` characters."""
    return pl.concat_str(
        pl.lit("'"),
        pl.when(value.str.len_chars() > limit)
        .then(pl.concat_str(value.str.slice(0, limit), pl.lit("...")))
        .otherwise(value),
        pl.lit("'"),
    )


def _finish(records: pl.DataFrame, bad_time_reason: pl.Expr, source_file: str, extra_quarantine: list[pl.DataFrame],
            records_read: int, ignored: int = 0) -> ParseResult:
    """Split records into accepted (time and service known) and quarantined; common columns added."""
    records = records.with_columns(
        pl.when(pl.col("timestamp").is_null()).then(bad_time_reason)
        .when(pl.col("service").is_null() | (pl.col("service").str.strip_chars() == ""))
        .then(pl.lit("no service: put the file under logs/<service>/ or write a service.name key"))
        .alias("_reason")
    )
    accepted = records.filter(pl.col("_reason").is_null()).with_columns(
        pl.col("timestamp").dt.truncate("1h").alias("hour"),
        pl.lit(source_file).alias("source_file"),
    )
    rejected = records.filter(pl.col("_reason").is_not_null()).select(
        pl.col("timestamp").dt.truncate("1h").alias("hour"),
        pl.col("_reason").alias("reason"),
        pl.col("_excerpt").alias("excerpt"),
        "source_line",
        "source_offset",
    )
    quarantine = pl.concat(
        [_quarantine(rejected, source_file), *extra_quarantine], how="vertical_relaxed"
    ).sort("source_line", nulls_last=True)
    return ParseResult(conform(accepted, LOGS), conform(quarantine, QUARANTINE), records_read, ignored)


# --------------------------------------------------------------------------------------- plain text


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_FULL_TIME = ("timestamp", "datetime", "ts", "logtime", "eventtime", "asctime", "isotime", "utctime",
              "logtimestamp", "eventtimestamp", "time_stamp")
_DATE = ("date", "logdate")
_TIME = ("time", "clock")
_MONTH = ("month", "mon")
_DAY = ("day", "dayofmonth", "mday", "dom")
_YEAR = ("year", "yr")
_ZONE_FIELD = ("timezone", "tz", "zone", "tzoffset", "offset", "utcoffset", "tzname")
_LEVEL_FIELD = ("level", "severity", "lvl", "loglevel", "levelname", "severitytext", "priority", "prio", "sev")
_COMPONENT_FIELD = ("component", "logger", "loggername", "class", "classname", "module", "category", "source",
                    "caller", "name")
_TRACE_FIELD = ("traceid", "trace", "ddtraceid", "xtraceid")
_SPAN_FIELD = ("spanid", "span", "ddspanid")
_SERVICE_FIELD = ("service", "servicename", "app", "appname", "application")
_VERSION_FIELD = ("version", "serviceversion", "appversion")


@dataclass(frozen=True)
class _TextRoles:
    time_candidates: tuple[tuple[str, tuple[str, ...]], ...]  # (label, fields joined by a space)
    time_fields: tuple[str, ...]
    level: str | None
    component: str | None
    trace: str | None
    span: str | None
    service: str | None
    version: str | None


def _text_roles(fields: tuple[str, ...]) -> _TextRoles:
    by_norm: dict[str, str] = {}
    for name in fields:
        by_norm.setdefault(_norm(name), name)

    def first(names: tuple[str, ...]) -> str | None:
        for candidate in names:
            if _norm(candidate) in by_norm:
                return by_norm[_norm(candidate)]
        return None

    def all_of(names: tuple[str, ...]) -> list[str]:
        return [by_norm[_norm(n)] for n in names if _norm(n) in by_norm]

    zone = first(_ZONE_FIELD)
    with_zone = (zone,) if zone else ()
    candidates: list[tuple[str, ...]] = [(name, *with_zone) for name in all_of(_FULL_TIME)]
    date, clock = first(_DATE), first(_TIME)
    month, day, year = first(_MONTH), first(_DAY), first(_YEAR)
    if date and clock:
        candidates.append((date, clock, *with_zone))
    if month and day and clock:
        candidates.append(((year,) if year else ()) + (month, day, clock, *with_zone))
    if clock:
        candidates.append((clock, *with_zone))
    if date:
        candidates.append((date, *with_zone))
    unique = list(dict.fromkeys(candidates))
    labelled = tuple((" ".join(f"<{f}>" for f in group), group) for group in unique)
    time_fields = tuple(dict.fromkeys(f for group in unique for f in group if f != zone))
    return _TextRoles(
        time_candidates=labelled,
        time_fields=time_fields,
        level=first(_LEVEL_FIELD),
        component=first(_COMPONENT_FIELD),
        trace=first(_TRACE_FIELD),
        span=first(_SPAN_FIELD),
        service=first(_SERVICE_FIELD),
        version=first(_VERSION_FIELD),
    )


def _field_column(name: str) -> str:
    return f"field:{name}"


def _joined(fields: tuple[str, ...]) -> pl.Expr:
    return pl.concat_str([pl.col(_field_column(f)).str.strip_chars() for f in fields], separator=" ")


def _choose_time_candidate(
    headers: pl.DataFrame, roles: _TextRoles, reference: datetime
) -> tuple[str, tuple[str, ...], list] | None:
    """The time candidate reading most of a sample of the records (ties: the earlier candidate), with
    its ranked layouts."""
    best, best_read = None, -1
    for label, group in roles.time_candidates:
        sample = _sample(headers.select(_joined(group)).to_series())
        ranked = rank_layouts(sample, reference)
        read = ranked[0][0] if ranked else 0
        if read > best_read:
            best, best_read = (label, group, ranked), read
        if len(sample) and read == len(sample):
            break
    return best


def parse_text_log(
    lines: pl.DataFrame,
    *,
    log_format: str,
    service: str,
    source_file: str,
    reference_time: datetime | None = None,
) -> ParseResult:
    """One chunk of a plain-text log file (columns line, source_line, source_offset) split by `log_format`.

    `reference_time` (naive UTC, e.g. the file's modification time) only gives year-less times their
    year; default now. Raises LogFormatError when `log_format` cannot be used.
    """
    lines = _prepared(lines)
    if lines.height == 0:
        return _empty_result()
    try:
        fmt = compile_log_format(log_format)
    except LogFormatError as exc:
        raise LogFormatError(f"service {service!r}: {exc}; fix its entry under log_formats") from exc
    reference = _reference(reference_time)
    roles = _text_roles(fmt.fields)
    parts = split_log_lines(lines.get_column("line"), log_format)
    frame = pl.concat(
        [lines, parts.select([pl.col(name).alias(_field_column(name)) for name in fmt.fields] + ["matched"])],
        how="horizontal",
    )
    starts = pl.col("matched")
    if roles.time_fields:  # a record's header carries a time: a digit somewhere in its time fields
        starts = starts & _joined(roles.time_fields).str.contains(r"\d").fill_null(False)
    frame = frame.with_columns(starts.alias("_starts")).with_columns(
        pl.col("_starts").cast(pl.Int64).cum_sum().alias("_record")
    )
    headers = frame.filter(pl.col("_starts"))
    followers = frame.filter(~pl.col("_starts")).select("line", "source_line", "source_offset", "_record")
    continuation = (
        followers.filter(pl.col("_record") > 0)
        .group_by("_record")
        .agg(pl.col("line").str.join("\n").alias("exception_stacktrace"))
    )
    orphans = followers.filter(pl.col("_record") == 0)
    extra = [_orphan_quarantine(orphans, log_format, service, source_file)] if orphans.height else []
    records_read = headers.height + (1 if orphans.height else 0)
    if headers.height == 0:
        return ParseResult(empty(LOGS), pl.concat(extra), records_read)
    headers = headers.join(continuation, on="_record", how="left", maintain_order="left")

    candidate = _choose_time_candidate(headers, roles, reference) if roles.time_candidates else None
    if candidate is None:
        time_text = pl.lit(None, dtype=pl.String)
        reason = pl.lit(
            f"the log_format '{log_format}' has no time field, so the record cannot be placed in an hour; "
            "name the time fields <Date> <Time> (or <Timestamp>) in the service's log_format"
        )
    else:
        label, group, ranked = candidate
        time_text = _joined(group)
        reason = pl.concat_str(
            pl.lit("cannot read the time "),
            _quoted(pl.col("_time_text")),
            pl.lit(
                f" (from {label} of the log_format) in any known layout; write ISO 8601 times "
                "(2026-11-02T10:00:00.123+00:00) or fix the log_format's time fields"
            ),
        )
    headers = headers.with_columns(time_text.alias("_time_text"))
    headers = headers.with_columns(
        parse_time_text(headers.get_column("_time_text"), reference_time=reference,
                        ranked=None if candidate is None else candidate[2]).alias("timestamp")
    )
    records = _text_records(headers, fmt.fields, roles, service, candidate)
    return _finish(records, reason, source_file, extra, records_read)


def _text_records(headers: pl.DataFrame, fields: tuple[str, ...], roles: _TextRoles, service: str,
                  candidate: tuple[str, tuple[str, ...], list] | None) -> pl.DataFrame:
    def field(name: str | None) -> pl.Expr:
        if name is None:
            return pl.lit(None, dtype=pl.String)
        value = pl.col(_field_column(name)).str.strip_chars()
        return pl.when(value != "").then(value)

    used = {roles.level, roles.component, roles.trace, roles.span, roles.service, roles.version, "Content"}
    if candidate is not None:
        used.update(candidate[1])
    rest = [name for name in fields if name not in used]
    attributes = (
        pl.struct([pl.col(_field_column(name)).alias(name) for name in rest]).struct.json_encode()
        if rest else pl.lit("{}")
    )
    level_text = field(roles.level)
    records = headers.with_columns(
        pl.coalesce(field(roles.service), pl.lit(service, dtype=pl.String)).alias("service"),
        field(roles.version).alias("service_version"),
        level_text.alias("severity_text"),
        field(roles.component).alias("component"),
        pl.col(_field_column("Content")).alias("body"),
        _hex_id(field(roles.trace), 32).alias("trace_id"),
        _hex_id(field(roles.span), 16).alias("span_id"),
        *exception_columns(pl.col("exception_stacktrace")),
        attributes.alias("attributes"),
        pl.lit("text").alias("source_format"),
        pl.col("line").alias("_excerpt"),
    )
    return normalise_levels(records, "severity_text")


def _orphan_quarantine(orphans: pl.DataFrame, log_format: str, service: str, source_file: str) -> pl.DataFrame:
    first, last = orphans.get_column("source_line").min(), orphans.get_column("source_line").max()
    span = f"line {first}" if first == last else f"lines {first}-{last}"
    where = (
        "at the start of the file" if first == 1
        else "at the start of this read of the file (the record they continue may be in the part read before)"
    )
    reason = (
        f"{span} {where} do not match the log_format '{log_format}' of service {service!r} and follow no line "
        "that does, so they belong to no record; check that the log_format fits the file"
    )
    excerpt = "\n".join(orphans.get_column("line").head(50).to_list())
    frame = pl.DataFrame(
        {"reason": [reason], "excerpt": [excerpt], "source_line": [first],
         "source_offset": [orphans.get_column("source_offset").min()]},
        schema={"reason": pl.String, "excerpt": pl.String, "source_line": pl.Int64, "source_offset": pl.Int64},
    )
    return _quarantine(frame, source_file)


# --------------------------------------------------------------------------------------- JSON lines

# Spellings per column, most preferred first (compared lower-case, `-` read as `_`).
JSON_KEYS: dict[str, tuple[str, ...]] = {
    "time": ("@timestamp", "timestamp", "time", "ts", "@t", "t", "datetime", "date_time", "eventtime",
             "event_time", "logtime", "log_time", "asctime", "timemillis", "instant", "time_unix_nano",
             "timeunixnano", "observed_time_unix_nano", "observedtimeunixnano", "observed_timestamp",
             "created", "date"),
    "level": ("level", "log.level", "severity", "levelname", "level_name", "loglevel", "log_level", "lvl",
              "severity_text", "severitytext", "@l", "@level", "syslog.severity"),
    "severity_number": ("severity_number", "severitynumber", "levelno", "level_value", "levelvalue",
                        "priority"),
    "body": ("msg", "message", "@m", "renderedmessage", "body", "log", "text", "short_message", "event",
             "@mt", "messagetemplate", "full_message", "textpayload"),
    "component": ("logger", "logger_name", "loggername", "log.logger", "logger.name", "name", "component",
                  "category", "sourcecontext", "source_context", "caller", "module", "class"),
    "trace_id": ("trace_id", "traceid", "trace.id", "dd.trace_id", "oteltraceid", "otel.trace_id",
                 "trace_flags_id", "logging.googleapis.com/trace"),
    "span_id": ("span_id", "spanid", "span.id", "dd.span_id", "otelspanid", "otel.span_id",
                "logging.googleapis.com/spanid"),
    "service": ("service.name", "service_name", "servicename", "otelservicename", "dd.service",
                "resource.service.name", "service"),
    "service_version": ("service.version", "service_version", "serviceversion", "otelserviceversion",
                        "dd.version", "resource.service.version", "app_version"),
    "error": ("error", "err", "exception", "exc", "@x", "exc_info", "exc_text"),
    "exception_type": ("error.type", "error.kind", "error.name", "error.class", "err.type", "err.name",
                       "err.kind", "exception.type", "exception.class", "exception.name", "exc.type",
                       "exception_type", "error_type", "exception_class", "attributes.exception.type"),
    "exception_message": ("error.message", "error.msg", "err.message", "err.msg", "exception.message",
                          "exception.msg", "exc.message", "exception_message", "error_message",
                          "attributes.exception.message"),
    "exception_stacktrace": ("error.stack_trace", "error.stacktrace", "error.stack", "err.stack",
                             "err.stack_trace", "err.stacktrace", "exception.stacktrace",
                             "exception.stack_trace", "exception.stack", "exc.stack", "stack_trace",
                             "stacktrace", "stack", "exception_stacktrace", "error_stack", "errorverbose",
                             "attributes.exception.stacktrace"),
}
# Objects whose members are matched one level down (`{"log": {"level": ...}}` as `log.level`).
JSON_CONTAINERS = frozenset(
    {"log", "error", "err", "exception", "exc", "service", "trace", "span", "resource", "attributes", "dd",
     "otel", "logger"}
)
_FIELDS = tuple(JSON_KEYS)
_FIELD_INDEX = {name: index for index, name in enumerate(_FIELDS)}
_ALIASES: dict[str, tuple[int, int]] = {}
for _field, _keys in JSON_KEYS.items():
    for _rank, _key in enumerate(_keys):
        _ALIASES.setdefault(_key, (_FIELD_INDEX[_field], _rank))
_SCALES = {"severity_number": "otel", "severitynumber": "otel", "levelno": "python", "level_value": "logback",
           "levelvalue": "logback", "priority": "syslog", "syslog.severity": "syslog"}
_J_TIME, _J_LEVEL, _J_SEVNUM = (_FIELD_INDEX[n] for n in ("time", "level", "severity_number"))
_TEXT_FIELDS = [n for n in _FIELDS if n not in ("time", "level", "severity_number")]


def _slot(key: str) -> tuple[int, int] | None:
    return _ALIASES.get(key.lower().replace("-", "_"))


def _as_text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    return orjson.dumps(value).decode()


def _json_kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if value is None:
        return "null"
    return "an object"


def _time_parts(value: object, key: str) -> tuple[str | None, float | None, str | None]:
    """(text, number, problem) of a time value."""
    kind = type(value)
    if kind is str:
        return value, None, None
    if kind is int or kind is float:
        return None, float(value), None
    if kind is dict and type(value.get("epochSecond")) in (int, float):  # log4j2 JSON layout `instant`
        return None, float(value["epochSecond"]) + float(value.get("nanoOfSecond") or 0) / 1e9, None
    return None, None, f"the time key {key!r} holds {_json_kind(value)} ({_as_text(value)[:80]}), not a time"


def _number(value: object) -> float | None:
    kind = type(value)
    if kind is int or kind is float:
        return float(value)
    if kind is str:
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _scale(key: str | None) -> str | None:
    return None if key is None else _SCALES.get(key.lower().replace("-", "_"))


def _row_values(held: list, rest: dict) -> list:
    """The value columns (``_JSON_COLUMNS[2:]``) of one record from its chosen (rank, value, key) per column."""
    time_entry, level_entry, sevnum_entry = held[_J_TIME], held[_J_LEVEL], held[_J_SEVNUM]
    time_parts = (None, None, None) if time_entry is None else _time_parts(time_entry[1], time_entry[2])
    level_value = None if level_entry is None else level_entry[1]
    sevnum_value = None if sevnum_entry is None else sevnum_entry[1]
    level_text = _as_text(level_value) if level_entry is not None else _as_text(sevnum_value)
    level_number = float(level_value) if type(level_value) in (int, float) else None
    return [
        *time_parts,
        level_text,
        level_number,
        _scale(None if level_entry is None else level_entry[2]),
        _number(sevnum_value),
        _scale(None if sevnum_entry is None else sevnum_entry[2]),
        orjson.dumps(rest).decode(),
        *[None if held[_FIELD_INDEX[name]] is None else _as_text(held[_FIELD_INDEX[name]][1])
          for name in _TEXT_FIELDS],
    ]


def _decode_record(doc: dict, slots: dict) -> list:
    """One record, key by key (nested objects, nulls, unusual shapes)."""
    held: list = [None] * len(_FIELDS)  # per column: (rank, value, key)
    rest: dict = {}

    def hold(slot: tuple[int, int], value: object, key: str) -> None:
        index, rank = slot
        current = held[index]
        if current is None or rank < current[0]:
            if current is not None:  # a less preferred spelling stays in the attributes
                rest[current[2]] = current[1]
            held[index] = (rank, value, key)
        else:
            rest[key] = value

    for key, value in doc.items():
        if type(value) is dict and key.lower() in JSON_CONTAINERS:
            kept = {}
            for child, child_value in value.items():
                path = f"{key}.{child}"
                slot = slots.get(path, False)
                if slot is False:
                    slot = slots[path] = _slot(path)
                if slot is None or child_value is None:
                    kept[child] = child_value
                else:
                    hold(slot, child_value, path)
            if kept:
                rest[key] = kept
            continue
        slot = slots.get(key, False)
        if slot is False:
            slot = slots[key] = _slot(key)
        if slot is None or value is None:
            rest[key] = value
        else:
            hold(slot, value, key)
    return _row_values(held, rest)


_PLAIN = frozenset({str, int, float, type(None)})  # values polars turns into text as _as_text does


def _text_series(name: str, values: list) -> pl.Series:
    if set(map(type, values)) <= _PLAIN:
        return pl.Series(name, values, dtype=pl.String, strict=False)
    return pl.Series(name, [v if type(v) is str else _as_text(v) for v in values], dtype=pl.String)


def _number_series(name: str, values: list, *, text_too: bool) -> pl.Series:
    """Numbers as floats; numeric text too when `text_too`; anything else (booleans included) null."""
    types = set(map(type, values))
    if not types & ({int, float, str} if text_too else {int, float}):
        return pl.repeat(None, len(values), dtype=pl.Float64, eager=True).alias(name)
    if types <= {int, float, type(None)} or (text_too and types <= {int, float, str, type(None)}):
        return pl.Series(name, values, dtype=pl.Float64, strict=False)
    convert = _number if text_too else (lambda v: float(v) if type(v) in (int, float) else None)
    return pl.Series(name, [convert(v) for v in values], dtype=pl.Float64)


_JSON_SCALAR_TYPES = {str: pl.String, int: pl.Int64, float: pl.Float64, bool: pl.Boolean}


def _attributes(keys: tuple, consumed: set[str], docs: list[dict]) -> pl.Series:
    """The keys not used, as JSON object text: by polars when every left key holds one scalar type,
    else each object is serialized on its own."""
    rest = [key for key in keys if key not in consumed]
    if not rest:
        return pl.repeat("{}", len(docs), dtype=pl.String, eager=True).alias("attributes")
    columns = []
    for key in rest:
        values = list(map(itemgetter(key), docs))
        types = set(map(type, values)) - {type(None)}
        dtype = _JSON_SCALAR_TYPES.get(types.pop()) if len(types) == 1 else (pl.String if not types else None)
        if dtype is None:
            break
        try:
            columns.append(pl.Series(key, values, dtype=dtype))
        except (OverflowError, TypeError, ValueError, pl.exceptions.PolarsError):
            break
    else:
        return pl.DataFrame(columns).select(pl.struct(pl.all()).struct.json_encode().alias("attributes")).to_series()
    for key in consumed:
        deque(map(dict.pop, docs, repeat(key, len(docs))), maxlen=0)
    return pl.Series("attributes", list(map(orjson.dumps, docs)), dtype=pl.Binary).cast(pl.String)


def _decode_shape(keys: tuple, docs: list[dict], slots: dict) -> tuple[dict[str, pl.Series], list[int]]:
    """Columns for records that share one key set, with the key -> column choice made once; positions of
    records that need ``_decode_record`` (an object under a container key, a null in a chosen key)."""
    best: dict[int, tuple[int, str]] = {}
    for key in keys:
        slot = slots.get(key, False)
        if slot is False:
            slot = slots[key] = _slot(key)
        if slot is not None and (slot[0] not in best or slot[1] < best[slot[0]][0]):
            best[slot[0]] = (slot[1], key)
    chosen = {index: key for index, (_, key) in best.items()}
    column = {key: list(map(itemgetter(key), docs)) for key in chosen.values()}
    slow: set[int] = set()
    for key in keys:
        if key.lower() in JSON_CONTAINERS and dict in set(map(type, column.get(key) or map(itemgetter(key), docs))):
            slow.update(i for i, doc in enumerate(docs) if type(doc[key]) is dict)
    for key, values in column.items():
        if None in values:
            slow.update(i for i, value in enumerate(values) if value is None)
    if slow:
        docs = [doc for i, doc in enumerate(docs) if i not in slow]
        column = {key: list(map(itemgetter(key), docs)) for key in chosen.values()}
    n = len(docs)

    def constant(name: str, value: object, dtype: pl.DataType) -> pl.Series:
        return pl.repeat(value, n, dtype=dtype, eager=True).alias(name)

    out: dict[str, pl.Series] = {}
    time_key = chosen.get(_J_TIME)
    time_types = set(map(type, column[time_key])) if time_key else set()
    if not time_key:
        out["_time_text"] = constant("_time_text", None, pl.String)
        out["_time_number"] = constant("_time_number", None, pl.Float64)
        out["_time_problem"] = constant("_time_problem", None, pl.String)
    elif time_types <= {str} or time_types <= {int, float}:
        textual = time_types <= {str}
        out["_time_text"] = pl.Series("_time_text", column[time_key] if textual else [None] * n, dtype=pl.String)
        out["_time_number"] = pl.Series("_time_number", [None] * n if textual else column[time_key],
                                        dtype=pl.Float64, strict=False)
        out["_time_problem"] = constant("_time_problem", None, pl.String)
    else:
        parts = [_time_parts(v, time_key) for v in column[time_key]]
        out["_time_text"] = pl.Series("_time_text", [part[0] for part in parts], dtype=pl.String)
        out["_time_number"] = pl.Series("_time_number", [part[1] for part in parts], dtype=pl.Float64)
        out["_time_problem"] = pl.Series("_time_problem", [part[2] for part in parts], dtype=pl.String)
    level_key, sevnum_key = chosen.get(_J_LEVEL), chosen.get(_J_SEVNUM)
    if level_key or sevnum_key:
        out["severity_text"] = _text_series("severity_text", column[level_key or sevnum_key])
    else:
        out["severity_text"] = constant("severity_text", None, pl.String)
    levels = column[level_key] if level_key else None
    out["_level_number"] = (
        _number_series("_level_number", levels, text_too=False) if levels is not None
        else constant("_level_number", None, pl.Float64)
    )
    out["_level_scale"] = constant("_level_scale", _scale(level_key), pl.String)
    out["_otel_number"] = (
        _number_series("_otel_number", column[sevnum_key], text_too=True) if sevnum_key
        else constant("_otel_number", None, pl.Float64)
    )
    out["_sevnum_scale"] = constant("_sevnum_scale", _scale(sevnum_key), pl.String)
    for name in _TEXT_FIELDS:
        key = chosen.get(_FIELD_INDEX[name])
        out[name] = _text_series(name, column[key]) if key else constant(name, None, pl.String)
    out["attributes"] = _attributes(keys, set(chosen.values()), docs)
    return out, sorted(slow)


_JSON_COLUMNS = (
    "_row", "_problem", "_time_text", "_time_number", "_time_problem", "severity_text", "_level_number",
    "_level_scale", "_otel_number", "_sevnum_scale", "attributes", *_TEXT_FIELDS,
)
_SMALL_SHAPE = 16  # key sets seen fewer times than this are decoded record by record


def _load_lines(texts: list[str]) -> tuple[list[int], list[object], list[str | None]]:
    """(row, decoded document or None, problem) per non-blank line."""
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    try:  # the usual case, every line valid: no per-line bookkeeping
        docs = list(map(loads, texts))
    except decode_error:
        pass
    else:
        if set(map(type, docs)) == {dict}:
            return list(range(len(texts))), docs, [None] * len(docs)
    rows: list[int] = []
    problems: list[str | None] = []
    docs = []
    for row, text in enumerate(texts):
        try:
            doc = loads(text)
        except decode_error as exc:
            if not text.strip():
                continue  # blank: not a record
            doc, problem = None, f"not valid JSON ({exc}); each line of a JSON-lines log must be one JSON object"
        else:
            problem = None if type(doc) is dict else (
                f"the line is {_json_kind(doc)}, not a JSON object; each line of a JSON-lines log must be one object"
            )
        rows.append(row)
        docs.append(doc)
        problems.append(problem)
    return rows, docs, problems


def _shapes(docs: list[object]) -> dict[tuple, list[int]]:
    """Positions of the objects per key set (in key order)."""
    if set(map(type, docs)) == {dict}:
        keys: list[tuple | None] = list(map(tuple, docs))
    else:
        keys = [tuple(doc) if type(doc) is dict else None for doc in docs]
    ids: dict[tuple | None, int] = {}
    for key in set(keys):
        ids[key] = len(ids)
    names = {index: key for key, index in ids.items()}
    groups = (
        pl.DataFrame({"shape": list(map(ids.__getitem__, keys))}, schema={"shape": pl.Int64})
        .with_row_index("position")
        .group_by("shape")
        .agg("position")
    )
    return {
        names[shape]: positions
        for shape, positions in zip(groups.get_column("shape").to_list(), groups.get_column("position").to_list())
        if names[shape] is not None
    }


def _decode_json_lines(texts: list[str]) -> pl.DataFrame:
    """One row per non-blank line: its problem (invalid JSON, not an object) or its chosen values."""
    rows, docs, problems = _load_lines(texts)
    slots: dict = {}
    frames: list[pl.DataFrame] = []
    one_by_one: list[int] = []
    for keys, positions in _shapes(docs).items():
        if len(positions) < _SMALL_SHAPE:
            one_by_one.extend(positions)
            continue
        columns, slow = _decode_shape(keys, [docs[p] for p in positions], slots)
        slow_positions = {positions[i] for i in slow}
        fast = [p for p in positions if p not in slow_positions] if slow_positions else positions
        one_by_one.extend(slow_positions)
        columns["_row"] = pl.Series("_row", [rows[p] for p in fast], dtype=pl.Int64)
        columns["_problem"] = pl.repeat(None, len(fast), dtype=pl.String, eager=True).alias("_problem")
        frames.append(pl.DataFrame([columns[name] for name in _JSON_COLUMNS]))
    value_columns = _JSON_COLUMNS[2:]
    singles: dict[str, list] = {name: [] for name in _JSON_COLUMNS}
    for position in sorted(one_by_one):
        singles["_row"].append(rows[position])
        singles["_problem"].append(None)
        for name, value in zip(value_columns, _decode_record(docs[position], slots)):
            singles[name].append(value)
    for position, problem in enumerate(problems):
        if problem is not None:
            singles["_row"].append(rows[position])
            singles["_problem"].append(problem)
            for name in value_columns:
                singles[name].append(None)
    frames.append(pl.DataFrame(singles, schema=_JSON_FRAME_SCHEMA))
    return pl.concat(frames).sort("_row")


_JSON_FRAME_SCHEMA = {
    "_row": pl.Int64, "_problem": pl.String, "_time_text": pl.String, "_time_number": pl.Float64,
    "_time_problem": pl.String, "severity_text": pl.String, "_level_number": pl.Float64,
    "_level_scale": pl.String, "_otel_number": pl.Float64, "_sevnum_scale": pl.String, "attributes": pl.String,
    **{name: pl.String for name in _TEXT_FIELDS},
}


def parse_json_log(
    lines: pl.DataFrame,
    *,
    service: str | None,
    source_file: str,
    reference_time: datetime | None = None,
) -> ParseResult:
    """One chunk of a JSON-lines log file (columns line, source_line, source_offset); one record a line.

    `service` (the ``logs/<service>/`` folder) is used where a record names none. `reference_time` only
    gives year-less times their year (default now).
    """
    lines = _prepared(lines)
    if lines.height == 0:
        return _empty_result()
    reference = _reference(reference_time)
    decoded = _decode_json_lines(lines.get_column("line").to_list())
    ignored = lines.height - decoded.height
    frame = lines.with_row_index("_row").with_columns(pl.col("_row").cast(pl.Int64)).join(
        decoded, on="_row", how="inner", maintain_order="left"
    )
    invalid = frame.filter(pl.col("_problem").is_not_null())
    extra = [
        _quarantine(
            invalid.select(pl.col("_problem").alias("reason"), pl.col("line").alias("excerpt"), "source_line",
                           "source_offset"),
            source_file,
        )
    ] if invalid.height else []
    records = frame.filter(pl.col("_problem").is_null())
    if records.height == 0:
        return ParseResult(empty(LOGS), pl.concat(extra) if extra else empty(QUARANTINE), frame.height, ignored)
    from_text = parse_time_text(records.get_column("_time_text"), reference_time=reference)
    from_number = epoch_to_datetime(records.get_column("_time_number"))
    records = records.with_columns(pl.coalesce(pl.lit(from_text), pl.lit(from_number)).alias("timestamp"))
    reason = (
        pl.when(pl.col("_time_problem").is_not_null()).then(pl.col("_time_problem"))
        .when(pl.col("_time_text").is_not_null()).then(pl.concat_str(
            pl.lit("cannot read the time "), _quoted(pl.col("_time_text")),
            pl.lit(" in any known layout; write ISO 8601 (2026-11-02T10:00:00.123Z) or epoch milliseconds"),
        ))
        .when(pl.col("_time_number").is_not_null()).then(pl.concat_str(
            pl.lit("cannot read the time "), pl.col("_time_number").cast(pl.String),
            pl.lit(" as epoch seconds, milliseconds, microseconds or nanoseconds"),
        ))
        .otherwise(pl.lit(
            "no time: the record has none of the keys " + ", ".join(JSON_KEYS["time"][:8]) + ", ...; "
            "configure the logger to write a timestamp"
        ))
    )
    error = pl.col("error")
    multi_line = error.str.contains("\n", literal=True).fill_null(False)
    stack = pl.coalesce(pl.col("exception_stacktrace"), pl.when(multi_line).then(error))
    records = records.with_columns(
        pl.coalesce(pl.col("service"), pl.lit(service, dtype=pl.String)).alias("service"),
        stack.alias("exception_stacktrace"),
        pl.coalesce(pl.col("exception_message"), pl.when(~multi_line).then(error)).alias("_message"),
        _hex_id(pl.col("trace_id"), 32).alias("trace_id"),
        _hex_id(pl.col("span_id"), 16).alias("span_id"),
        pl.lit("jsonl").alias("source_format"),
        pl.col("line").alias("_excerpt"),
    )
    records = normalise_levels(records, "severity_text", "_level_number", "_level_scale", "_otel_number",
                               "_sevnum_scale")
    found = exception_columns(pl.col("exception_stacktrace"))
    records = records.with_columns(
        pl.coalesce(pl.col("exception_type"), found[0]).alias("exception_type"),
        pl.coalesce(pl.col("_message"), found[1]).alias("exception_message"),
    )
    return _finish(records, reason, source_file, extra, frame.height, ignored)
