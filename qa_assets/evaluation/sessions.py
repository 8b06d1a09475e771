"""`qa-assets evaluate sessions`: log-session anomaly detection measured on a labelled session set
(default: the HDFS block sessions in ../shared/data/hdfs100k). Prints precision, recall and F1 on the
test split for the project's detectors and for published-style baselines run in the same process, and
the best figures any detector could reach given how the labels fall on identical sessions.

The data is one JSON object per session: a session key, a label, a split column (train/test) and the
ordered list of templates.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl

from qa_assets.lib import sessions as sess

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_SUBDIR = "hdfs100k"


def default_data_dir() -> Path:
    """$QA_ASSETS_SHARED_DATA/hdfs100k, else ../shared/data/hdfs100k beside the repository."""
    shared = os.environ.get("QA_ASSETS_SHARED_DATA")
    base = Path(shared) if shared else REPO_ROOT.parent / "shared" / "data"
    return base / DATA_SUBDIR


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, default=None,
                        help="folder holding one *sessions.jsonl file, or the file itself "
                             "(default: $QA_ASSETS_SHARED_DATA/hdfs100k or ../shared/data/hdfs100k)")
    parser.add_argument("--split-column", default="split_tar1.0",
                        help="column whose values 'train' / 'test' split the sessions (default: %(default)s)")
    parser.add_argument("--session-column", default="block_id",
                        help="session key column (default: %(default)s)")
    parser.add_argument("--sequence-column", default="templates",
                        help="column with the ordered list of templates (default: %(default)s)")
    parser.add_argument("--label-column", default="label", help="label column (default: %(default)s)")
    parser.add_argument("--anomaly-label", default="Anomaly",
                        help="label value of anomalous sessions (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the randomized methods")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")


@dataclass(frozen=True)
class MethodResult:
    method: str
    kind: str  # unsupervised | semi-supervised | supervised | baseline (...) | reference
    precision: float
    recall: float
    f1: float
    flagged: int
    seconds: float


@dataclass(frozen=True)
class SessionEvaluation:
    source: str
    train_sessions: int
    train_anomalies: int
    test_sessions: int
    test_anomalies: int
    results: list[MethodResult]

    def result(self, method: str) -> MethodResult:
        for row in self.results:
            if row.method == method:
                return row
        raise KeyError(method)


UNSUPERVISED = "invariants + rarity"
SEMI_SUPERVISED = "invariants + rarity, normal-only fit"
SUPERVISED = "random forest, counts + transitions"
CEILING_SEQUENCE = "ceiling: any function of the sequence"


def find_sessions_file(data: Path) -> Path:
    """The sessions file: `data` itself, or the one *sessions.jsonl inside the folder `data`."""
    if data.is_file():
        return data
    if not data.is_dir():
        raise FileNotFoundError(
            f"session data not found at {data}: pass --data DIR (a folder with a *sessions.jsonl file) "
            "or set QA_ASSETS_SHARED_DATA to the folder that holds hdfs100k/"
        )
    candidates = sorted(data.glob("*sessions.jsonl"))
    if len(candidates) != 1:
        raise FileNotFoundError(
            f"expected exactly one *sessions.jsonl file in {data}, found {[c.name for c in candidates]}; "
            "pass the file itself with --data"
        )
    return candidates[0]


def load_sessions(
    path: Path, *, session_col: str, sequence_col: str, label_col: str, split_col: str
) -> pl.DataFrame:
    """Read the JSON-lines sessions and check the columns the evaluation needs."""
    try:
        frame = pl.read_ndjson(path)
    except (pl.exceptions.ComputeError, OSError) as error:
        raise sess.SessionDataError(f"{path} is not readable as JSON lines: {error}") from error
    missing = [c for c in (session_col, sequence_col, label_col, split_col) if c not in frame.columns]
    if missing:
        raise sess.SessionDataError(
            f"{path} lacks column(s) {missing}; it has {frame.columns}. Name them with --session-column, "
            "--sequence-column, --label-column and --split-column"
        )
    splits = set(frame[split_col].drop_nulls().unique().to_list())
    if not {"train", "test"} <= splits:
        raise sess.SessionDataError(
            f"{path}: column {split_col!r} must hold 'train' and 'test', found {sorted(splits)}"
        )
    return frame


def _timed(method: str, kind: str, y_true: np.ndarray, run: Callable[[], np.ndarray]) -> MethodResult:
    started = time.perf_counter()
    y_pred = np.asarray(run(), dtype=bool)
    seconds = time.perf_counter() - started
    precision, recall, f1 = sess.precision_recall_f1(y_true, y_pred)
    return MethodResult(method, kind, precision, recall, f1, int(y_pred.sum()), seconds)


def evaluate_sessions(
    frame: pl.DataFrame, *, session_col: str = "block_id", sequence_col: str = "templates",
    label_col: str = "label", anomaly_label: str = "Anomaly", split_col: str = "split_tar1.0",
    seed: int = 0, source: str = "",
) -> SessionEvaluation:
    """Fit every method on the train split and score the test split."""
    train = frame.filter(pl.col(split_col) == "train")
    test = frame.filter(pl.col(split_col) == "test")
    y_train = (train[label_col] == anomaly_label).to_numpy()
    y_test = (test[label_col] == anomaly_label).to_numpy()
    if not y_test.any():
        raise sess.SessionDataError(
            f"the test split has no session labelled {anomaly_label!r}; check --anomaly-label"
        )

    def events(part: pl.DataFrame) -> pl.DataFrame:
        return sess.session_events(part, session_col=session_col, sequence_col=sequence_col)

    train_events, test_events = events(train), events(test)
    keys = dict(session_col=session_col, template_col="template")
    train_counts = sess.count_matrix(train_events, session_ids=train[session_col], **keys)
    # the test split is counted over the training vocabulary: its new templates land in the unknown column
    test_counts = sess.count_matrix(
        test_events, session_ids=test[session_col], vocabulary=train_counts.vocabulary, **keys
    )
    train_transitions = sess.transition_matrix(
        train_events, order_col="position", session_ids=train[session_col], **keys
    )
    test_transitions = sess.transition_matrix(
        test_events, order_col="position", session_ids=test[session_col],
        vocabulary=train_transitions.vocabulary, **keys,
    )

    def unsupervised(detector) -> Callable[[], np.ndarray]:
        # labels stay hidden: the detector sees every training session, anomalies included
        return lambda: detector.fit(train_counts).predict(test_counts)

    results = [
        _timed(UNSUPERVISED, "unsupervised", y_test, unsupervised(sess.InvariantRarityDetector())),
        _timed(SEMI_SUPERVISED, "semi-supervised", y_test,
               lambda: sess.InvariantRarityDetector().fit(train_counts.rows(~y_train)).predict(test_counts)),
        _timed("Invariants Mining (loglizer)", "baseline (unsup.)", y_test,
               unsupervised(sess.InvariantsMiningBaseline())),
        _timed("PCA (loglizer, tf-idf)", "baseline (unsup.)", y_test, unsupervised(sess.PCABaseline())),
        _timed("Isolation Forest", "baseline (unsup.)", y_test,
               unsupervised(sess.IsolationForestDetector(random_state=seed))),
        _timed(SUPERVISED, "supervised", y_test,
               lambda: sess.SupervisedSessionClassifier("random_forest", random_state=seed)
               .fit(train_counts, y_train, train_transitions).predict(test_counts, test_transitions)),
        _timed("logistic regression, counts + transitions", "supervised", y_test,
               lambda: sess.SupervisedSessionClassifier("logistic_regression", random_state=seed)
               .fit(train_counts, y_train, train_transitions).predict(test_counts, test_transitions)),
        _timed("decision tree, counts (loglizer)", "baseline (sup.)", y_test,
               lambda: sess.SupervisedSessionClassifier("decision_tree", random_state=seed)
               .fit(train_counts, y_train).predict(test_counts)),
    ]
    # what the labels allow: identical sessions with different labels cap every detector
    sequence_key = test[sequence_col].list.join(sess.TRANSITION_SEPARATOR)
    count_key = test[sequence_col].list.sort().list.join(sess.TRANSITION_SEPARATOR)
    for method, key in ((CEILING_SEQUENCE, sequence_key), ("ceiling: any function of the counts", count_key)):
        precision, recall, f1 = sess.label_ceiling(key, y_test)
        results.append(MethodResult(method, "reference", precision, recall, f1,
                                    int(round(recall * y_test.sum() / precision)) if precision else 0, 0.0))
    return SessionEvaluation(
        source, train.height, int(y_train.sum()), test.height, int(y_test.sum()), results
    )


def format_table(evaluation: SessionEvaluation) -> str:
    lines = [
        f"sessions: {evaluation.source}",
        f"train {evaluation.train_sessions} sessions ({evaluation.train_anomalies} anomalous, labels hidden "
        f"from unsupervised fits); test {evaluation.test_sessions} sessions "
        f"({evaluation.test_anomalies} anomalous)",
        "",
    ]
    width = max(len(r.method) for r in evaluation.results)
    header = (f"{'method':<{width}}  {'kind':<18} {'precision':>9} {'recall':>7} {'F1':>6} {'flagged':>7} "
              f"{'fit+score s':>11}")
    lines += [header, "-" * len(header)]
    for r in evaluation.results:
        seconds = f"{r.seconds:11.2f}" if r.kind != "reference" else f"{'-':>11}"
        lines.append(f"{r.method:<{width}}  {r.kind:<18} {r.precision:9.3f} {r.recall:7.3f} {r.f1:6.3f} "
                     f"{r.flagged:7d} {seconds}")
    lines += [
        "",
        "reference rows use the test labels: they are the best any detector could score when sessions with",
        "identical template sequences (or counts) must get the same verdict; they are not detectors.",
    ]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    data = args.data if args.data is not None else default_data_dir()
    try:
        path = find_sessions_file(Path(data))
        frame = load_sessions(path, session_col=args.session_column, sequence_col=args.sequence_column,
                              label_col=args.label_column, split_col=args.split_column)
        evaluation = evaluate_sessions(
            frame, session_col=args.session_column, sequence_col=args.sequence_column,
            label_col=args.label_column, anomaly_label=args.anomaly_label, split_col=args.split_column,
            seed=args.seed, source=str(path),
        )
    except (FileNotFoundError, sess.SessionDataError) as error:
        print(f"qa-assets evaluate sessions: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({**{k: v for k, v in asdict(evaluation).items() if k != "results"},
                          "results": [asdict(r) for r in evaluation.results]}, indent=2))
    else:
        print(format_table(evaluation))
    return 0


if __name__ == "__main__":  # pragma: no cover - the lead wires this into `qa-assets evaluate`
    _parser = argparse.ArgumentParser(prog="qa-assets evaluate sessions")
    add_arguments(_parser)
    sys.exit(main(_parser.parse_args()))
