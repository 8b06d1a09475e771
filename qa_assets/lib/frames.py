"""Input checks shared by the stage libraries: a frame handed to a stage must carry its contract columns."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl


def require_frame(frame: Any, name: str, columns: Sequence[str], producer: str,
                  error: type[Exception] = ValueError) -> pl.DataFrame:
    """`frame` itself when it is a polars frame with `columns`; else `error` naming the frame, what is missing
    and which table (`producer`) it should come from."""
    if frame is None:
        raise error(f"{name} is required: pass the {producer} frame (an empty frame is fine)")
    if not isinstance(frame, pl.DataFrame):
        raise error(f"{name} must be a polars DataFrame ({producer}), got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise error(f"{name} lacks column(s) {', '.join(missing)}: pass the {producer} frame with its contract "
                    f"columns (it has {', '.join(frame.columns) or 'none'})")
    return frame
