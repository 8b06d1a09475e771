"""Reading landing files as chunks of complete lines, with line numbers and byte offsets.

Handles gzip (also multi-member), files still being written (an unterminated last line waits until the
file has settled), truncated gzip streams, non-UTF-8 bytes (those lines are reported, the rest kept),
and resuming a grown file where the previous ingestion stopped. Memory stays bounded by `chunk_bytes`.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

CHUNK_BYTES = 32 * 1024 * 1024


@dataclass
class BadLine:
    line: int
    offset: int
    reason: str
    excerpt: str


@dataclass
class LineChunk:
    lines: pl.DataFrame  # line (str), source_line (int, from 1), source_offset (byte offset, decompressed)
    bad_lines: list[BadLine] = field(default_factory=list)


@dataclass
class ReadState:
    """Where reading stopped: the next ingestion of a grown file resumes from here."""

    bytes_consumed: int = 0  # decompressed bytes covered by complete lines
    lines_consumed: int = 0
    truncated: str | None = None  # why the stream ended early (a truncated gzip), if it did
    pending_tail: bool = False  # an unterminated last line was left for later


def _decompressed(handle, block: int, state: ReadState) -> Iterator[bytes]:
    """Decompress gzip members one after another, yielding what decodes even when the stream is cut."""
    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    member_open = False  # input was fed to the current member and its end has not been seen
    while compressed := handle.read(block):
        while compressed:
            try:
                data = decompressor.decompress(compressed)
            except zlib.error as exc:
                state.truncated = f"gzip stream is corrupt ({exc})"
                return
            member_open = True
            if data:
                yield data
            if decompressor.eof:  # a member ended; another may follow (multi-member gzip)
                compressed = decompressor.unused_data
                decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
                member_open = False
            else:
                compressed = b""
    if member_open:
        state.truncated = "gzip stream ends before its end-of-stream marker (the file is truncated)"


def _raw_blocks(path: Path, skip: int, block: int, state: ReadState) -> Iterator[bytes]:
    """Decompressed bytes from `skip` on; records a truncated gzip stream in `state`."""
    with open(path, "rb") as handle:
        if handle.read(2) == b"\x1f\x8b":
            handle.seek(0)
            stream = _decompressed(handle, block, state)
        else:
            handle.seek(skip)
            skip = 0
            stream = iter(lambda: handle.read(block), b"")
        for data in stream:
            if skip:
                if len(data) <= skip:
                    skip -= len(data)
                    continue
                data, skip = data[skip:], 0
            yield data


def _split(data: bytes, first_line: int, first_offset: int) -> LineChunk:
    """Split complete lines (data ends at a line end, or is the file's final line)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return _split_with_invalid_bytes(data, first_line, first_offset)
    if text.endswith("\n"):
        text = text[:-1]
    frame = (
        pl.DataFrame({"line": [text]})
        .select(pl.col("line").str.split("\n"))
        .explode("line")
        .with_row_index("index")
        .select(
            "line",
            (pl.col("index").cast(pl.Int64) + first_line).alias("source_line"),
            (
                pl.col("line").str.len_bytes().cast(pl.Int64).cum_sum().shift(1, fill_value=0)
                + pl.col("index").cast(pl.Int64)
                + first_offset
            ).alias("source_offset"),
        )
    )
    return LineChunk(lines=frame)


def _split_with_invalid_bytes(data: bytes, first_line: int, first_offset: int) -> LineChunk:
    """Slow path, only for chunks holding invalid UTF-8: report those lines, keep the others."""
    parts = data.split(b"\n")
    if data.endswith(b"\n"):
        parts.pop()
    lines: list[str] = []
    numbers: list[int] = []
    offsets: list[int] = []
    bad: list[BadLine] = []
    offset = first_offset
    for index, part in enumerate(parts):
        try:
            lines.append(part.decode("utf-8"))
            numbers.append(first_line + index)
            offsets.append(offset)
        except UnicodeDecodeError as exc:
            bad.append(
                BadLine(
                    line=first_line + index,
                    offset=offset,
                    reason=f"line is not valid UTF-8 (byte {exc.start} of the line is "
                    f"{part[exc.start:exc.start + 1]!r}); re-encode the producer's output as UTF-8",
                    excerpt=part[:200].decode("utf-8", "replace"),
                )
            )
        offset += len(part) + 1
    frame = pl.DataFrame(
        {"line": lines, "source_line": numbers, "source_offset": offsets},
        schema={"line": pl.String, "source_line": pl.Int64, "source_offset": pl.Int64},
    )
    return LineChunk(lines=frame, bad_lines=bad)


def iter_line_chunks(
    path: Path,
    state: ReadState,
    *,
    final: bool,
    chunk_bytes: int = CHUNK_BYTES,
) -> Iterator[LineChunk]:
    """Yield complete lines after `state.bytes_consumed`, updating `state` as they are handed out.

    `final` says the file has settled: its unterminated last line is a real record and is read too.
    Otherwise that line stays for the next ingestion (the producer may still be writing it).
    """
    state.pending_tail = False
    carry = b""
    next_line = state.lines_consumed + 1
    next_offset = state.bytes_consumed
    for block in _raw_blocks(path, state.bytes_consumed, chunk_bytes, state):
        data = carry + block
        cut = data.rfind(b"\n")
        if cut < 0:
            carry = data
            continue
        complete, carry = data[: cut + 1], data[cut + 1 :]
        chunk = _split(complete, next_line, next_offset)
        n_lines = complete.count(b"\n")
        next_line += n_lines
        next_offset += len(complete)
        state.lines_consumed += n_lines
        state.bytes_consumed += len(complete)
        yield chunk
    if carry:
        if final and state.truncated is None:
            chunk = _split(carry, next_line, next_offset)
            state.lines_consumed += 1
            state.bytes_consumed += len(carry)
            yield chunk
        else:
            state.pending_tail = True


def read_whole(path: Path, max_bytes: int = 256 * 1024 * 1024) -> tuple[bytes, str | None]:
    """Whole-file formats (XML, YAML, a single JSON document): the bytes, or a reason they can't be read."""
    state = ReadState()
    parts: list[bytes] = []
    size = 0
    for block in _raw_blocks(path, 0, CHUNK_BYTES, state):
        parts.append(block)
        size += len(block)
        if size > max_bytes:
            return b"", f"file is larger than {max_bytes} bytes after decompression; split it"
    return b"".join(parts), state.truncated
