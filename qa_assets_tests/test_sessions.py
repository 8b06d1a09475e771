"""Log-session anomaly detection: count matrices, detectors, thresholds and the evaluation command."""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from qa_assets.evaluation import sessions as evaluation
from qa_assets.lib import sessions as sess

OPEN, READ, ACK, CLOSE = "open file <*>", "read block <*> from <*>", "ack block <*>", "close file <*>"
CACHE = "cache hit <*>"
DISK_FAILURE = "disk failure on <*>: <*>"


def normal_session(rng: np.random.Generator) -> list[str]:
    """open, k × (read, ack) with some acks delayed, an optional cache hit, close: reads equal acks."""
    reads = int(rng.integers(1, 5))
    sequence = [OPEN]
    pending = 0
    for _ in range(reads):
        sequence.append(READ)
        pending += 1
        if rng.random() < 0.7:
            sequence += [ACK] * pending
            pending = 0
    sequence += [ACK] * pending
    if rng.random() < 0.3:
        sequence.insert(1, CACHE)
    return sequence + [CLOSE]


def lost_ack_session(rng: np.random.Generator) -> list[str]:
    sequence = normal_session(rng)
    sequence.remove(ACK)
    return sequence


def as_events(sequences: dict[str, list[str]]) -> pl.DataFrame:
    return pl.DataFrame(
        {"session_id": [sid for sid, seq in sequences.items() for _ in seq],
         "template": [t for seq in sequences.values() for t in seq]}
    )


@pytest.fixture
def training_events() -> pl.DataFrame:
    """400 sessions, 2% of them anomalous (a lost ack): unlabelled, as production logs are."""
    rng = np.random.default_rng(7)
    sequences = {f"s{i}": normal_session(rng) for i in range(392)}
    sequences |= {f"bad{i}": lost_ack_session(rng) for i in range(8)}
    return as_events(sequences)


# --- count matrices ------------------------------------------------------------------------------------


def test_count_matrix_counts_each_template_per_session() -> None:
    events = pl.DataFrame({"session_id": ["b", "a", "b", "b", "a"], "template": ["x", "y", "x", "z", "x"]})
    counts = sess.count_matrix(events)
    assert counts.vocabulary == ("x", "y", "z")
    assert counts.session_ids.to_list() == ["b", "a"]  # first appearance
    assert counts.matrix.toarray().tolist() == [[2, 0, 1, 0], [1, 1, 0, 0]]
    assert counts.unknown.tolist() == [0, 0]


def test_count_matrix_follows_given_session_order_and_keeps_silent_sessions() -> None:
    events = pl.DataFrame({"session_id": [1, 2, 2, 9], "template": ["x", "x", "y", "y"]})
    counts = sess.count_matrix(events, session_ids=[2, 3, 1])
    assert counts.session_ids.to_list() == [2, 3, 1]
    assert counts.matrix.toarray().tolist() == [[1, 1, 0], [0, 0, 0], [1, 0, 0]]  # session 9 not asked for


def test_unseen_templates_and_ids_go_to_the_unknown_column() -> None:
    events = pl.DataFrame({"session_id": ["a", "a", "a", "b"], "template_id": [3, 7, None, 3]})
    counts = sess.count_matrix(events, template_col="template_id", vocabulary=["3", "5"])
    assert counts.vocabulary == ("3", "5")
    assert counts.known.toarray().tolist() == [[1, 0], [1, 0]]
    assert counts.unknown.tolist() == [2, 0]  # id 7 and the line without a template


def test_aligned_to_moves_counts_between_vocabularies() -> None:
    counts = sess.count_matrix(pl.DataFrame({"session_id": ["a", "a", "a"], "template": ["x", "y", "y"]}))
    aligned = counts.aligned_to(["y", "w"])
    assert aligned.known.toarray().tolist() == [[2, 0]]
    assert aligned.unknown.tolist() == [1]


def test_transition_matrix_uses_event_order_with_session_start_and_end() -> None:
    events = pl.DataFrame(
        {"session_id": ["a", "a", "a"], "template": ["close", "open", "read"], "ts": [3, 1, 2]}
    )
    transitions = sess.transition_matrix(events, order_col="ts")
    sep = sess.TRANSITION_SEPARATOR
    expected = {f"{sess.START_OF_SESSION}{sep}open", f"open{sep}read", f"read{sep}close",
                f"close{sep}{sess.END_OF_SESSION}"}
    assert set(transitions.vocabulary) == expected
    assert transitions.known.toarray().sum() == 4


