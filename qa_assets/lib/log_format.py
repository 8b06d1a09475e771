"""logparser-style log formats: `<Date> <Time> <Level> <Component>: <Content>` splits header fields from
the message. The only per-source setting the project needs for plain-text logs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import polars as pl

_FIELD = re.compile(r"(<[^<>]+>)")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class LogFormatError(ValueError):
    """A log_format that cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class LogFormat:
    text: str
    fields: tuple[str, ...]  # header field names in order, `Content` among them
    pattern: str  # anchored regex with one named group per field


@lru_cache(maxsize=256)
def compile_log_format(log_format: str) -> LogFormat:
    """Turn `<Date> <Time> <Level>: <Content>` into a regex, as logparser's evaluator does.

    Literal runs of spaces match any whitespace; every field matches lazily; `Content` takes the rest.
    The literal parts are regex fragments in logparser's formats (`\\[<Pid>\\]`), so they are kept as written.
    """
    parts = _FIELD.split(log_format)
    fields: list[str] = []
    regex = ""
    for index, part in enumerate(parts):
        if index % 2 == 0:
            regex += re.sub(" +", r"\\s+", part)
            continue
        name = part[1:-1]
        if not _NAME.match(name):
            raise LogFormatError(f"log_format {log_format!r}: field <{name}> must be a plain name")
        if name in fields:
            raise LogFormatError(f"log_format {log_format!r}: field <{name}> appears twice")
        fields.append(name)
        regex += f"(?P<{name}>.*?)" if name != "Content" else f"(?P<{name}>.*)"
    if "Content" not in fields:
        raise LogFormatError(f"log_format {log_format!r} has no <Content> field; add one for the message")
    pattern = "^" + regex + "$"
    try:
        re.compile(pattern)
    except re.error as exc:
        raise LogFormatError(f"log_format {log_format!r} is not a valid pattern: {exc}") from exc
    return LogFormat(text=log_format, fields=tuple(fields), pattern=pattern)


def split_log_lines(lines: pl.Series, log_format: str) -> pl.DataFrame:
    """One row per line: a column per header field, `Content`, and `matched` (False where the line does
    not follow the format, e.g. a stack-trace continuation; its fields are then null)."""
    fmt = compile_log_format(log_format)
    lines = lines.cast(pl.String).str.strip_chars_end("\r")
    groups = pl.DataFrame({"line": lines}).select(
        pl.col("line").str.extract_groups(fmt.pattern).alias("groups")
    )
    frame = groups.unnest("groups")
    return frame.with_columns(pl.col("Content").is_not_null().alias("matched"))
