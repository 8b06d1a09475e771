"""Human gate decisions and knowledge-base search from the command line."""

from __future__ import annotations

import polars as pl

from qa_assets.cli import main
from qa_assets.lib import warehouse as wh
from qa_assets.lib.artifacts.knowledge_base import KNOWLEDGE_BASE
from qa_assets.lib.artifacts.release_gate import RELEASE_READINESS
from qa_assets.lib.ingest.tables import conform


def _warehouse(tmp_path):
    path = tmp_path / "wh.duckdb"
    with wh.connect(path) as con:
        wh.ensure_table(con, "qa.release_readiness", RELEASE_READINESS)
        wh.insert(con, "qa.release_readiness", conform(pl.DataFrame(
            {"service": ["cart"], "version": ["1.2.0"], "decision": ["block"], "reasons": ["S1 defect blamed"]}),
            RELEASE_READINESS))
        wh.ensure_table(con, "qa.knowledge_base", KNOWLEDGE_BASE)
        wh.insert(con, "qa.knowledge_base", conform(pl.DataFrame(
            {"defect_id": ["d1"], "service": ["cart"], "defect_type": ["latency_regression"],
             "cause_service": ["cart-db"], "cause_kind": ["dependency_failure"], "resolution": ["index added"]}),
            KNOWLEDGE_BASE))
    return path


def test_override_records_the_decision_and_updates_the_gate(tmp_path, capsys):
    path = _warehouse(tmp_path)
    code = main(["gate", "override", "cart", "1.2.0", "--decision", "pass", "--reason", "hotfix accepted",
                 "--author", "qa-lead", "--warehouse", str(path)])
    assert code == 0
    with wh.connect(path, read_only=True) as con:
        assert con.execute("SELECT decision FROM qa.release_readiness").fetchone()[0] == "pass"
        row = con.execute("SELECT decision, outcome, status, rationale FROM governance.decision_log").fetchone()
    assert row[0] == "release_gate_override" and row[1] == "pass" and "qa-lead" in row[3]


def test_unknown_version_is_a_clear_error(tmp_path, capsys):
    path = _warehouse(tmp_path)
    assert main(["gate", "approve", "cart", "9.9", "--reason", "x", "--warehouse", str(path)]) == 2
    assert "no gate decision for cart 9.9" in capsys.readouterr().err


def test_knowledge_base_search_finds_every_word(tmp_path, capsys):
    path = _warehouse(tmp_path)
    assert main(["kb", "cart latency", "--warehouse", str(path)]) == 0
    assert "cart-db" in capsys.readouterr().out
    assert main(["kb", "cart checkout", "--warehouse", str(path)]) == 0
    assert "no match" in capsys.readouterr().out
