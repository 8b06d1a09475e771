"""`qa-assets feedback`: verdicts become feedback files the landing ingestion reads; --list shows the review queue."""

from __future__ import annotations

import json
from datetime import datetime

import polars as pl
import pytest

from qa_assets.cli import main
from qa_assets.lib import governance
from qa_assets.lib import warehouse as wh
from qa_assets.lib.artifacts import delivery
from qa_assets.lib.defects.grouping import DEFECTS
from qa_assets.lib.ingest import landing as ingest
from qa_assets.lib.ingest.tables import conform


@pytest.fixture
def landing(tmp_path):
    folder = tmp_path / "landing"
    folder.mkdir()
    return folder


def _warehouse(tmp_path):
    path = tmp_path / "wh.duckdb"
    defects = conform(pl.DataFrame({
        "defect_id": ["d-s1", "d-ok"], "service": ["checkout", "cart"], "defect_type": ["availability", "error_spike"],
        "severity": ["S1", "S3"], "confidence": [0.91, 0.42], "status": ["open", "open"],
        "first_seen": [datetime(2024, 3, 5, 10)] * 2, "last_seen": [datetime(2024, 3, 5, 11)] * 2}), DEFECTS)
    decisions = governance.decision_rows(
        defects.select(pl.col("defect_id").alias("subject_id"), pl.col("defect_type").alias("outcome"), "confidence",
                       pl.when(pl.col("confidence") < 0.6).then(pl.lit("needs_review")).otherwise(pl.lit("applied"))
                       .alias("status")),
        stage="defects", decision="classify_defect", subject_type="defect", input_partitions=["2024-03-05-10:00"],
        decided_at=datetime(2024, 3, 5, 11, 5))
    outbox = pl.DataFrame([{"ticket_id": "github:d-s1", "defect_id": "d-s1", "tracker": "github",
                            "status": "held_for_review", "attempts": 0,
                            "review_reason": "severity S1 is filed only after a person approves it"}],
                          schema=delivery.OUTBOX)
    held = delivery.ticket_decisions([{"defect_id": "d-s1", "tracker": "github", "action": "held",
                                       "payload_sha256": "ab" * 32, "review_reason": outbox["review_reason"][0]}],
                                     defects)
    with wh.connect(path) as con:
        wh.ensure_table(con, "defects.defects", DEFECTS)
        wh.insert(con, "defects.defects", defects)
        wh.ensure_table(con, "governance.decision_log", governance.DECISION_LOG)
        wh.insert(con, "governance.decision_log", pl.concat([decisions, held]))
        delivery.save_outbox(con, outbox)
    return path


def _written(landing) -> list:
    return sorted((landing / "feedback").iterdir())


def test_approval_is_written_atomically_in_the_documented_format_and_ingested(tmp_path, landing, capsys):
    path = _warehouse(tmp_path)
    code = main(["feedback", "d-s1", "--approve", "--author", "jane", "--note", "checkout really was down",
                 "--landing", str(landing), "--warehouse", str(path)])
    out = capsys.readouterr().out
    assert code == 0, out
    files = _written(landing)
    assert len(files) == 1 and files[0].suffix == ".jsonl"  # no temporary file left beside it
    assert str(files[0]) in out and "raw.feedback" in out and "qa/ticket_delivery" in out
    parsed = governance.parse_feedback(files[0].read_bytes(), str(files[0]))
    assert parsed.quarantine.height == 0 and parsed.records_read == 1
    record = parsed.accepted.row(0, named=True)
    assert (record["defect_id"], record["decision"], record["author"]) == ("d-s1", "approve", "jane")
    assert record["comment"] == "checkout really was down"

    with wh.connect(path) as con:  # the landing ingestion picks the file up like any other feedback
        ingest.ingest_landing(con, landing, key=b"k" * 32, settle_seconds=0)
        stored = wh.read_table(con, "raw.feedback")
    assert stored["defect_id"].to_list() == ["d-s1"] and stored["decision"].to_list() == ["approve"]


def test_corrections_make_a_correct_record(tmp_path, landing, capsys):
    code = main(["feedback", "d-ok", "--type", "Dependency_Failure", "--severity", "s2", "--root-cause-service",
                 "payments", "--root-cause-change", "deploy-42", "--approve", "--author", "omar",
                 "--at", "2024-03-05T12:00:00+01:00", "--landing", str(landing), "--no-check"])
    assert code == 0
    [file] = _written(landing)
    record = governance.parse_feedback(file.read_bytes(), file.name).accepted.row(0, named=True)
    assert record["decision"] == "correct"
    assert (record["defect_type"], record["severity"]) == ("dependency_failure", "S2")
    assert (record["root_cause_service"], record["root_cause_change_id"]) == ("payments", "deploy-42")
    assert record["at"] == datetime(2024, 3, 5, 11, 0)
    assert file.name.startswith("20240305T110000Z-d_ok-")


@pytest.mark.parametrize("argv, message", [
    (["d1", "--author", "x"], "say what you decided"),
    (["d1", "--reject", "--severity", "S1", "--author", "x"], "--reject cannot carry corrections"),
    (["d1", "--approve", "--author", "x", "--at", "yesterday"], "not an ISO 8601 time"),
    (["--approve", "--author", "x"], "name the defect"),
])
def test_invalid_verdicts_are_refused_before_anything_is_written(landing, capsys, argv, message):
    code = main(["feedback", *argv, "--landing", str(landing), "--no-check"])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (landing / "feedback").exists()


def test_unknown_type_or_severity_is_an_argument_error(landing, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["feedback", "d1", "--severity", "S5", "--author", "x", "--landing", str(landing)])
    assert exit_info.value.code == 2
    assert "invalid choice: 'S5'" in capsys.readouterr().err


def test_unknown_defect_is_refused_unless_unchecked(tmp_path, landing, capsys):
    path = _warehouse(tmp_path)
    argv = ["feedback", "d-typo", "--reject", "--author", "x", "--landing", str(landing), "--warehouse", str(path)]
    assert main(argv) == 2
    assert "no defect 'd-typo'" in capsys.readouterr().err
    assert main([*argv, "--no-check"]) == 0
    assert len(_written(landing)) == 1


def test_missing_landing_directory_is_a_clear_error(tmp_path, capsys):
    code = main(["feedback", "d1", "--approve", "--author", "x", "--landing", str(tmp_path / "nope"), "--no-check"])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err


def test_list_shows_the_review_queue_with_held_tickets(tmp_path, capsys):
    path = _warehouse(tmp_path)
    assert main(["feedback", "--list", "--warehouse", str(path)]) == 0
    out = capsys.readouterr().out
    assert "2 decision(s) wait for review" in out
    lines = out.splitlines()
    assert any("classify_defect" in line and "d-ok" in line for line in lines)
    assert any("ticket" in line and "d-s1" in line and "github" in line for line in lines)
    assert not any("classify_defect" in line and "d-s1" in line for line in lines)  # confident: not queued
    assert "qa-assets feedback DEFECT_ID --approve" in out


def test_list_on_a_warehouse_without_decisions(tmp_path, capsys):
    path = tmp_path / "empty.duckdb"
    with wh.connect(path):
        pass
    assert main(["feedback", "--list", "--warehouse", str(path)]) == 0
    assert "no decisions yet" in capsys.readouterr().out