def test_session_events_explodes_sequences_in_order() -> None:
    sessions = pl.DataFrame({"key": ["a", "b", "c"], "templates": [["x", "y"], ["y"], []]})
    events = sess.session_events(sessions, session_col="key")
    assert events.rows() == [("a", 0, "x"), ("a", 1, "y"), ("b", 0, "y")]


def test_bad_input_gets_a_clear_error() -> None:
    with pytest.raises(sess.SessionDataError, match="trace_id"):
        sess.count_matrix(pl.DataFrame({"trace_id": ["a"], "template": ["x"]}))
    with pytest.raises(sess.SessionDataError, match="null session key"):
        sess.count_matrix(pl.DataFrame({"session_id": ["a", None], "template": ["x", "y"]}))
    with pytest.raises(sess.SessionDataError, match="list of templates"):
        sess.session_events(pl.DataFrame({"session_id": ["a"], "templates": ["x"]}))
    with pytest.raises(RuntimeError, match="not fitted"):
        one_session = sess.count_matrix(pl.DataFrame({"session_id": ["a"], "template": ["x"]}))
        sess.InvariantRarityDetector().score(one_session)


# --- unsupervised detectors ----------------------------------------------------------------------------


def test_invariant_rarity_detector_flags_injected_anomalies_not_normal_sessions(training_events) -> None:
    detector = sess.InvariantRarityDetector().fit(sess.count_matrix(training_events))
    assert any(set(inv.templates) == {READ, ACK} for inv in detector.invariants_)

    rng = np.random.default_rng(99)
    fresh = {f"normal{i}": normal_session(rng) for i in range(50)}
    fresh["lost_ack"] = [OPEN, READ, READ, ACK, CLOSE]
    fresh["disk_failure"] = [OPEN, READ, DISK_FAILURE, ACK, CLOSE]
    counts = sess.count_matrix(as_events(fresh), vocabulary=detector.vocabulary_)
    flagged = dict(zip(counts.session_ids.to_list(), detector.predict(counts)))
    assert flagged["lost_ack"] and flagged["disk_failure"]
    assert not any(flagged[f"normal{i}"] for i in range(50))

    reasons = dict(detector.explain(counts).select("session_id", "reasons").iter_rows())
    assert any("never seen in training" in reason for reason in reasons["disk_failure"])
    assert any("breaks invariant" in reason and READ in reason for reason in reasons["lost_ack"])
    assert reasons["normal0"] == []


def test_detector_realigns_counts_built_on_their_own_vocabulary(training_events) -> None:
    detector = sess.InvariantRarityDetector().fit(sess.count_matrix(training_events))
    sessions = as_events({"x": [OPEN, READ, ACK, CLOSE], "y": [OPEN, DISK_FAILURE, CLOSE]})
    own_vocabulary = sess.count_matrix(sessions)
    trained_vocabulary = sess.count_matrix(sessions, vocabulary=detector.vocabulary_)
    assert detector.score(own_vocabulary).tolist() == detector.score(trained_vocabulary).tolist()
    assert detector.predict(own_vocabulary).tolist() == [False, True]


def test_rare_template_in_training_is_a_signal(training_events) -> None:
    rare = as_events({"r0": [OPEN, READ, ACK, "retry read <*>", CLOSE]})
    counts = sess.count_matrix(pl.concat([training_events, rare]))
    detector = sess.InvariantRarityDetector(rare_fraction=0.01).fit(counts)
    rare_session = counts.rows(counts.session_ids.to_numpy() == "r0")
    assert detector.predict(rare_session).tolist() == [True]
    assert not detector.predict(counts.rows(counts.session_ids.to_numpy() == "s0")).any()


def test_invariants_mining_baseline_mines_the_read_ack_relation(training_events) -> None:
    baseline = sess.InvariantsMiningBaseline().fit(sess.count_matrix(training_events))
    assert any(set(inv.templates) == {READ, ACK} and sorted(inv.coefficients) == [-1, 1]
               for inv in baseline.invariants_)
    fresh = as_events({"ok": [OPEN, READ, ACK, CLOSE], "lost": [OPEN, READ, READ, ACK, CLOSE]})
    counts = sess.count_matrix(fresh, vocabulary=baseline.vocabulary_)
    assert baseline.predict(counts).tolist() == [False, True]


def test_pca_baseline_flags_a_session_off_the_normal_subspace() -> None:
    # reads and acks rise together (the normal subspace); a session with reads and no acks leaves it
    rng = np.random.default_rng(5)
    sequences = {}
    for i in range(300):
        k, m = int(rng.integers(0, 5)), int(rng.integers(0, 3))
        sequences[f"s{i}"] = [OPEN] + [READ, ACK] * k + [CACHE] * m + [CLOSE]
    baseline = sess.PCABaseline().fit(sess.count_matrix(as_events(sequences)))
    fresh = sess.count_matrix(
        as_events({"ok": [OPEN, READ, ACK, READ, ACK, CLOSE], "no_acks": [OPEN] + [READ] * 4 + [CLOSE]})
    )
    scores = baseline.score(fresh)
    assert scores[1] > baseline.threshold_ > scores[0]
    assert baseline.predict(fresh).tolist() == [False, True]


