"""The shared contract check names the frame, the missing columns and the producing table."""

import polars as pl
import pytest

from qa_assets.lib.artifacts._common import ArtifactInputError, require_frame as artifacts_require
from qa_assets.lib.frames import require_frame


def test_missing_columns_are_named_with_the_producer():
    with pytest.raises(ValueError, match=r"defects lacks column\(s\) severity: pass the defects.defects frame"):
        require_frame(pl.DataFrame({"defect_id": ["d"]}), "defects", ["defect_id", "severity"], "defects.defects")


def test_stage_error_classes_are_kept():
    with pytest.raises(ArtifactInputError, match="is required"):
        artifacts_require(None, "spans", ["trace_id"], "raw.spans")
    frame = pl.DataFrame({"trace_id": ["a"]})
    assert require_frame(frame, "spans", ["trace_id"], "raw.spans") is frame
