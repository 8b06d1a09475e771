"""Log template mining over whole partitions.

Every message gets a template (variables shown as `<*>`), a template id and its parameters. Work that
touches every line is columnar (polars); Python only thinks about distinct templates:

1. Masking, one vectorized regex pass: a token with two or more digits (numbers, ids, hashes, IPs,
   timestamps, paths and URLs that carry a number), a digit with a separator inside it (`node-1`), a
   hex literal, a lone digit or a size with its unit (`5.2 KB`) becomes a slot. A second pass, run in
   parallel, extracts what was masked (the parameters). The masked message is the line's *shape*.
2. Identical shapes collapse: from here on the cost follows distinct shapes, not lines.
3. Word columns, vectorized over the shape table: shapes that are equal except for one word are
   bucketed by a hash of everything else; a bucket whose words look like a variable (many distinct
   values, or distinct values on a large share of its lines) turns that word into a slot. This is what
   keeps user names, host names or class names from multiplying the shapes.
4. Python then clusters the remaining shapes (hundreds, usually): the same merge over one or two
   positions at a time with the counts of the merged groups, and variable-length values (a position
   that certainly varies, written in several tokens by some lines, `LOCAL(0)` among IP addresses).
5. Lines join back to their template through integer codes; parameters are the masked spans, or a
   recipe per shape (literal words, joined spans) evaluated per recipe structure, not per shape.

A word that varies between otherwise identical shapes stays a constant when few values cover many lines
(`interface alt0` / `interface ee0` on thousands of lines are two events), and becomes `<*>` when the
values are many or spread thin (one class name per line). Nothing here knows a dataset: the only inputs
are the messages and the global `MinerSettings`.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from qa_assets.lib.log_format import split_log_lines
from qa_assets.lib.masking import TOKEN_PATTERN as MASKED_VALUE_PATTERN

VARIABLE = "<*>"
# Placeholder for one masked span inside a shape. A private-use character: it cannot collide with the
# delimiters that split tokens, and real log text essentially never carries it.
SLOT = "\ue000"

_DELIMITERS = r"\s,;=()\[\]{}<>\"'|"
_TOKEN_CHAR = f"[^{_DELIMITERS}]"
# A dot counts as a separator only when a letter or digit follows: `key.........0` is a dot leader.
_INNER_SEPARATOR = rf"(?:[^A-Za-z0-9.{_DELIMITERS}]|\.[A-Za-z0-9])"

# One alternation, leftmost-first, written so Rust's regex engine runs it as a DFA (no look-around, no
# Unicode word boundaries). E-mail addresses are masked whole as well. A word with a single digit and
# nothing else (`eth0`, `alt0`, `CPU1`) is not masked: it may name a fixed interface or a varying host,
# and the statistics decide.
MASK_PATTERN = "|".join(
    [
        MASKED_VALUE_PATTERN,  # a value the ingestion already masked (`<email:3fa2b9c01d7e>`)
        r"(?-u:\b)[0-9]+(?:[.,][0-9]+)?\s?(?:[KMGTPE]i?B|B)(?-u:\b)",
        rf"{_TOKEN_CHAR}*[0-9]{_TOKEN_CHAR}*[0-9]{_TOKEN_CHAR}*",
        rf"{_TOKEN_CHAR}*[A-Za-z0-9]{_INNER_SEPARATOR}{_TOKEN_CHAR}*[0-9]{_TOKEN_CHAR}*",
        rf"{_TOKEN_CHAR}*[0-9]{_TOKEN_CHAR}*{_INNER_SEPARATOR}[A-Za-z0-9]{_TOKEN_CHAR}*",
        rf"{_TOKEN_CHAR}*[A-Za-z0-9]@[A-Za-z0-9-]+\.[A-Za-z]{_TOKEN_CHAR}*",
        r"-?(?-u:\b)0[xX][0-9A-Fa-f]+(?-u:\b)",
        rf"[^A-Za-z0-9.{_DELIMITERS}]*-?(?-u:\b)[0-9](?-u:\b)[^A-Za-z0-9{_DELIMITERS}]*",
    ]
)
# Tokens: runs of non-delimiters, and each delimiter character on its own (whitespace only separates).
TOKEN_PATTERN = rf"[^{_DELIMITERS}]+|[^\s]"
_PATHLIKE_PATTERN = r"^(?:[A-Za-z][A-Za-z0-9+.-]*:|\.{1,2}|~)?[/\\]"

_TOKEN_RE = re.compile(TOKEN_PATTERN)
_HAS_WORD = re.compile(rf"[A-Za-z{SLOT}]")
_WHITESPACE = re.compile(r"\s+")
_PATHLIKE = re.compile(_PATHLIKE_PATTERN)
_PARALLEL_MIN_LINES = 50_000  # below this, splitting a regex pass costs more than it saves
_MAX_POSITIONS_FOR_PAIRS = 48  # merging two positions at a time is tried among at most this many
_MAX_GROUPS_FOR_PAIRS = 2_000  # ... and among at most this many patterns of one length
_MAX_CLUSTERED_SHAPES = 10_000  # beyond this many shapes, lone one-line shapes skip the Python clustering


@dataclass(frozen=True)
class MinerSettings:
    """The global knobs of the miner, the same for every source (there are no per-source ones).

    A column that differs between otherwise identical shapes is a variable when it shows at least
    `variable_min_distinct` distinct values, or at least `ratio_min_distinct` distinct values that make
    up at least `variable_min_ratio` of its lines; the message's first word needs both.
    """

    variable_min_distinct: int = 10
    ratio_min_distinct: int = 3
    variable_min_ratio: float = 0.3
    max_positions_per_merge: int = 2  # how many word positions may differ between merged shapes
    sample_lines_per_shape: int = 64  # lines per shape used to count distinct masked values


DEFAULT_SETTINGS = MinerSettings()


def template_id_of(template: str) -> str:
    """The content-addressed id of a template: the same text gets the same id in every run."""
    return "T" + hashlib.blake2b(template.encode("utf-8"), digest_size=8).hexdigest()


def mask_messages(messages: pl.Series, *, with_masked: bool = True) -> pl.DataFrame:
    """Per line the shape (each masked span replaced by SLOT) and, with `with_masked`, the masked spans.

    The two regex passes run as independent queries on polars' thread pool; without the spans the shape
    pass is split in halves instead, so both cores work either way.
    """
    # One chunk: a column split by a regex arrives in hundreds of chunks, which slows every pass after it.
    frame = pl.DataFrame({"message": messages.cast(pl.String).fill_null("").rechunk()})
    shape = pl.col("message").str.replace_all(MASK_PATTERN, SLOT).alias("shape")
    if with_masked:
        spans = pl.col("message").str.extract_all(MASK_PATTERN).alias("masked")
        return pl.concat(
            pl.collect_all([frame.lazy().select(shape), frame.lazy().select(spans)]), how="horizontal"
        )
    half = frame.height // 2
    if half < _PARALLEL_MIN_LINES:
        return frame.select(shape)
    halves = pl.collect_all(
        [frame.slice(0, half).lazy().select(shape), frame.slice(half).lazy().select(shape)]
    )
    return pl.concat(halves, how="vertical", rechunk=False)


# ---------------------------------------------------------------------------------------------------
# Shape statistics and the vectorized word-column pass (polars, per distinct shape)


def _shape_table(
    codes: pl.Series,
    shapes: pl.Series,
    messages: pl.Series,
    masked: pl.Series | None,
    settings: MinerSettings,
) -> pl.DataFrame:
    """Per distinct shape: `code`, `shape`, `lines`, and per masked span the estimated number of distinct
    values (`slot_distinct`) and whether every value looks like a path (`slot_pathlike`), counted on
    evenly spaced sample lines (a head would only see the first burst of a partition)."""
    # Evenly spaced lines per shape, with array arithmetic on the lines sorted by shape (stable, so each
    # shape's lines stay in input order): a line's rank within its shape is its sorted position minus the
    # shape's start.
    code_array = codes.to_numpy()
    line_counts = (
        np.bincount(code_array, minlength=len(shapes)) if len(code_array) else np.zeros(len(shapes), np.int64)
    )
    if len(shapes) <= np.iinfo(np.uint16).max:  # numpy sorts 16-bit keys stably with a radix sort
        order = np.argsort(code_array.astype(np.uint16), kind="stable")
    else:
        order = (
            pl.DataFrame({"code": codes})
            .select(pl.arg_sort_by("code", maintain_order=True))
            .to_series()
            .to_numpy()
        )
    sorted_codes = code_array[order]
    starts = np.cumsum(line_counts) - line_counts
    rank = np.arange(len(order)) - starts[sorted_codes]
    step = line_counts // settings.sample_lines_per_shape + 1
    keep = rank % step[sorted_codes] == 0
    counts = pl.DataFrame(
        {"code": np.arange(len(shapes), dtype=np.uint32), "lines": line_counts.astype(np.uint32)}
    ).filter(pl.col("lines") > 0)
    sampled = pl.DataFrame(
        {
            "code": sorted_codes[keep].astype(np.uint32),
            "_row": order[keep].astype(np.uint32),
            "lines": line_counts[sorted_codes[keep]].astype(np.uint32),
        }
    )
    if masked is not None:
        spans = masked.gather(sampled["_row"])
    else:
        spans = messages.cast(pl.String).fill_null("").gather(sampled["_row"]).str.extract_all(MASK_PATTERN)
    per_slot = (
        sampled.with_columns(spans.alias("value"))
        .with_columns(pl.int_ranges(0, pl.col("value").list.len(), dtype=pl.UInt32).alias("slot"))
        .explode("value", "slot")
        .drop_nulls("slot")
        .group_by("code", "slot")
        .agg(
            pl.col("value").n_unique().alias("distinct"),
            pl.len().alias("sampled"),
            pl.col("lines").first(),
            pl.col("value").str.contains(_PATHLIKE_PATTERN).all().alias("pathlike"),
        )
        # Every sampled value different: assume the span keeps producing new values on unsampled lines.
        .with_columns(
            pl.when((pl.col("distinct") == pl.col("sampled")) & (pl.col("sampled") > 1))
            .then(pl.col("lines"))
            .otherwise(pl.col("distinct"))
            .cast(pl.Int64)
            .alias("distinct")
        )
        .sort("code", "slot")
        .group_by("code", maintain_order=True)
        .agg(pl.col("distinct").alias("slot_distinct"), pl.col("pathlike").alias("slot_pathlike"))
    )
    texts = pl.DataFrame({"shape": shapes}).with_row_index("code")  # categories are listed in code order
    return (
        counts.join(texts, on="code")
        .join(per_slot, on="code", how="left")
        .with_columns(
            pl.col("slot_distinct").fill_null(pl.lit([], dtype=pl.List(pl.Int64))),
            pl.col("slot_pathlike").fill_null(pl.lit([], dtype=pl.List(pl.Boolean))),
        )
        .select("code", "shape", "lines", "slot_distinct", "slot_pathlike")
        .sort("code")
    )


def _variable_column_expr(
    distinct: pl.Expr, lines: pl.Expr, leading: pl.Expr, pathlike: pl.Expr, settings: MinerSettings
) -> pl.Expr:
    """`_is_variable_column` as a polars expression."""
    many = distinct >= settings.variable_min_distinct
    frequent = (distinct >= settings.ratio_min_distinct) & (distinct >= settings.variable_min_ratio * lines)
    return (pathlike & (distinct >= 2)) | pl.when(leading).then(many & frequent).otherwise(many | frequent)


def _reduce_shapes(table: pl.DataFrame, settings: MinerSettings) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The vectorized first merge pass over the shape table.

    Shapes of one length that agree on every token but one word are bucketed by a hash of the other
    tokens; a bucket whose values pass the variable test (with the line counts of all its shapes) turns
    its words there into slots. A masked value counts once here; the Python pass weighs masked values by
    their own distinct counts.

    Returns the reduced shapes (`reduced`, `code` of a representative original shape, its `positions`
    turned into slots, `lines`, `slot_distinct`, `slot_pathlike`, `inserted`: the reduced slots that
    were words, `original`: for the other reduced slots in order, the original slot) and the members
    (`code`, `reduced`, `words`: the words its marked positions held, in order).
    """
    tokens = (
        table.select("code", "lines", pl.col("shape").str.extract_all(TOKEN_PATTERN).alias("token"))
        .with_columns(
            pl.int_ranges(0, pl.col("token").list.len(), dtype=pl.UInt32).alias("position"),
            pl.col("token").list.len().alias("length"),
        )
        .explode("token", "position")
        .drop_nulls("token")
        .with_columns(
            pl.col("token").str.contains("[A-Za-z]").alias("_letters"),
            pl.col("token").str.count_matches(SLOT, literal=True).cast(pl.UInt32).alias("_slots"),
            pl.struct("token", "position").hash(seed=17).alias("_hash"),
        )
        .with_columns(((pl.col("_slots") == 0) & pl.col("_letters")).alias("_word"))
    )
    tokens = tokens.with_columns(
        # XOR of every other token's (token, position) hash: equal for shapes that differ only here.
        (pl.col("_hash").bitwise_xor().over("code") ^ pl.col("_hash")).alias("_rest"),
        pl.col("_word").cast(pl.UInt32).sum().over("code").alias("_words"),
        # The first token with a letter or slot: the message's leading word.
        pl.when(pl.col("_letters") | (pl.col("_slots") > 0))
        .then(pl.col("position"))
        .min()
        .over("code")
        .alias("_lead"),
    )
    # How many shapes share each bucket: a shape alone in all of its buckets has no merge partner here.
    tokens = tokens.with_columns(pl.len().over("length", "position", "_rest").alias("_partners"))
    buckets = (
        tokens.group_by("length", "position", "_rest")
        .agg(
            pl.col("token").n_unique().alias("distinct"),
            pl.col("lines").sum().alias("bucket_lines"),
            (pl.col("_word") | (pl.col("_slots") > 0)).all().alias("all_values"),
            pl.col("token").str.contains(_PATHLIKE_PATTERN).all().alias("pathlike"),
            (pl.col("position") == pl.col("_lead")).first().alias("leading"),
            pl.col("_words").min().alias("words"),
        )
        .filter(
            pl.col("all_values")
            & (pl.col("distinct") >= 2)
            & (pl.col("words") >= 2)  # the template keeps at least one constant word
            & _variable_column_expr(
                pl.col("distinct"), pl.col("bucket_lines"), pl.col("leading"), pl.col("pathlike"), settings
            )
        )
        .select("length", "position", "_rest", pl.lit(True).alias("_marked"))
    )
    tokens = (
        tokens.join(buckets, on=["length", "position", "_rest"], how="left")
        .with_columns((pl.col("_marked").fill_null(False) & pl.col("_word")).alias("_marked"))
        .with_columns((pl.col("_slots") + pl.col("_marked").cast(pl.UInt32)).alias("_reduced_slots"))
        .with_columns(
            # Shapes with equal tokens after marking (and the same marks) become one reduced shape.
            pl.struct(pl.when("_marked").then(pl.lit(SLOT)).otherwise("token"), "position", "_marked")
            .hash(seed=29)
            .bitwise_xor()
            .over("code")
            .alias("_key"),
            (pl.col("_slots").cum_sum().over("code") - pl.col("_slots")).alias("_original_start"),
            (pl.col("_reduced_slots").cum_sum().over("code") - pl.col("_reduced_slots")).alias(
                "_reduced_start"
            ),
        )
    )
    per_code = tokens.group_by("code").agg(
        pl.col("_key").first(),
        pl.col("_partners").max(),
        pl.col("position").filter("_marked").alias("positions"),
        pl.col("token").filter("_marked").alias("words"),
    )
    codes = (
        # Every shape, including the empty one (no tokens, so no rows above).
        table.select("code", "lines")
        .join(per_code, on="code", how="left")
        .with_columns(
            pl.col("_key").fill_null(0),
            pl.col("_partners").fill_null(1),
            pl.col("positions").fill_null(pl.lit([], dtype=pl.List(pl.UInt32))),
            pl.col("words").fill_null(pl.lit([], dtype=pl.List(pl.String))),
        )
        .with_columns(pl.col("_key").rank("dense").cast(pl.UInt32).sub(1).alias("reduced"))
    )
    reduced_of = codes.select("code", "reduced")
    # Slot statistics of the reduced shapes: original slots keep theirs (summed over the shapes merged),
    # slots that were words count their distinct words.
    shift = (
        tokens.filter(pl.col("_slots") > 0)
        .select(
            "code",
            pl.int_ranges(
                "_original_start", pl.col("_original_start") + pl.col("_slots"), dtype=pl.UInt32
            ).alias("slot"),
            (pl.col("_reduced_start").cast(pl.Int64) - pl.col("_original_start").cast(pl.Int64)).alias(
                "_shift"
            ),
        )
        .explode("slot")
    )
    original_stats = (
        table.select(
            "code",
            pl.col("slot_distinct").alias("distinct"),
            pl.col("slot_pathlike").alias("pathlike"),
            pl.int_ranges(0, pl.col("slot_distinct").list.len(), dtype=pl.UInt32).alias("slot"),
        )
        .explode("distinct", "pathlike", "slot")
        .drop_nulls("slot")
        .join(shift, on=["code", "slot"])
        .join(reduced_of, on="code")
        .select(
            "reduced",
            (pl.col("slot").cast(pl.Int64) + pl.col("_shift")).alias("reduced_slot"),
            pl.col("distinct").cast(pl.Int64),
            "pathlike",
            pl.lit(False).alias("is_inserted"),
        )
    )
    inserted_stats = (
        tokens.filter("_marked")
        .join(reduced_of, on="code")
        .group_by("reduced", pl.col("_reduced_start").cast(pl.Int64).alias("reduced_slot"))
        .agg(
            pl.col("token").n_unique().cast(pl.Int64).alias("distinct"),
            pl.col("token").str.contains(_PATHLIKE_PATTERN).all().alias("pathlike"),
        )
        .with_columns(pl.lit(True).alias("is_inserted"))
    )
    slot_stats = (
        pl.concat([original_stats, inserted_stats.select(original_stats.columns)])
        .group_by("reduced", "reduced_slot")
        .agg(pl.col("distinct").sum(), pl.col("pathlike").all(), pl.col("is_inserted").first())
        .sort("reduced", "reduced_slot")
        .group_by("reduced", maintain_order=True)
        .agg(
            pl.col("distinct").alias("slot_distinct"),
            pl.col("pathlike").alias("slot_pathlike"),
            pl.col("reduced_slot").filter("is_inserted").cast(pl.UInt32).alias("inserted"),
        )
    )
    representatives = (
        codes.sort("lines", "code", descending=[True, False])
        .group_by("reduced", maintain_order=True)
        .agg(
            pl.col("code").first(),
            pl.col("positions").first(),
            pl.col("lines").sum(),
            # Alone: one line of one shape without any merge partner in the vectorized pass.
            ((pl.len() == 1) & (pl.col("lines").sum() == 1) & (pl.col("_partners").max() <= 1)).alias(
                "alone"
            ),
        )
    )
    reduced = (
        representatives.join(slot_stats, on="reduced", how="left")
        .join(table.select("code", "shape"), on="code")
        .with_columns(
            pl.col("slot_distinct").fill_null(pl.lit([], dtype=pl.List(pl.Int64))),
            pl.col("slot_pathlike").fill_null(pl.lit([], dtype=pl.List(pl.Boolean))),
            pl.col("inserted").fill_null(pl.lit([], dtype=pl.List(pl.UInt32))),
        )
        .sort("reduced")
    )
    return reduced, codes.select("code", "reduced", "words")


