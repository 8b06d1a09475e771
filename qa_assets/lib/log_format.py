"""logparser-style log formats: `<Date> <Time> <Level> <Component>: <Content>` splits header fields from
the message. The only per-source setting the project needs for plain-text logs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import polars as pl

_FIELD = re.compile(r"(<[^<>]+>)")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_REGEX_META = set(".^$*+?{}[]|()\\")
_WS = None  # token: a run of whitespace in the format


class LogFormatError(ValueError):
    """A log_format that cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class LogFormat:
    text: str
    fields: tuple[str, ...]  # header field names in order, `Content` among them
    pattern: str  # anchored regex with one named group per field
    # A pattern that finds the same fields as `pattern` on every line it matches, and is much cheaper (no
    # lazy groups); None when the format is not simple.
    fast_pattern: str | None = None


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
    return LogFormat(text=log_format, fields=tuple(fields), pattern=pattern, fast_pattern=_fast_pattern(parts))


def _literal_tokens(fragment: str) -> list[str | None] | None:
    """A literal part as tokens (a character, or _WS for a run of spaces); None if it holds regex syntax."""
    tokens: list[str | None] = []
    index = 0
    while index < len(fragment):
        char = fragment[index]
        if char == " ":
            if not tokens or tokens[-1] is not _WS:
                tokens.append(_WS)
            index += 1
        elif char == "\\":
            escaped = fragment[index + 1 : index + 2]
            if not escaped or escaped.isalnum() or escaped == "_":
                return None  # \s, \d, \1 ...: a real regex construct
            tokens.append(escaped)
            index += 2
        elif char in _REGEX_META:
            return None
        else:
            tokens.append(char)
            index += 1
    return tokens


def _fast_pattern(parts: list[str]) -> str | None:
    """The format as a pattern without lazy groups, where that gives the same fields.

    The lazy pattern gives each field the shortest text after which the rest of the line still matches.
    When a field may not contain the first character of the literal that follows it (no whitespace at all
    when whitespace follows, and after a run of whitespace it may not start with whitespace), the shortest
    such text is the only one left, so both patterns agree on every line the fast one matches. Runs of
    whitespace in the format match spaces and tabs only: a line with other whitespace (a form feed, a
    no-break space) between its fields does not match, and lines the fast pattern does not match are split
    with the exact pattern. Formats with regex syntax in their literals, two fields side by side, or text
    after `<Content>` keep the exact pattern only.
    """
    literals = [_literal_tokens(part) for part in parts[0::2]]
    names = [part[1:-1] for part in parts[1::2]]
    if any(tokens is None for tokens in literals) or names[-1] != "Content" or literals[-1]:
        return None
    regex = "^"
    for index, name in enumerate(names):
        before, after = literals[index], literals[index + 1]
        regex += "".join("[ \\t]+" if token is _WS else re.escape(token) for token in before)
        after_whitespace = bool(before) and before[-1] is _WS
        if name == "Content":
            regex += "(?P<Content>(?:\\S.*)?)" if after_whitespace else "(?P<Content>.*)"
            break
        if not after:
            return None  # two fields side by side: only the lazy pattern knows where one ends
        stop = "\\s" if after[0] is _WS else re.escape(after[0])
        if after_whitespace:
            first = stop if after[0] is _WS else stop + "\\s"
            regex += f"(?P<{name}>[^{first}][^{stop}]*)"
        else:
            regex += f"(?P<{name}>[^{stop}]*)"
    regex += "$"
    try:
        re.compile(regex)
    except re.error:
        return None
    return regex


def split_log_lines(lines: pl.Series, log_format: str) -> pl.DataFrame:
    """One row per line: a column per header field, `Content`, and `matched` (False where the line does
    not follow the format, e.g. a stack-trace continuation; its fields are then null)."""
    fmt = compile_log_format(log_format)
    lines = lines.cast(pl.String).str.strip_chars_end("\r")
    if fmt.fast_pattern is None:
        frame = pl.DataFrame({"line": lines}).select(
            pl.col("line").str.extract_groups(fmt.pattern).alias("groups")
        ).unnest("groups")
        return frame.with_columns(pl.col("Content").is_not_null().alias("matched"))
    frame = pl.DataFrame({"line": lines}).select(
        pl.col("line").str.extract_groups(fmt.fast_pattern).alias("groups")
    ).unnest("groups")
    indices = frame.get_column("Content").is_null().arg_true()
    if len(indices):  # continuation lines and unusual whitespace: the exact lazy pattern decides
        exact = lines.gather(indices).str.extract_groups(fmt.pattern).struct.unnest()
        frame = frame.with_columns(
            frame.get_column(name).clone().scatter(indices, exact.get_column(name)) for name in fmt.fields
        )
    return frame.with_columns(pl.col("Content").is_not_null().alias("matched"))
