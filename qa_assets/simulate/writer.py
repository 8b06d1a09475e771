"""Append-only writers for the landing directory, one file per signal (or pod) and UTC hour.

Files stay open only for the hour being written, so memory and open handles stay bounded however long the
simulated window is. Gzip output is byte-for-byte reproducible (no timestamp or name in the header).
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import IO


class HourlyFiles:
    def __init__(self, root: Path, compress: bool = False) -> None:
        self.root = root
        self.compress = compress
        self._open: dict[Path, tuple[IO[bytes], IO[bytes] | None]] = {}
        self._hour: str | None = None
        self.files: dict[Path, int] = {}  # path -> lines written

    def write(self, hour: str, relative: str, lines: list[str], compress: bool | None = None) -> None:
        if not lines:
            return
        if hour != self._hour:
            self.close()
            self._hour = hour
        use_gzip = self.compress if compress is None else compress
        path = self.root / (relative + (".gz" if use_gzip else ""))
        handle = self._open.get(path)
        if handle is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            raw = path.open("ab")
            if use_gzip:
                # a reproducible gzip member per hour file: no name, mtime 0
                wrapped: IO[bytes] = gzip.GzipFile(
                    filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=3
                )
                handle = (wrapped, raw)
            else:
                handle = (raw, None)
            self._open[path] = handle
        payload = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
        handle[0].write(payload.encode("utf-8"))
        self.files[path] = self.files.get(path, 0) + payload.count("\n")

    def close(self) -> None:
        for stream, raw in self._open.values():
            stream.close()
            if raw is not None:
                raw.close()
        self._open.clear()