# ---------------------------------------------------------------------------------------------------
# Shapes and tokens (Python, per distinct reduced shape)


@dataclass(slots=True)
class _Token:
    text: str  # the token as it appears in the shape (SLOT for masked spans)
    start: int  # character span in the shape
    end: int
    slots: tuple[int, ...]  # indices (into the shape's masked spans) of the slots this token covers
    collapsed: bool = False  # a run of one repeated masked token


def tokenize_shape(shape: str) -> list[_Token]:
    """Split a shape into tokens (words and single delimiter characters); collapse repeated runs."""
    tokens: list[_Token] = []
    slot_index = 0
    previous: _Token | None = None
    for match in _TOKEN_RE.finditer(shape):
        text = match.group()
        start, end = match.span()
        if SLOT not in text:
            previous = _Token(text, start, end, ())
            tokens.append(previous)
            continue
        count = text.count(SLOT)
        slots = tuple(range(slot_index, slot_index + count))
        slot_index += count
        if (
            previous is not None
            and count == 1
            and text == previous.text
            and shape[previous.end : start].isspace()
        ):
            # `blk_<*> blk_<*> blk_<*>`: a list of values whose length varies from line to line.
            previous.end = end
            previous.slots = previous.slots + slots
            previous.collapsed = True
            continue
        previous = _Token(text, start, end, slots)
        tokens.append(previous)
    return tokens


