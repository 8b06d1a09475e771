"""Governance: model registry over MLflow (aliases, promotion, rollback), decision log, human feedback."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.ensemble import IsolationForest

from qa_assets.lib import governance, model_registry
from qa_assets.lib.governance import DECISION_LOG, FEEDBACK, apply_feedback, decision_rows, parse_feedback
from qa_assets.lib.ingest.tables import QUARANTINE
from qa_assets.lib.model_registry import ModelRegistryError, compare_for_promotion

# --------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An initialised MLflow SQLite file, created once (~3 s of schema migrations) and copied per test."""
    folder = tmp_path_factory.mktemp("mlflow-template")
    assert model_registry.list_models(f"sqlite:///{folder / 'mlflow.db'}").height == 0
    return folder / "mlflow.db"


@pytest.fixture
def store(tmp_path: Path, empty_store: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """This test's own store: a copy of the template under tmp_path. The working directory is an empty
    folder, so a stray ./mlflow.db or ./mlruns would show."""
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture(scope="module")
def windows() -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.normal(size=(300, 4))


@pytest.fixture(scope="module")
def forests(windows: np.ndarray) -> tuple[IsolationForest, IsolationForest]:
    old = IsolationForest(n_estimators=25, random_state=1).fit(windows)
    new = IsolationForest(n_estimators=25, random_state=2).fit(windows * 2.0 + 1.0)
    return old, new


def _register(store: str, name: str, model: object, f1: float, **extra) -> model_registry.ModelVersionInfo:
    return model_registry.log_and_register(
        name, model, params={"n_estimators": 25, "features": ["error_rate", "latency_p95_ms"]},
        metrics={"f1": f1}, feature_set_id="windows-v1",
        training_window=(datetime(2026, 11, 1), datetime(2026, 11, 2)), tracking_uri=store, **extra,
    )


@dataclass
class BaselineDetector:
    """A detector object like the pipeline's: per-signal baselines plus an IsolationForest."""

    baselines: dict[str, float]
    forest: IsolationForest
    history: list[str] = field(default_factory=list)

    def score(self, rows: np.ndarray) -> np.ndarray:
        return -self.forest.score_samples(rows)


# ---------------------------------------------------------------------------------- model registry


def test_first_version_is_champion_and_later_ones_challengers(store, forests, windows):
    old, new = forests
    first = _register(store, "window-detector", old, 0.80)
    second = _register(store, "window-detector", new, 0.90, input_example=windows[:3])
    assert (first.version, first.aliases) == ("1", ("champion",))
    assert (second.version, second.aliases) == ("2", ("challenger",))

    champion, info = model_registry.load_model("window-detector", tracking_uri=store)
    assert info.version == "1" and info.feature_set_id == "windows-v1"
    np.testing.assert_array_equal(champion.score_samples(windows), old.score_samples(windows))
    challenger, info = model_registry.load_model("window-detector", "challenger", tracking_uri=store)
    assert info.version == "2"
    np.testing.assert_array_equal(challenger.score_samples(windows), new.score_samples(windows))
    # Everything went into the given store: nothing in the working directory.
    assert list(Path.cwd().iterdir()) == []
    assert (Path(store.removeprefix("sqlite:///")).parent / "mlruns").is_dir()


def test_promote_then_rollback_gives_back_the_previous_champion(store, forests, windows):
    old, new = forests
    _register(store, "window-detector", old, 0.80)
    _register(store, "window-detector", new, 0.90)

    promoted = model_registry.promote("window-detector", tracking_uri=store)
    assert promoted.version == "2" and "champion" in promoted.aliases
    assert promoted.tags[model_registry.TAG_PREVIOUS_CHAMPION] == "1"
    model, info = model_registry.load_model("window-detector", tracking_uri=store)
    assert info.version == "2"
    np.testing.assert_array_equal(model.score_samples(windows), new.score_samples(windows))
    with pytest.raises(ModelRegistryError, match="no challenger"):  # the challenger became champion
        model_registry.promote("window-detector", tracking_uri=store)

    restored = model_registry.rollback("window-detector", tracking_uri=store)
    assert restored.version == "1"
    model, info = model_registry.load_model("window-detector", tracking_uri=store)
    assert info.version == "1"  # the next run scores exactly as before the promotion
    np.testing.assert_array_equal(model.predict(windows), old.predict(windows))
    np.testing.assert_array_equal(model.score_samples(windows), old.score_samples(windows))

    listed = model_registry.list_models(store)
    rolled_back = listed.filter(pl.col("version") == "2").row(0, named=True)
    assert rolled_back["aliases"] == []  # a plain `promote` cannot bring it back by accident
    with pytest.raises(ModelRegistryError, match="replaced no earlier champion"):
        model_registry.rollback("window-detector", tracking_uri=store)


def test_promote_a_named_version_and_unknown_versions(store, forests):
    old, new = forests
    _register(store, "window-detector", old, 0.80)
    _register(store, "window-detector", new, 0.90)
    _register(store, "window-detector", old, 0.70)  # the newest version is the challenger
    assert model_registry.get_version("window-detector", tracking_uri=store, alias="challenger").version == "3"
    assert model_registry.promote("window-detector", tracking_uri=store, version=2).version == "2"
    assert model_registry.get_version("window-detector", tracking_uri=store, alias="challenger").version == "3"
    with pytest.raises(ModelRegistryError, match="no version 9"):
        model_registry.promote("window-detector", tracking_uri=store, version="9")
    assert model_registry.rollback("window-detector", tracking_uri=store).version == "1"


def test_load_model_says_what_is_missing(store, forests):
    with pytest.raises(ModelRegistryError, match="no model 'window-detector' is registered"):
        model_registry.load_model("window-detector", tracking_uri=store)
    _register(store, "window-detector", forests[0], 0.8)
    with pytest.raises(ModelRegistryError, match="no version with alias 'challenger'.*versions: 1"):
        model_registry.load_model("window-detector", "challenger", tracking_uri=store)
    with pytest.raises(ModelRegistryError, match="not usable"):
        model_registry.load_model("bad name'; drop", tracking_uri=store)


def test_bad_metrics_are_refused_before_anything_is_logged(store, forests):
    with pytest.raises(ModelRegistryError, match="must be numbers.*'f1': 'high'"):
        _register(store, "window-detector", forests[0], "high")
    assert model_registry.list_models(store).height == 0
    with pytest.raises(ModelRegistryError, match="training_window 42 must be"):
        model_registry.log_and_register(
            "window-detector", forests[0], params={}, metrics={"f1": np.float32(0.5)}, feature_set_id=None,
            training_window=42, tracking_uri=store)
    assert model_registry.list_models(store).height == 0
    # NumPy numbers are numbers; the window may be an ISO 8601 interval string.
    info = model_registry.log_and_register(
        "window-detector", forests[0], params={}, metrics={"f1": np.float32(0.5)}, feature_set_id=None,
        training_window="2026-11-01/P1D", tracking_uri=store)
    assert info.aliases == ("champion",) and info.feature_set_id is None
    assert model_registry.run_metrics("window-detector", info.version, tracking_uri=store) == {"f1": 0.5}


def test_a_custom_detector_object_round_trips(store, forests, windows):
    detector = BaselineDetector({"error_rate": 0.01, "latency_p95_ms": 120.0}, forests[0], ["fit 2026-11-01"])
    info = _register(store, "baseline-detector", detector, 0.75)
    assert info.tags[model_registry.TAG_SERIALIZATION] == "cloudpickle"
    loaded, loaded_info = model_registry.load_model("baseline-detector", tracking_uri=store)
    assert isinstance(loaded, BaselineDetector) and loaded_info.version == info.version
    assert loaded.baselines == detector.baselines and loaded.history == detector.history
    np.testing.assert_array_equal(loaded.score(windows), detector.score(windows))


def test_list_models_shows_versions_aliases_and_metrics(store, forests):
    assert model_registry.list_models(store).columns == list(model_registry.LIST_COLUMNS)
    _register(store, "window-detector", forests[0], 0.8)
    _register(store, "window-detector", forests[1], 0.9)
    _register(store, "type-classifier", forests[1], 0.6)
    listed = model_registry.list_models(store)
    assert listed.select("name", "version", "aliases").rows() == [
        ("type-classifier", "1", ["champion"]),
        ("window-detector", "1", ["champion"]),
        ("window-detector", "2", ["challenger"]),
    ]
    assert [json.loads(m) for m in listed["metrics"]] == [{"f1": 0.6}, {"f1": 0.8}, {"f1": 0.9}]
    assert listed["feature_set_id"].to_list() == ["windows-v1"] * 3
    assert listed["training_window"][0] == "2026-11-01T00:00:00/2026-11-02T00:00:00"
    assert listed["serialization"].to_list() == ["skops"] * 3
    assert listed["created"].dtype == pl.Datetime("us")


@pytest.mark.parametrize(
    ("champion", "challenger", "higher", "tolerance", "ok", "words"),
    [
        ({"f1": 0.80}, {"f1": 0.85}, True, 0.0, True, "not worse"),
        ({"f1": 0.80}, {"f1": 0.78}, True, 0.0, False, "worse by 0.02"),
        ({"f1": 0.80}, {"f1": 0.78}, True, 0.05, True, "not worse"),
        ({"mae": 4.0}, {"mae": 5.0}, False, 0.5, False, "worse by 1"),
        ({"mae": 4.0}, {"mae": 3.0}, False, 0.0, True, "lower is better"),
        (None, {"f1": 0.5}, True, 0.0, True, "no champion"),
        ({"f1": 0.8}, {"precision": 0.9}, True, 0.0, False, "challenger has no finite 'f1'"),
        ({"f1": 0.8}, {"f1": float("nan")}, True, 0.0, False, "no finite"),
    ],
)
def test_compare_for_promotion(champion, challenger, higher, tolerance, ok, words):
    metric = next(iter(challenger)) if "mae" in challenger else "f1"
    passed, reason = compare_for_promotion(champion, challenger, metric, higher, tolerance)
    assert passed is ok
    assert words in reason


# ------------------------------------------------------------------------------------ decision log


def _classifications() -> pl.DataFrame:
    return pl.DataFrame({
        "subject_id": ["d-1", "d-2"],
        "outcome": ["latency_regression", "error_spike"],
        "confidence": [0.9, 0.55],
        "rationale": ["p95 tripled after deploy", "5xx burst"],
    })


def test_decision_rows_have_stable_ids_across_reruns():
    common = dict(stage="defects", decision="classify_defect", subject_type="defect",
                  model_name="type-classifier", model_version="3", feature_set_id="windows-v1",
                  input_row_counts={"signals.service_windows": 1440})
    first = decision_rows(_classifications(), input_partitions=["2026-11-02-10:00", "2026-11-02-09:00"],
                          decided_at=datetime(2026, 11, 2, 11), **common)
    rerun = decision_rows(_classifications(), input_partitions=["2026-11-02-09:00", "2026-11-02-10:00"],
                          decided_at=datetime(2026, 11, 3, 8), **common)
    assert first.schema == pl.Schema(DECISION_LOG)
    assert first["decision_id"].to_list() == rerun["decision_id"].to_list()
    assert first["decision_id"].n_unique() == 2
    assert first["input_partitions"][0].to_list() == ["2026-11-02-09:00", "2026-11-02-10:00"]
    assert json.loads(first["input_row_counts"][0]) == {"signals.service_windows": 1440}
    assert first["status"].to_list() == ["applied", "applied"]
    assert first["code_version"][0] == governance.code_version() != ""

    retrained = decision_rows(_classifications(), input_partitions=["2026-11-02-09:00", "2026-11-02-10:00"],
                              **{**common, "model_version": "4"})
    other_hour = decision_rows(_classifications(), input_partitions=["2026-11-02-11:00"], **common)
    assert set(retrained["decision_id"]).isdisjoint(first["decision_id"])
    assert set(other_hour["decision_id"]).isdisjoint(first["decision_id"])


def test_decision_rows_reject_bad_input():
    with pytest.raises(governance.GovernanceInputError, match="lack column.*outcome"):
        decision_rows(pl.DataFrame({"subject_id": ["d-1"]}), stage="defects", decision="classify_defect",
                      subject_type="defect")
    with pytest.raises(governance.GovernanceInputError, match="status"):
        decision_rows(_classifications(), stage="defects", decision="classify_defect", subject_type="defect",
                      status="done")
    with pytest.raises(governance.GovernanceInputError, match="confidence must be within 0-1"):
        decision_rows(_classifications().with_columns(pl.lit(1.5).alias("confidence")), stage="defects",
                      decision="classify_defect", subject_type="defect")


def test_code_version_names_the_package_and_never_fails(monkeypatch):
    from importlib.metadata import version

    package_version, _, sha = governance.code_version().partition("+g")
    assert package_version == version("qa-assets")
    if (Path(governance.__file__).parents[2] / ".git").exists():  # a checkout: the commit is named
        assert len(sha) == 12 and int(sha, 16) >= 0
    assert governance._git_sha(Path("/")) is None  # no checkout: no sha, no exception
    monkeypatch.setenv("QA_ASSETS_CODE_VERSION", "1.2.3+build7")
    governance.code_version.cache_clear()
    try:
        assert governance.code_version() == "1.2.3+build7"
    finally:
        monkeypatch.delenv("QA_ASSETS_CODE_VERSION")
        governance.code_version.cache_clear()


# ---------------------------------------------------------------------------------------- feedback

FEEDBACK_JSONL = b"""\
{"defect_id": "d-1", "decision": "correct", "severity": "s1", "root_cause_service": "inventory", "author": "jane", "comment": "all checkouts failed", "at": "2026-11-02T10:15:00Z"}
{"defect_id": "d-2", "decision": "reject", "author": "jane", "at": "2026-11-02T12:15:00+02:00"}
{"defect_id": "d-3", "decision": "approve", "author": "omar", "at": "2026-11-02T10:30:00"}
{"defect_id": "d-4", "decision": "correct", "author": "omar", "at": "2026-11-02T10:31:00Z"}
{"defect_id": "d-5", "decision": "approve", "severity": "S2", "author": "omar", "at": "2026-11-02T10:32:00Z"}
{"defect_id": "d-6", "decision": "correct", "severty": "S2", "author": "omar", "at": "2026-11-02T10:33:00Z"}
{"defect_id": "d-7", "decision": "correct", "severity": "S5", "author": "omar", "at": "2026-11-02T10:34:00Z"}
{"defect_id": "d-8", "decision": "maybe", "author": "omar", "at": "2026-11-02T10:35:00Z"}
{"defect_id": "d-9", "decision": "approve", "at": "2026-11-02T10:36:00Z"}
{"defect_id": "d-10", "decision": "approve", "author": "omar", "at": "yesterday"}
{"defect_id": "d-11", "decision": "correct", "defect_type": "slowness", "author": "omar", "at": "2026-11-02T10:37:00Z"}
{"defect_id": "d-1", "decision": "corr
{"defect_id": "d-2", "decision": "reject", "author": "jane", "at": "2026-11-02T12:15:00+02:00"}
"a bare string"
"""


def test_parse_feedback_accepts_good_records_and_quarantines_the_rest():
    result = parse_feedback(FEEDBACK_JSONL, "feedback/triage.jsonl")
    assert result.records_read == 14 == result.accepted.height + result.quarantine.height
    accepted, quarantine = result.accepted, result.quarantine
    assert accepted.schema == pl.Schema(FEEDBACK) and quarantine.schema == pl.Schema(QUARANTINE)
    assert accepted["defect_id"].to_list() == ["d-1", "d-2", "d-3"]
    first = accepted.row(0, named=True)
    assert (first["decision"], first["severity"], first["root_cause_service"]) == ("correct", "S1", "inventory")
    assert accepted["at"].to_list() == [datetime(2026, 11, 2, 10, 15), datetime(2026, 11, 2, 10, 15),
                                        datetime(2026, 11, 2, 10, 30)]
    assert accepted["source_line"].to_list() == [1, 2, 3]

    assert set(quarantine["source_kind"]) == {"feedback"}
    assert set(quarantine["source_file"]) == {"feedback/triage.jsonl"}
    reasons = dict(zip(quarantine["source_line"], quarantine["reason"], strict=True))
    assert sorted(reasons) == [4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]
    assert "needs at least one corrected field" in reasons[4]
    assert "use decision correct" in reasons[5]
    assert "unknown field(s) severty" in reasons[6]
    assert "S5" in reasons[7] and "S1, S2, S3, S4" in reasons[7]
    assert "'maybe' is not one of approve, reject, correct" in reasons[8]
    assert "missing author" in reasons[9]
    assert "'yesterday' is not an ISO 8601 time" in reasons[10]
    assert "'slowness' is not one of" in reasons[11]
    assert reasons[12].startswith("invalid JSON")
    assert "duplicate of the record at line 2" in reasons[13]
    assert "expected a feedback record" in reasons[14]
    # The record's own time gives the quarantine row its hour when it can be read.
    hours = dict(zip(quarantine["source_line"], quarantine["hour"], strict=True))
    assert hours[4] == datetime(2026, 11, 2, 10) and hours[10] is None


FEEDBACK_YAML = b"""\
# triage of 2 November
- defect_id: d-1
  decision: correct
  defect_type: dependency_failure
  author: jane
  at: 2026-11-02T10:15:00Z
- defect_id: d-2
  decision: reject
  author: jane
  comment: planned maintenance
  at: 2026-11-02 10:20:00
---
defect_id: d-3
decision: approve
author: omar
at: [not, a, time]
---
defect_id: d-4
decision: approve
  author: broken indentation
---
{defect_id: d-5, decision: approve, author: omar, at: "2026-11-02T11:00:00Z"}
"""


def test_parse_feedback_reads_yaml_documents_and_lists():
    result = parse_feedback(FEEDBACK_YAML, "feedback/triage.yaml")
    assert result.records_read == 5 == result.accepted.height + result.quarantine.height
    assert result.accepted.select("defect_id", "decision", "source_line").rows() == [
        ("d-1", "correct", 2), ("d-2", "reject", 7), ("d-5", "approve", 22)]
    assert result.accepted["defect_type"][0] == "dependency_failure"
    assert result.accepted["at"].to_list()[:2] == [datetime(2026, 11, 2, 10, 15), datetime(2026, 11, 2, 10, 20)]
    reasons = dict(zip(result.quarantine["source_line"], result.quarantine["reason"], strict=True))
    assert "at must be an ISO 8601 time" in reasons[13]
    assert reasons[18].startswith("invalid YAML at line 20")
    # Offsets point at the record's bytes.
    offset = result.accepted["source_offset"][1]
    assert FEEDBACK_YAML[offset:].startswith(b"- defect_id: d-2")


def test_parse_feedback_counts_an_empty_file_and_sniffs_unknown_extensions():
    empty = parse_feedback(b"  \n", "feedback/empty.jsonl")
    assert (empty.records_read, empty.accepted.height, empty.quarantine.height) == (1, 0, 1)
    sniffed = parse_feedback(b'[{"defect_id": "d-1", "decision": "approve", "author": "a", '
                             b'"at": "2026-11-02T10:00:00Z"}]', "feedback/export.txt")
    assert sniffed.accepted["defect_id"].to_list() == ["d-1"]
    same = parse_feedback(b'[{"defect_id": "d-1", "decision": "approve", "author": "a", '
                          b'"at": "2026-11-02T10:00:00Z"}]', "feedback/again.json")
    assert same.accepted["feedback_id"].to_list() == sniffed.accepted["feedback_id"].to_list()


def _defects() -> pl.DataFrame:
    return pl.DataFrame({
        "defect_id": ["d-1", "d-2", "d-3", "d-4"],
        "service": ["checkout", "cart", "search", "auth"],
        "defect_type": ["error_spike", "latency_regression", "new_exception", "availability"],
        "severity": ["S3", "S2", "S3", "S1"],
        "confidence": [0.6, 0.7, 0.4, 0.9],
        "status": ["open", "open", "regression", "open"],
        "evidence": ['{"windows": 3}', None, "not json", '{"windows": 1}'],
    })


def _feedback(records: list[dict]) -> pl.DataFrame:
    text = "\n".join(json.dumps(r) for r in records).encode()
    result = parse_feedback(text, "feedback/f.jsonl")
    assert result.quarantine.height == 0, result.quarantine["reason"].to_list()
    return result.accepted


def test_apply_feedback_latest_wins_and_updates_labels_and_status():
    feedback = _feedback([
        {"defect_id": "d-1", "decision": "correct", "defect_type": "dependency_failure", "severity": "S1",
         "author": "jane", "at": "2026-11-02T10:00:00Z"},
        {"defect_id": "d-2", "decision": "reject", "author": "jane", "at": "2026-11-02T10:00:00Z",
         "comment": "load test"},
        # d-3: rejected, then a later approval wins (listed first to show order in the file does not matter)
        {"defect_id": "d-3", "decision": "approve", "author": "omar", "at": "2026-11-02T12:00:00Z"},
        {"defect_id": "d-3", "decision": "reject", "author": "jane", "at": "2026-11-02T11:00:00Z"},
        {"defect_id": "d-99", "decision": "reject", "author": "jane", "at": "2026-11-02T11:00:00Z"},
    ])
    defects = _defects()
    result = apply_feedback(defects, feedback)
    assert result.columns == defects.columns and result["defect_id"].to_list() == defects["defect_id"].to_list()
    rows = {r["defect_id"]: r for r in result.to_dicts()}
    assert (rows["d-1"]["defect_type"], rows["d-1"]["severity"], rows["d-1"]["confidence"]) == (
        "dependency_failure", "S1", 1.0)
    assert (rows["d-2"]["status"], rows["d-2"]["confidence"], rows["d-2"]["defect_type"]) == (
        "rejected", 0.0, "latency_regression")
    assert (rows["d-3"]["status"], rows["d-3"]["confidence"]) == ("regression", 1.0)
    assert rows["d-4"] == defects.row(3, named=True)  # no feedback: untouched
    evidence = json.loads(rows["d-1"]["evidence"])
    assert evidence["windows"] == 3 and evidence["feedback"]["author"] == "jane"
    assert json.loads(rows["d-2"]["evidence"])["feedback"]["comment"] == "load test"
    kept = json.loads(rows["d-3"]["evidence"])  # evidence that was not a JSON object is kept beside it
    assert kept["evidence"] == "not json" and kept["feedback"]["decision"] == "approve"
    assert apply_feedback(defects, feedback.clear()).equals(defects)
    with pytest.raises(governance.GovernanceInputError, match="lacks column.*severity"):
        apply_feedback(defects.drop("severity"), feedback)


def test_feedback_becomes_decision_log_rows_and_events():
    feedback = _feedback([
        {"defect_id": "d-1", "decision": "correct", "severity": "S1", "root_cause_change_id": "evt-9",
         "author": "jane", "comment": "outage", "at": "2026-11-02T10:00:00Z"},
        {"defect_id": "d-1", "decision": "approve", "author": "omar", "at": "2026-11-02T11:00:00Z"},
    ])
    rows = governance.feedback_decision_rows(feedback)
    assert rows.schema == pl.Schema(DECISION_LOG)
    assert rows.select("subject_id", "outcome", "status").rows() == [
        ("d-1", "correct", "applied"), ("d-1", "approve", "approved")]
    assert rows["decision_id"].n_unique() == 2  # two reviews of one defect are two decisions
    assert rows["decided_at"].to_list() == [datetime(2026, 11, 2, 10), datetime(2026, 11, 2, 11)]
    assert "severity=S1" in rows["rationale"][0] and "root_cause_change_id=evt-9" in rows["rationale"][0]
    assert governance.feedback_decision_rows(feedback)["decision_id"].equals(rows["decision_id"])
    events = governance.feedback_as_events(feedback)
    assert events.select("field", "action", "value").rows() == [
        ("root_cause_change_id", "correct", "evt-9"), ("severity", "correct", "S1"), ("defect", "approve", None)]


# --------------------------------------------------------------------------------------------- CLI


def test_model_cli_lists_promotes_and_rolls_back(store, forests, tmp_path, capsys):
    from qa_assets.cli import main
    from qa_assets.lib import warehouse

    _register(store, "window-detector", forests[0], 0.8)
    _register(store, "window-detector", forests[1], 0.9)
    db = tmp_path / "warehouse.duckdb"
    with warehouse.connect(db):
        pass
    assert main(["model", "list", "--tracking-uri", store]) == 0
    listing = capsys.readouterr().out
    assert "window-detector  2        challenger" in listing and "f1=0.9" in listing

    assert main(["model", "promote", "window-detector", "--tracking-uri", store, "--warehouse", str(db)]) == 0
    assert "champion is now version 2 (was 1)" in capsys.readouterr().out
    assert main(["model", "rollback", "window-detector", "--tracking-uri", store, "--warehouse", str(db)]) == 0
    assert "champion is now version 1 (was 2)" in capsys.readouterr().out
    assert main(["model", "rollback", "window-detector", "--tracking-uri", store]) == 2
    assert "nothing to roll back to" in capsys.readouterr().err
    absent = f"sqlite:///{tmp_path / 'elsewhere' / 'mlflow.db'}"
    assert main(["model", "list", "--tracking-uri", absent]) == 2
    assert "no MLflow store at" in capsys.readouterr().err and not (tmp_path / "elsewhere").exists()

    with warehouse.connect(db, read_only=True) as con:
        log = warehouse.read_frame(con, "SELECT decision, model_version, outcome, status FROM "
                                        "governance.decision_log ORDER BY decided_at")
    assert log.rows() == [("promote_model", "2", "champion=2", "applied"),
                          ("rollback_model", "1", "champion=1", "applied")]


# ------------------------------------------------------------------------------ an MLflow server


@pytest.fixture
def mlflow_server(tmp_path: Path) -> str:
    """`mlflow server` on a free local port with its own SQLite backend and artifact folder."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true",
           # the job runner starts ten busy consumer processes the registry does not need
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
               "--artifacts-destination", str(tmp_path / "server-artifacts")]
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


@pytest.mark.integration
def test_an_mlflow_server_works_like_the_local_store(mlflow_server, forests, windows, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    old, new = forests
    assert _register(mlflow_server, "window-detector", old, 0.8).aliases == ("champion",)
    assert _register(mlflow_server, "window-detector", new, 0.9).aliases == ("challenger",)
    assert model_registry.promote("window-detector", tracking_uri=mlflow_server).version == "2"
    assert model_registry.rollback("window-detector", tracking_uri=mlflow_server).version == "1"
    model, info = model_registry.load_model("window-detector", tracking_uri=mlflow_server)
    assert info.version == "1"
    np.testing.assert_array_equal(model.score_samples(windows), old.score_samples(windows))
    assert model_registry.list_models(mlflow_server)["aliases"].to_list() == [["champion"], []]
    assert (tmp_path / "server-artifacts").is_dir() and not (tmp_path / "mlruns").exists()


def test_reviews_asset_applies_verdicts_to_the_defects_table_and_logs_them_once(tmp_path):
    import dagster as dg

    from qa_assets.defs.governance.assets import reviews
    from qa_assets.defs.resources import WarehouseResource
    from qa_assets.lib import warehouse as wh
    from qa_assets.lib.defects.grouping import DEFECTS as DEFECTS_SCHEMA

    stored = _defects()
    stored = pl.DataFrame({c: stored[c] if c in stored.columns else pl.Series(c, [None] * stored.height)
                           for c in DEFECTS_SCHEMA}, schema=DEFECTS_SCHEMA)
    feedback = _feedback([
        {"defect_id": "d-1", "decision": "correct", "defect_type": "dependency_failure", "author": "jane",
         "at": "2026-11-02T10:00:00Z"},
        {"defect_id": "d-2", "decision": "reject", "author": "jane", "at": "2026-11-02T10:00:00Z"},
        {"defect_id": "d-404", "decision": "approve", "author": "jane", "at": "2026-11-02T10:00:00Z"},
    ])
    warehouse = WarehouseResource(path=str(tmp_path / "wh.duckdb"))
    with warehouse.connect() as con:
        wh.ensure_table(con, "defects.defects", DEFECTS_SCHEMA)
        wh.insert(con, "defects.defects", stored)
        wh.ensure_table(con, "raw.feedback", dict(feedback.schema))
        wh.insert(con, "raw.feedback", feedback)
    for _ in range(2):  # a re-run changes nothing and logs nothing twice
        result = reviews(dg.build_asset_context(), warehouse=warehouse)
        assert result.metadata["unknown_defects"] == 1
    with warehouse.connect(read_only=True) as con:
        table = {r["defect_id"]: r for r in wh.read_table(con, "defects.defects").to_dicts()}
        log = wh.read_frame(con, "SELECT subject_id, status FROM governance.decision_log WHERE stage = 'feedback'")
    assert table["d-1"]["defect_type"] == "dependency_failure" and table["d-1"]["confidence"] == 1.0
    assert table["d-2"]["status"] == "rejected"
    assert table["d-4"]["defect_type"] == stored.row(3, named=True)["defect_type"]
    assert sorted(log.rows()) == [("d-1", "applied"), ("d-2", "rejected")]