def test_detectors_are_deterministic_with_a_seed_and_survive_pickling(
    training_events, tmp_path: Path
) -> None:
    counts = sess.count_matrix(training_events)
    labels = counts.session_ids.str.starts_with("bad").to_numpy()
    first = sess.IsolationForestDetector(n_estimators=50, random_state=3).fit(counts)
    second = sess.IsolationForestDetector(n_estimators=50, random_state=3).fit(counts)
    assert np.array_equal(first.score(counts), second.score(counts))
    forest_a = sess.SupervisedSessionClassifier("random_forest", random_state=5).fit(counts, labels)
    forest_b = sess.SupervisedSessionClassifier("random_forest", random_state=5).fit(counts, labels)
    assert np.array_equal(forest_a.score(counts), forest_b.score(counts))

    for detector in (sess.InvariantRarityDetector().fit(counts), first, forest_a):
        path = tmp_path / f"{type(detector).__name__}.pkl"
        path.write_bytes(pickle.dumps(detector))
        restored = pickle.loads(path.read_bytes())
        assert restored.vocabulary_ == detector.vocabulary_
        assert np.array_equal(restored.score(counts), detector.score(counts))


# --- supervised and thresholds -------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["decision_tree", "logistic_regression", "random_forest"])
def test_supervised_classifier_learns_order_anomalies_from_labels(model: str) -> None:
    # anomalies here differ only by order (ack before read): counts alone cannot tell them apart
    rng = np.random.default_rng(11)
    sequences = {f"n{i}": [OPEN, READ, ACK, CLOSE] for i in range(150)}
    sequences |= {f"a{i}": [OPEN, ACK, READ, CLOSE] for i in range(30)}
    sequences |= {f"c{i}": [OPEN, CACHE, READ, ACK, CLOSE] for i in range(int(rng.integers(20, 40)))}
    events = as_events(sequences)
    counts, transitions = sess.count_matrix(events), sess.transition_matrix(events)
    labels = counts.session_ids.str.starts_with("a").to_numpy()
    classifier = sess.SupervisedSessionClassifier(model, threshold="cv").fit(counts, labels, transitions)

    fresh = as_events({"ok": [OPEN, READ, ACK, CLOSE], "swapped": [OPEN, ACK, READ, CLOSE]})
    fresh_counts = sess.count_matrix(fresh, vocabulary=classifier.vocabulary_)
    fresh_transitions = sess.transition_matrix(fresh)  # its own vocabulary: re-aligned by the classifier
    assert classifier.predict(fresh_counts, fresh_transitions).tolist() == [False, True]
    with pytest.raises(sess.SessionDataError, match="transitions"):
        classifier.predict(fresh_counts)


def test_supervised_classifier_rejects_one_class_labels(training_events) -> None:
    counts = sess.count_matrix(training_events)
    with pytest.raises(sess.SessionDataError, match="both normal and anomalous"):
        sess.SupervisedSessionClassifier().fit(counts, np.zeros(counts.n_sessions, dtype=bool))


def test_best_f1_threshold_separates_scores_and_honours_weights() -> None:
    truth = np.array([False, False, True, True, False])
    scores = np.array([0.1, 0.2, 0.8, 0.9, 0.3])
    threshold = sess.best_f1_threshold(truth, scores)
    assert 0.3 < threshold < 0.8
    # a heavy normal row at 0.85 makes flagging only the 0.9 row best
    weighted = sess.best_f1_threshold(np.array([True, False, True]), np.array([0.9, 0.85, 0.8]),
                                      sample_weight=np.array([1, 100, 1]))
    assert 0.85 < weighted < 0.9


def test_precision_recall_f1_and_label_ceiling() -> None:
    assert sess.precision_recall_f1(np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0])) == (0.5, 0.5, 0.5)
    assert sess.precision_recall_f1(np.array([1, 0]), np.array([0, 0])) == (0.0, 0.0, 0.0)
    # key "k" holds 1 anomaly among 9 normals: no detector can catch it without 9 false alarms
    keys = ["p"] * 3 + ["k"] * 10
    labels = np.array([True] * 3 + [True] + [False] * 9)
    precision, recall, f1 = sess.label_ceiling(keys, labels)
    assert (precision, recall) == (1.0, 0.75)
    assert f1 == pytest.approx(2 * 0.75 / 1.75)