@dataclass
class _Shape:
    shape: str
    lines: int
    tokens: list[_Token]
    slot_distinct: list[int]  # estimated distinct values per masked span
    slot_pathlike: list[bool]  # every seen value of the masked span is a path or URL


def _token_distinct(shape: _Shape, token: _Token) -> int:
    if token.collapsed:
        return shape.lines
    if not token.slots:
        return 1
    return min(shape.lines, max(shape.slot_distinct[slot] for slot in token.slots))


def _token_pathlike(shape: _Shape, token: _Token) -> bool:
    if token.slots:
        return all(shape.slot_pathlike[slot] for slot in token.slots)
    return bool(_PATHLIKE.match(token.text))


# A member of a group: one shape and, per position of the group's pattern, the inclusive range of the
# shape's tokens that position covers (one token, or several where a variable-length value was absorbed).
_Span = tuple[int, int]


@dataclass
class _Member:
    shape: _Shape
    spans: list[_Span]


@dataclass
class _Group:
    """Shapes that share one pattern; merging widens the pattern with SLOT wildcards."""

    pattern: list[str]
    members: list[_Member]
    lines: int
    distinct: list[int]  # per position: estimated distinct values on the group's lines
    pathlike: list[bool]  # per position: every value is a path or URL

    def __post_init__(self) -> None:
        # Per position: a hash of (position, token), and their XOR over the pattern. Patterns that agree
        # everywhere but at some positions share `total` XOR those positions' hashes, so candidates for a
        # merge are found by bucketing integers instead of building a key per position.
        self.hashes = [hash((position, token)) for position, token in enumerate(self.pattern)]
        self.total = 0
        for value in self.hashes:
            self.total ^= value
        self.mergeable = [bool(_HAS_WORD.search(token)) for token in self.pattern]
        self.constant = [
            m and SLOT not in token for m, token in zip(self.mergeable, self.pattern, strict=True)
        ]
        self.leading = next((i for i, m in enumerate(self.mergeable) if m), 0)


def _group_of_shapes(pattern: tuple[str, ...], shapes: list[_Shape]) -> _Group:
    lines = sum(shape.lines for shape in shapes)
    length = len(pattern)
    return _Group(
        pattern=list(pattern),
        members=[_Member(shape, [(i, i) for i in range(length)]) for shape in shapes],
        lines=lines,
        distinct=[min(lines, sum(_token_distinct(s, s.tokens[p]) for s in shapes)) for p in range(length)],
        pathlike=[all(_token_pathlike(s, s.tokens[p]) for s in shapes) for p in range(length)],
    )


# ---------------------------------------------------------------------------------------------------
# Deciding what is a variable


def _is_variable_column(
    distinct: int, lines: int, settings: MinerSettings, *, leading: bool = False, pathlike: bool = False
) -> bool:
    """Many distinct values make a variable; so do enough distinct values on a large share of the lines.
    The message's first word usually names the event, so there it takes both. Paths and URLs are values
    by nature: two different ones are enough."""
    if pathlike and distinct >= 2:
        return True
    many = distinct >= settings.variable_min_distinct
    frequent = distinct >= settings.ratio_min_distinct and distinct >= settings.variable_min_ratio * lines
    return (many and frequent) if leading else (many or frequent)


def _column_distinct(groups: list[_Group], position: int) -> int:
    """Distinct values the groups hold at `position`: a constant word counts once however many groups
    carry it; a masked or merged value counts the distinct values seen on each group's lines."""
    total = 0
    words: set[str] = set()
    for group in groups:
        token = group.pattern[position]
        if SLOT in token:
            total += group.distinct[position]
        else:
            words.add(token)
    return total + len(words)


def _holds_variables(groups: list[_Group], positions: tuple[int, ...], settings: MinerSettings) -> bool:
    """Do the groups, which agree everywhere but at `positions`, differ there by variable values?

    Every position must differ between the groups (narrower merges are tried first) and each must look
    variable on its own: two constant words that vary together (`Starting`/`Ending` ...
    `initialization`/`finalization`) make two templates, not one.
    """
    lines = sum(group.lines for group in groups)
    leading = groups[0].leading
    for position in positions:
        if len({group.pattern[position] for group in groups}) < 2:
            return False
        distinct = min(lines, _column_distinct(groups, position))
        pathlike = all(group.pathlike[position] for group in groups)
        if not _is_variable_column(distinct, lines, settings, leading=position == leading, pathlike=pathlike):
            return False
    return True


def _has_constant_word(tokens: Iterable[str]) -> bool:
    return any(_HAS_WORD.search(token) and SLOT not in token for token in tokens if token)