# --- the evaluation command ----------------------------------------------------------------------------


def _write_dataset(folder: Path, rng: np.random.Generator) -> None:
    rows = []
    for i in range(600):
        anomalous = i % 50 == 0
        sequence = lost_ack_session(rng) if anomalous else normal_session(rng)
        if anomalous and i % 200 == 0:
            sequence = sequence[:2] + [DISK_FAILURE] + sequence[2:]
        rows.append({"block_id": f"blk_{i}", "label": "Anomaly" if anomalous else "Normal",
                     "split_tar1.0": "test" if i % 4 == 0 else "train", "templates": sequence})
    folder.mkdir(parents=True)
    (folder / "tiny_sessions.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def _args(**overrides) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    evaluation.add_arguments(parser)
    args = parser.parse_args([])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def test_evaluate_sessions_command_prints_the_table(tmp_path: Path, capsys) -> None:
    _write_dataset(tmp_path / "tiny", np.random.default_rng(3))
    assert evaluation.main(_args(data=tmp_path / "tiny")) == 0
    out = capsys.readouterr().out
    for method in (evaluation.UNSUPERVISED, evaluation.SUPERVISED, "Invariants Mining (loglizer)",
                   "PCA (loglizer, tf-idf)"):
        assert method in out
    row = next(line for line in out.splitlines() if line.startswith(evaluation.UNSUPERVISED + " "))
    precision, recall, f1 = row.split()[-5:-2]
    # every lost ack and disk failure, no false alarm
    assert (precision, recall, f1) == ("1.000", "1.000", "1.000")

    assert evaluation.main(_args(data=tmp_path / "tiny", json=True)) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["test_anomalies"] == 6
    kinds = {r["kind"] for r in report["results"]}
    assert kinds >= {"unsupervised", "supervised", "baseline (unsup.)", "reference"}


def test_evaluate_sessions_command_explains_missing_or_bad_data(tmp_path: Path, capsys) -> None:
    assert evaluation.main(_args(data=tmp_path / "nowhere")) == 2
    assert "QA_ASSETS_SHARED_DATA" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x_sessions.jsonl").write_text(json.dumps({"block_id": "a", "templates": []}) + "\n")
    assert evaluation.main(_args(data=tmp_path / "bad")) == 2
    assert "--label-column" in capsys.readouterr().err


# --- the real data (../shared/data/hdfs100k) -----------------------------------------------------------

# The issue's bars come from full HDFS (loglizer: Invariants Mining F1 0.915, decision tree 0.998). On the
# hdfs100k sample many anomalous blocks are cut off before their anomalous events: 23 of the 57 test
# anomalies have exactly the template sequence of a common normal session. Any detector that sees only
# the templates is capped by `label_ceiling` (F1 0.711 on this split), so the bars are asserted against it.


@pytest.fixture(scope="module")
def hdfs100k(shared_data: Path) -> evaluation.SessionEvaluation:
    path = evaluation.find_sessions_file(shared_data / "hdfs100k")
    frame = evaluation.load_sessions(path, session_col="block_id", sequence_col="templates",
                                     label_col="label", split_col="split_tar1.0")
    return evaluation.evaluate_sessions(frame, source=str(path))


@pytest.mark.evaluation
@pytest.mark.slow
def test_hdfs100k_detectors_reach_what_the_labels_allow(hdfs100k: evaluation.SessionEvaluation) -> None:
    ceiling = hdfs100k.result(evaluation.CEILING_SEQUENCE).f1
    unsupervised = hdfs100k.result(evaluation.UNSUPERVISED)
    supervised = hdfs100k.result(evaluation.SUPERVISED)
    published_style = hdfs100k.result("Invariants Mining (loglizer)")
    assert hdfs100k.test_sessions == 1588 and hdfs100k.test_anomalies == 57
    assert unsupervised.f1 >= 0.95 * ceiling, (unsupervised, ceiling)
    assert unsupervised.precision >= 0.95
    assert unsupervised.f1 > published_style.f1 + 0.1
    assert supervised.f1 >= 0.95 * ceiling, (supervised, ceiling)


@pytest.mark.evaluation
@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="the full-HDFS bars exceed the hdfs100k label ceiling (F1 0.711)")
def test_hdfs100k_issue_bars(hdfs100k: evaluation.SessionEvaluation) -> None:
    # kept strict: if the data is replaced by one where the bars are reachable, this starts failing as XPASS
    assert hdfs100k.result(evaluation.UNSUPERVISED).f1 >= 0.95
    assert hdfs100k.result(evaluation.SUPERVISED).f1 >= 0.99