def _combine(groups: list[_Group], positions: Iterable[int]) -> _Group:
    wild = set(positions)
    lines = sum(group.lines for group in groups)
    length = len(groups[0].pattern)
    return _Group(
        pattern=[SLOT if p in wild else token for p, token in enumerate(groups[0].pattern)],
        members=[member for group in groups for member in group.members],
        lines=lines,
        distinct=[min(lines, _column_distinct(groups, p)) for p in range(length)],
        pathlike=[all(group.pathlike[p] for group in groups) for p in range(length)],
    )


def _merge_same_length(groups: list[_Group], settings: MinerSettings) -> list[_Group]:
    """Merge groups of one length whose patterns differ in a few positions that hold variables."""
    length = len(groups[0].pattern)
    changed = True
    while changed and len(groups) > 1:
        changed = False
        # Only positions where the groups disagree and a word or value sits can be generalized.
        varying = [
            p
            for p in range(length)
            if len({g.pattern[p] for g in groups}) > 1 and any(g.mergeable[p] for g in groups)
        ]
        for width in range(1, settings.max_positions_per_merge + 1):
            if width > 1 and (len(varying) > _MAX_POSITIONS_FOR_PAIRS or len(groups) > _MAX_GROUPS_FOR_PAIRS):
                break  # pairs are quadratic; where this many positions or shapes differ they find nothing
            for positions in combinations(varying, width):
                buckets: dict[int, list[_Group]] = defaultdict(list)
                for group in groups:
                    if all(group.mergeable[p] for p in positions):
                        key = group.total
                        for p in positions:
                            key ^= group.hashes[p]
                        buckets[key].append(group)
                for members in buckets.values():
                    if len(members) < 2 or not _mergeable_together(members, positions):
                        continue
                    if not _holds_variables(members, positions, settings):
                        continue
                    merged = _combine(members, positions)
                    taken = {id(m) for m in members}
                    groups = [g for g in groups if id(g) not in taken] + [merged]
                    changed = True
            if changed:
                break  # recompute the varying positions before trying wider merges
        groups.sort(key=lambda g: (-g.lines, g.pattern))
    return groups


def _mergeable_together(members: list[_Group], positions: tuple[int, ...]) -> bool:
    """The groups agree outside `positions` (a hash bucket could in principle mix patterns) and keep at
    least one constant word there: a template is never all variables."""
    first = members[0]
    outside = [q for q in range(len(first.pattern)) if q not in positions]
    if not any(first.constant[q] for q in outside):
        return False
    return all(all(m.pattern[q] == first.pattern[q] for q in outside) for m in members[1:])


def _is_strong_slot(group: _Group, position: int, settings: MinerSettings) -> bool:
    """A position that certainly holds values: masked values (numbers, ids, addresses) or paths on every
    line with a few distinct ones, or many distinct values whatever they look like."""
    distinct = group.distinct[position]
    if distinct >= settings.variable_min_distinct or (group.pathlike[position] and distinct >= 2):
        return True
    masked = all(
        member.spans[position][0] == member.spans[position][1]
        and member.shape.tokens[member.spans[position][0]].text == SLOT
        for member in group.members
    )
    return masked and distinct >= settings.ratio_min_distinct


def _absorb_variable_length(groups: list[_Group], settings: MinerSettings) -> list[_Group]:
    """Fold a group into a shorter one when it is that group with one strongly variable position filled
    by several tokens: `synchronized to LOCAL(0), stratum 10` is `synchronized to <*>, stratum <*>` whose
    server happens to be written in three tokens."""
    hosts: dict[tuple[int, tuple[str, ...]], list[tuple[_Group, int]]] = defaultdict(list)
    for group in groups:
        if not _has_constant_word(group.pattern):
            continue
        for position, token in enumerate(group.pattern):
            if token == SLOT and _is_strong_slot(group, position, settings):
                hosts[(position, tuple(group.pattern[:position]))].append((group, position))
    if not hosts:
        return groups
    absorbed: set[int] = set()
    for guest in sorted(groups, key=lambda g: (g.lines, g.pattern)):
        best: tuple[_Group, int] | None = None
        for position in range(len(guest.pattern)):
            for host, slot in hosts.get((position, tuple(guest.pattern[:position])), ()):
                suffix = host.pattern[slot + 1 :]
                if (
                    host is guest
                    or id(host) in absorbed
                    or len(guest.pattern) <= len(host.pattern)
                    or guest.lines > host.lines
                    or tuple(guest.pattern[len(guest.pattern) - len(suffix) :]) != tuple(suffix)
                ):
                    continue
                if best is None or host.lines > best[0].lines:
                    best = (host, slot)
        if best is None:
            continue
        host, slot = best
        width = len(guest.pattern) - len(host.pattern) + 1
        for member in guest.members:  # including what the guest absorbed before
            spans = member.spans
            middle = (spans[slot][0], spans[slot + width - 1][1])
            host.members.append(_Member(member.shape, [*spans[:slot], middle, *spans[slot + width :]]))
        guest.members = []
        host.lines += guest.lines
        absorbed.add(id(guest))
    return [group for group in groups if id(group) not in absorbed]


# ---------------------------------------------------------------------------------------------------
# Templates and parameter recipes

# A parameter is built from pieces: an int is the i-th masked span of the line, a str is literal text.
Recipe = tuple[tuple[int | str, ...], ...]


@dataclass(frozen=True)
class ShapeTemplate:
    """How one shape maps to its template: the template text and the recipe of its parameters."""

    shape: str
    template: str
    recipe: Recipe
    identity: bool  # the parameters are exactly the masked spans, in order


def _render(group: _Group) -> str:
    """The template text, laid out like the most frequent shape that follows the pattern token by token."""
    plain = [m for m in group.members if all(a == b for a, b in m.spans)]
    representative = max(plain or group.members, key=lambda m: (m.shape.lines, m.shape.shape))
    shape = representative.shape
    pieces: list[str] = []
    cursor = 0
    for position, (first, last) in enumerate(representative.spans):
        start, end = shape.tokens[first].start, shape.tokens[last].end
        pieces.append(shape.shape[cursor:start])
        token = group.pattern[position]
        pieces.append(VARIABLE if token == SLOT else token.replace(SLOT, VARIABLE))
        cursor = end
    pieces.append(shape.shape[cursor:])
    return _WHITESPACE.sub(" ", "".join(pieces)).strip()


def _pieces(shape: _Shape, start: int, end: int, slots: Sequence[int]) -> tuple[int | str, ...]:
    """Literal text between `start` and `end` of the shape, its masked spans referenced by index."""
    text = shape.shape[start:end]
    pieces: list[int | str] = []
    slot_iter = iter(slots)
    for index, part in enumerate(text.split(SLOT)):
        if index:
            pieces.append(next(slot_iter))
        if part:
            pieces.append(part)
    return tuple(pieces)


def _recipe(group: _Group, member: _Member) -> tuple[Recipe, bool]:
    shape = member.shape
    params: list[tuple[int | str, ...]] = []
    identity = True
    for position, (first, last) in enumerate(member.spans):
        token = shape.tokens[first]
        if first == last and token.text == group.pattern[position] and not token.collapsed:
            params.extend((slot,) for slot in token.slots)
            continue
        identity = False
        if first == last and token.text == group.pattern[position]:
            # A collapsed run `pre<*>post pre<*>post ...` shown as `pre<*>post`: the parameter runs from the
            # first masked span to the last, so substituting it gives the line back.
            text = shape.shape[token.start : token.end]
            offset = token.start
            params.append(
                _pieces(shape, offset + text.index(SLOT), offset + text.rindex(SLOT) + 1, token.slots)
            )
        else:
            slots = [slot for t in shape.tokens[first : last + 1] for slot in t.slots]
            params.append(_pieces(shape, token.start, shape.tokens[last].end, slots))
    return tuple(params), identity


def _cluster(shapes: list[_Shape], settings: MinerSettings) -> list[ShapeTemplate]:
    """The template of each shape, in the order given."""
    by_pattern: dict[tuple[str, ...], list[_Shape]] = defaultdict(list)
    for shape in sorted(shapes, key=lambda s: s.shape):
        by_pattern[tuple(t.text for t in shape.tokens)].append(shape)
    by_length: dict[int, list[_Group]] = defaultdict(list)
    for pattern, members in by_pattern.items():
        by_length[len(pattern)].append(_group_of_shapes(pattern, members))

    groups: list[_Group] = []
    for length in sorted(by_length):
        same_length = sorted(by_length[length], key=lambda g: (-g.lines, g.pattern))
        if length > 0 and len(same_length) > 1:
            same_length = _merge_same_length(same_length, settings)
        groups.extend(same_length)
    groups = _absorb_variable_length(groups, settings)

    result: dict[int, ShapeTemplate] = {}
    for group in groups:
        template = _render(group)
        for member in group.members:
            recipe, identity = _recipe(group, member)
            result[id(member.shape)] = ShapeTemplate(member.shape.shape, template, recipe, identity)
    return [result[id(shape)] for shape in shapes]


def cluster_shapes(
    shape_table: pl.DataFrame, settings: MinerSettings = DEFAULT_SETTINGS, *, known_variables: bool = False
) -> dict[str, ShapeTemplate]:
    """Turn distinct shapes into templates, keyed by shape.

    `shape_table` has `shape` and `lines`, and `slot_distinct` / `slot_pathlike` (per masked span) unless
    `known_variables`: then the slots are variables already established (templates, not lines) and each
    counts as distinct on every line.
    """
    shapes: list[_Shape] = []
    for row in shape_table.iter_rows(named=True):
        slot_count = row["shape"].count(SLOT)
        if known_variables:
            distinct, pathlike = [row["lines"]] * slot_count, [False] * slot_count
        else:
            distinct, pathlike = list(row["slot_distinct"]), list(row["slot_pathlike"])
            if len(distinct) != slot_count:  # no usable sample: count each span once
                distinct, pathlike = [1] * slot_count, [False] * slot_count
        shapes.append(_Shape(row["shape"], row["lines"], tokenize_shape(row["shape"]), distinct, pathlike))
    return {shape.shape: template for shape, template in zip(shapes, _cluster(shapes, settings), strict=True)}


def generalize_templates(
    templates: Sequence[str], line_counts: Sequence[int], settings: MinerSettings = DEFAULT_SETTINGS
) -> dict[str, str]:
    """Run the merging steps over templates instead of lines (the registry uses this across partitions).

    Returns, for each template that merged with others, the more general template it belongs to now;
    templates that stayed on their own are left out.
    """
    table = (
        pl.DataFrame(
            {"shape": [t.replace(VARIABLE, SLOT) for t in templates], "lines": list(line_counts)},
            schema={"shape": pl.String, "lines": pl.Int64},
        )
        .group_by("shape")
        .agg(pl.col("lines").sum())
        .sort("shape")
    )
    clustered = cluster_shapes(table, settings, known_variables=True)
    members: dict[str, list[str]] = defaultdict(list)
    for template in templates:
        members[clustered[template.replace(VARIABLE, SLOT)].template].append(template)
    return {
        template: general
        for general, group in members.items()
        if len(set(group)) > 1
        for template in group
        if template != general
    }


# ---------------------------------------------------------------------------------------------------
# From original shapes to reduced shapes and back


def _reduced_shape(shape: str, positions: Sequence[int]) -> str:
    """The representative's text with its marked word tokens replaced by slots (separators kept)."""
    if not positions:
        return shape
    matches = list(_TOKEN_RE.finditer(shape))
    pieces: list[str] = []
    cursor = 0
    for position in positions:
        pieces += [shape[cursor : matches[position].start()], SLOT]
        cursor = matches[position].end()
    pieces.append(shape[cursor:])
    return "".join(pieces)


@dataclass(frozen=True)
class _ParamRecipe:
    """How the parameters of one original shape are built: per parameter its pieces (`int`: that masked
    span of the line, `None`: the next literal) and the literals (template text, replaced words)."""

    structure: tuple[tuple[int | None, ...], ...]
    literals: tuple[str, ...]


def _per_code_templates(
    reduced: pl.DataFrame, members: pl.DataFrame, settings: MinerSettings, *, with_recipes: bool = True
) -> tuple[list[str], np.ndarray, dict[int, _ParamRecipe]]:
    """Cluster the reduced shapes, then give every original shape its template and recipe: a reduced
    recipe refers to reduced slots; for an original shape the slots that were words become its words."""
    # Past a size, shapes that stand alone (one line, no partner in the vectorized pass, no repeated
    # values to collapse) keep their own shape as template, rendered in polars: free text with a new
    # shape on every line must not turn into a Python loop over every line.
    alone = pl.Series([False] * reduced.height, dtype=pl.Boolean)
    if reduced.height > _MAX_CLUSTERED_SHAPES:
        alone = reduced.select(
            pl.col("alone") & ~pl.col("shape").str.contains(f"{SLOT}\\S*\\s+\\S*{SLOT}")
        ).to_series()
    rendered = reduced.select(
        pl.col("shape")
        .str.replace_all(SLOT, VARIABLE, literal=True)
        .str.replace_all(r"\s+", " ")
        .str.strip_chars()
    ).to_series()
    shapes: list[_Shape] = []
    clustered_rows: list[int] = []
    inserted_of: list[list[int]] = []
    rows = reduced.select(
        "shape", "positions", "lines", "slot_distinct", "slot_pathlike", "inserted"
    ).iter_rows()
    for number, (is_alone, (shape, positions, lines, distinct, pathlike, inserted)) in enumerate(
        zip(alone, rows, strict=True)
    ):
        inserted_of.append(list(inserted))
        if is_alone:
            continue
        text = _reduced_shape(shape, positions)
        slot_count = text.count(SLOT)
        if len(distinct) != slot_count:  # no usable sample: count each span once
            distinct, pathlike = [1] * slot_count, [False] * slot_count
        distinct = [min(lines, max(int(d), 1)) for d in distinct]
        shapes.append(_Shape(text, lines, tokenize_shape(text), distinct, list(pathlike)))
        clustered_rows.append(number)
    templates: list[ShapeTemplate] = [
        ShapeTemplate(shape, text, (), True) for shape, text in zip(reduced["shape"], rendered, strict=True)
    ]
    for number, template in zip(clustered_rows, _cluster(shapes, settings), strict=True):
        templates[number] = template

    # Per reduced shape: the recipe structure in the original shapes' slot numbering, and where each
    # literal comes from: (True, text) for template text, (False, k) for the k-th replaced word.
    plans: list[tuple[tuple[tuple[int | None, ...], ...] | None, tuple[tuple[bool, int | str], ...]]] = []
    for template, inserted in zip(templates, inserted_of, strict=True):
        if template.identity and not inserted:
            plans.append((None, ()))
            continue
        word_number = {slot: k for k, slot in enumerate(inserted)}
        others = [i for i in range(template.shape.count(SLOT)) if i not in word_number]
        original_of = {slot: k for k, slot in enumerate(others)}
        structure: list[tuple[int | None, ...]] = []
        sources: list[tuple[bool, int | str]] = []
        for param in template.recipe:
            pieces: list[int | None] = []
            for piece in param:
                if isinstance(piece, str):
                    pieces.append(None)
                    sources.append((True, piece))
                elif piece in word_number:
                    pieces.append(None)
                    sources.append((False, word_number[piece]))
                else:
                    pieces.append(original_of[piece])
            structure.append(tuple(pieces))
        plans.append((tuple(structure), tuple(sources)))

    # The template of every original shape, by array lookup through its reduced shape.
    member_codes = members["code"].to_numpy()
    reduced_of_code = np.zeros(int(member_codes.max()) + 1 if len(member_codes) else 0, dtype=np.int64)
    reduced_of_code[member_codes] = members["reduced"].to_numpy()
    texts = [template.template for template in templates]
    if not with_recipes:
        return texts, reduced_of_code, {}
    recipes: dict[int, _ParamRecipe] = {}
    needs_recipe = [number for number, (structure, _) in enumerate(plans) if structure is not None]
    for code, number, words in members.filter(pl.col("reduced").is_in(needs_recipe)).iter_rows():
        structure, sources = plans[number]
        literals = tuple(value if fixed else words[value] for fixed, value in sources)
        recipes[code] = _ParamRecipe(structure, literals)
    return texts, reduced_of_code, recipes


# ---------------------------------------------------------------------------------------------------
# Public entry point


def mine_templates(
    messages: pl.Series, settings: MinerSettings = DEFAULT_SETTINGS, *, with_params: bool = True
) -> pl.DataFrame:
    """Mine the templates of one partition of log messages (the `Content` part of each line).

    Returns one row per message, in input order, with `template_id` (content-addressed, see
    `template_id_of`), `template` (variables as `<*>`) and `params` (list of strings: the values of the
    `<*>` in order; substituting them into the template gives the message back, up to whitespace).
    A null message is mined as the empty message. `with_params=False` leaves out `params` and the regex
    pass that extracts them, for callers that only need the grouping.
    """
    masked = mask_messages(messages, with_masked=with_params)
    # A private category mapping per call: codes index this partition's distinct shapes only, and the
    # mapping goes away with the frame instead of growing a process-wide one partition after partition.
    categorical = masked["shape"].cast(pl.Categorical(pl.Categories.random()))
    codes = categorical.to_physical()
    spans = masked["masked"] if with_params else None
    table = _shape_table(codes, categorical.cat.get_categories(), messages, spans, settings)
    reduced, members = _reduce_shapes(table, settings)
    texts, reduced_of_code, recipes = _per_code_templates(
        reduced, members, settings, with_recipes=with_params
    )
    return _assign(codes, spans, texts, reduced_of_code, recipes)


def _assign(
    codes: pl.Series,
    masked: pl.Series | None,
    texts: list[str],
    reduced_of_code: np.ndarray,
    recipes: dict[int, _ParamRecipe],
) -> pl.DataFrame:
    """Per line (by its shape code) the template id, template and parameters, in input order."""
    template_texts = sorted(set(texts))
    template_index = {text: i for i, text in enumerate(template_texts)}
    index_of_reduced = np.array([template_index[text] for text in texts], dtype=np.uint32)
    by_code = pl.Series(index_of_reduced[reduced_of_code] if len(texts) else [], dtype=pl.UInt32)
    line_template = by_code.gather(codes)
    templates = pl.Series(template_texts, dtype=pl.String)
    ids = pl.Series([template_id_of(text) for text in template_texts], dtype=pl.String)
    result = pl.DataFrame(
        {"template_id": ids.gather(line_template), "template": templates.gather(line_template)}
    )
    if masked is None:
        return result
    params = _params_with_recipes(codes, masked, len(reduced_of_code), recipes) if recipes else masked
    return result.with_columns(params.alias("params"))


def _params_with_recipes(
    codes: pl.Series, masked: pl.Series, size: int, recipes: dict[int, _ParamRecipe]
) -> pl.Series:
    """Parameters of every line: the masked spans as they are, or for a shape with a recipe its
    parameters built per recipe structure (shapes whose recipes differ only in literal text, one per user
    name say, share one evaluation).

    Everything works on the flat values behind the list column: each recipe parameter is a gather from
    the flat spans (and literals), and the output lists are one gather from a pool of all values, laid out
    by offsets. Gathering or merging list columns line by line costs several times more.
    """
    structures: dict[tuple, list[int]] = defaultdict(list)
    for code, recipe in recipes.items():
        structures[recipe.structure].append(code)
    structure_of_code = np.zeros(size, dtype=np.int64)  # 0: plain shape, k: the k-th recipe structure
    for number, structure_codes in enumerate(structures.values(), start=1):
        structure_of_code[structure_codes] = number
    code_array = codes.to_numpy().astype(np.int64)
    structure_of_line = structure_of_code[code_array]
    span_counts = masked.list.len().to_numpy().astype(np.int64)
    span_starts = np.cumsum(span_counts) - span_counts
    # The flat spans and one null after them, for a piece whose span a line does not have.
    flat = pl.concat(
        [masked.explode(empty_as_null=False, keep_nulls=False), pl.Series([None], dtype=pl.String)],
        rechunk=True,  # a gather from several chunks is ten times slower
    )
    missing = len(flat) - 1

    recipe_lines = np.flatnonzero(structure_of_line)
    recipe_lines = recipe_lines[np.argsort(structure_of_line[recipe_lines], kind="stable")]
    heights = np.bincount(structure_of_line[recipe_lines], minlength=len(structures) + 1)
    widths = np.array([0, *(len(structure) for structure in structures)], dtype=np.int64)
    rank = np.zeros(len(code_array), dtype=np.int64)  # a recipe line's row within its structure
    bases = np.zeros(len(structures) + 1, dtype=np.int64)  # where a structure's parameters start in the pool
    pool: list[pl.Series] = [flat]
    pooled = len(flat)
    start = 0
    for number, (structure, structure_codes) in enumerate(structures.items(), start=1):
        rows = recipe_lines[start : start + heights[number]]
        start += heights[number]
        rank[rows] = np.arange(len(rows))
        bases[number] = pooled
        params = _evaluate_structure(
            structure,
            [recipes[code].literals for code in structure_codes],
            structure_codes,
            code_array[rows],
            span_starts[rows],
            span_counts[rows],
            flat,
            missing,
        )
        pool += params
        pooled += len(rows) * len(params)

    out_counts = np.where(structure_of_line > 0, widths[structure_of_line], span_counts)
    offsets = np.zeros(len(code_array) + 1, dtype=np.int64)
    np.cumsum(out_counts, out=offsets[1:])
    line_of = np.repeat(np.arange(len(code_array), dtype=np.int64), out_counts)
    within = np.arange(offsets[-1], dtype=np.int64) - offsets[line_of]
    structure_at = structure_of_line[line_of]
    index = np.where(
        structure_at > 0,
        bases[structure_at] + within * heights[structure_at] + rank[line_of],
        span_starts[line_of] + within,
    )
    values = pl.concat(pool, rechunk=True).gather(index).to_arrow(compat_level=pl.CompatLevel.newest())
    # Offsets through a buffer: `pa.array(numpy)` pays a quarter of a second on its first call.
    offsets_array = pa.Array.from_buffers(pa.int64(), len(offsets), [None, pa.py_buffer(offsets)])
    return pl.Series(pa.LargeListArray.from_arrays(offsets_array, values), dtype=masked.dtype)


def _evaluate_structure(
    structure: tuple[tuple[int | None, ...], ...],
    literal_rows: list[tuple[str, ...]],
    structure_codes: list[int],
    line_codes: np.ndarray,
    span_starts: np.ndarray,
    span_counts: np.ndarray,
    flat: pl.Series,
    missing: int,
) -> list[pl.Series]:
    """The parameters of the lines of one recipe structure, one string column per parameter: a span
    piece is a gather from the flat spans (null where the line has no such span), a literal piece a gather
    from the literals of each line's shape, and a parameter of several pieces their concatenation."""
    row_of_code = np.zeros(int(max(structure_codes)) + 1, dtype=np.int64)
    row_of_code[structure_codes] = np.arange(len(structure_codes))
    literal_row = pl.Series(row_of_code[line_codes])
    params: list[pl.Series] = []
    literal = 0
    for pieces in structure:
        parts: list[pl.Series] = []
        for piece in pieces:
            if piece is None:
                values = pl.Series([row[literal] for row in literal_rows], dtype=pl.String)
                parts.append(values.gather(literal_row))
                literal += 1
            else:
                parts.append(flat.gather(np.where(piece < span_counts, span_starts + piece, missing)))
        if len(parts) > 1:
            joined = pl.DataFrame({f"_{i}": part for i, part in enumerate(parts)})
            params.append(joined.select(pl.concat_str(pl.all())).to_series())
        else:
            params.append(parts[0])
    return params


# ---------------------------------------------------------------------------------------------------
# Plain-text log files


class LogFileError(ValueError):
    """A log file that cannot be read; the message names the file and what to do."""


def read_log_lines(path: str | Path) -> pl.Series:
    """The lines of a plain-text log file (no line ends). Bytes that are not UTF-8 are replaced rather
    than failing the whole file."""
    path = Path(path)
    if not path.is_file():
        raise LogFileError(
            f"log file {path} does not exist or is not a file; pass the path of a plain-text log"
        )
    try:
        return pl.read_lines(path, name="line")["line"].str.strip_chars_end("\r")
    except (pl.exceptions.ComputeError, UnicodeDecodeError):
        text = path.read_bytes().decode("utf-8", errors="replace")
        return pl.Series("line", text.splitlines(), dtype=pl.String)


def mine_log(
    lines: pl.Series,
    log_format: str | None,
    settings: MinerSettings = DEFAULT_SETTINGS,
    *,
    with_params: bool = True,
) -> pl.DataFrame:
    """Mine the templates of whole log lines: `log_format` (logparser style, `<Date> <Time> <Level>
    <Component>: <Content>`) splits the header fields off, and `Content` is mined. Lines that do not
    follow the format (`matched` false), or every line when `log_format` is None, are mined whole.

    Returns `LineId` (from 1), the header fields, `Content`, `matched`, `template_id`, `template` and,
    with `with_params`, `params`.
    """
    lines = lines.cast(pl.String).fill_null("")
    if log_format:
        parts = split_log_lines(lines, log_format).with_columns(
            pl.coalesce(pl.col("Content"), lines).alias("Content")
        )
    else:
        parts = pl.DataFrame({"Content": lines, "matched": pl.repeat(False, len(lines), eager=True)})
    mined = mine_templates(parts["Content"], settings, with_params=with_params)
    return pl.concat([parts, mined], how="horizontal").with_row_index("LineId", offset=1)
