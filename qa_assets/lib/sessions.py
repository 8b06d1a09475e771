"""Log-session anomaly detection: a session is the ordered list of log templates that share a session key
(a trace id, a request id, a block id). Sessions become count vectors over the template vocabulary they
were trained on (plus one "unknown template" column), and detectors score those vectors.

- `InvariantRarityDetector` (unsupervised): flags a session that contains a template rare or unseen in
  training, or that breaks a linear invariant among template counts mined from the training sessions
  (Lou et al., ATC 2010), with support measured over the sessions where the invariant's templates occur.
  Fitting never sees labels; its decision rule is fixed, not tuned on labelled data.
- `InvariantsMiningBaseline` and `PCABaseline` reproduce loglizer's Invariants Mining and PCA (Xu et al.,
  SOSP 2009) so that published-style figures can be measured in the same run; `IsolationForestDetector`
  is scikit-learn's isolation forest on the same counts.
- `SupervisedSessionClassifier`: a scikit-learn classifier on template counts and template transitions,
  with its decision threshold chosen from out-of-fold predictions on the training labels only.

Every detector is a plain picklable object with `fit` / `score` / `predict`, and carries the vocabulary it
was trained on; a `SessionCounts` built on another vocabulary is re-aligned before scoring, with templates
it does not know folded into the unknown column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Literal

import numpy as np
import polars as pl
import scipy.sparse as sp

from qa_assets.lib.frames import require_frame

START_OF_SESSION = "<session start>"
END_OF_SESSION = "<session end>"
UNKNOWN_TEMPLATE = "<unknown template>"
# Joins the two templates of a transition token; a control character no template miner emits.
TRANSITION_SEPARATOR = "\x1f"

_SESSION_INDEX = "__session_index"
_TOKEN = "__token"
_TOKEN_INDEX = "__token_index"


class SessionDataError(ValueError):
    """Session input that cannot be used; the message names the input and what to do."""


# ---------------------------------------------------------------------------------------------------------
# Session × token count matrices
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionCounts:
    """Per-session token counts: one row per session, one column per vocabulary token, and a last
    column counting tokens outside the vocabulary (templates never seen when the vocabulary was built)."""

    session_ids: pl.Series
    matrix: sp.csr_matrix  # shape (n_sessions, len(vocabulary) + 1), int64
    vocabulary: tuple[str, ...]

    @property
    def n_sessions(self) -> int:
        return self.matrix.shape[0]

    @property
    def known(self) -> sp.csr_matrix:
        """Counts of vocabulary tokens only (the unknown column dropped)."""
        return self.matrix[:, : len(self.vocabulary)].tocsr()

    @property
    def unknown(self) -> np.ndarray:
        """Per session, how many of its tokens are outside the vocabulary."""
        return np.asarray(self.matrix[:, len(self.vocabulary)].todense()).ravel()

    def rows(self, mask: np.ndarray) -> SessionCounts:
        """The sessions where `mask` is true (a boolean array with one entry per session)."""
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (self.n_sessions,):
            raise SessionDataError(
                f"row mask has shape {mask.shape}, expected ({self.n_sessions},): one entry per session"
            )
        kept_ids = self.session_ids.filter(pl.Series(mask))
        return SessionCounts(kept_ids, self.matrix[mask].tocsr(), self.vocabulary)

    def aligned_to(self, vocabulary: Sequence[str]) -> SessionCounts:
        """The same sessions counted over another vocabulary; tokens it lacks go to the unknown column."""
        vocabulary = tuple(vocabulary)
        if vocabulary == self.vocabulary:
            return self
        target = {token: index for index, token in enumerate(vocabulary)}
        unknown_column = len(vocabulary)
        destination = np.array(
            [target.get(token, unknown_column) for token in self.vocabulary] + [unknown_column],
            dtype=np.int64,
        )
        mapping = sp.csr_matrix(
            (np.ones(destination.size, dtype=np.int64), (np.arange(destination.size), destination)),
            shape=(destination.size, len(vocabulary) + 1),
        )
        return SessionCounts(self.session_ids, (self.matrix @ mapping).tocsr(), vocabulary)


def _require_columns(frame: pl.DataFrame, columns: Sequence[str], what: str) -> None:
    require_frame(frame, what, columns, f"{what} (session_col= / template_col= name its session key and "
                  "template or template id)", SessionDataError)


def _session_index(
    events: pl.DataFrame, session_col: str, session_ids: Sequence | pl.Series | None
) -> pl.DataFrame:
    """Row number of every session: the given order, else order of first appearance in `events`."""
    if events[session_col].null_count():
        raise SessionDataError(
            f"events column {session_col!r} has {events[session_col].null_count()} null session key(s); "
            "drop or quarantine records without a session key before building session counts"
        )
    if session_ids is None:
        ids = events[session_col].unique(maintain_order=True)
    else:
        ids = pl.Series(session_col, session_ids)
        if ids.is_duplicated().any():
            raise SessionDataError("session_ids has duplicates; give each session once")
        ids = ids.cast(events[session_col].dtype, strict=False)
    return pl.DataFrame({session_col: ids}).with_row_index(_SESSION_INDEX)


def _count_tokens(
    tokens: pl.DataFrame, session_col: str, vocabulary: Sequence[str] | None, session_index: pl.DataFrame
) -> SessionCounts:
    """Count a (session, token) frame into a sparse matrix over `vocabulary` (sorted distinct if None)."""
    if vocabulary is None:
        vocabulary = tokens[_TOKEN].drop_nulls().unique().sort().to_list()
    vocabulary = tuple(str(token) for token in vocabulary)
    vocabulary_index = pl.DataFrame(
        {
            _TOKEN: pl.Series(vocabulary, dtype=pl.String),
            _TOKEN_INDEX: np.arange(len(vocabulary), dtype=np.int64),
        }
    )
    cells = (
        tokens.join(session_index, on=session_col, how="inner")
        .join(vocabulary_index, on=_TOKEN, how="left")
        # null tokens (lines the miner could not template) and tokens outside the vocabulary are unknown
        .with_columns(pl.col(_TOKEN_INDEX).fill_null(len(vocabulary)))
        .group_by(_SESSION_INDEX, _TOKEN_INDEX)
        .len()
    )
    matrix = sp.csr_matrix(
        (
            cells["len"].to_numpy().astype(np.int64),
            (cells[_SESSION_INDEX].to_numpy(), cells[_TOKEN_INDEX].to_numpy()),
        ),
        shape=(session_index.height, len(vocabulary) + 1),
    )
    return SessionCounts(session_index[session_col], matrix, vocabulary)


def session_events(
    sessions: pl.DataFrame, *, session_col: str = "session_id", sequence_col: str = "templates",
    template_col: str = "template",
) -> pl.DataFrame:
    """One row per event from one row per session holding an ordered list of templates.

    Returns `session_col`, `position` (0-based order inside the session) and `template_col`.
    """
    _require_columns(sessions, [session_col, sequence_col], "sessions")
    if not isinstance(sessions.schema[sequence_col], pl.List):
        raise SessionDataError(
            f"sessions column {sequence_col!r} is {sessions.schema[sequence_col]}, "
            "expected a list of templates"
        )
    return (
        sessions.select(
            pl.col(session_col),
            pl.int_ranges(0, pl.col(sequence_col).list.len()).alias("position"),
            pl.col(sequence_col).alias(template_col),
        )
        .explode(["position", template_col])
        .drop_nulls("position")  # empty sessions explode to one null row
    )


def count_matrix(
    events: pl.DataFrame,
    *,
    session_col: str = "session_id",
    template_col: str = "template",
    vocabulary: Sequence[str] | None = None,
    session_ids: Sequence | pl.Series | None = None,
) -> SessionCounts:
    """Session × template event-count matrix from one row per log event.

    `template_col` may hold template text or template ids (counted as strings). With `vocabulary` given
    (a trained detector's `vocabulary_`), templates outside it are counted in the unknown column; without
    it the vocabulary is the sorted distinct templates. `session_ids` fixes the row order (sessions
    without events get zero rows; events of other sessions are ignored); by default rows follow first
    appearance in `events`.
    """
    _require_columns(events, [session_col, template_col], "events")
    session_index = _session_index(events, session_col, session_ids)
    tokens = events.select(pl.col(session_col), pl.col(template_col).cast(pl.String).alias(_TOKEN))
    return _count_tokens(tokens, session_col, vocabulary, session_index)


def transition_matrix(
    events: pl.DataFrame,
    *,
    session_col: str = "session_id",
    template_col: str = "template",
    order_col: str | None = None,
    vocabulary: Sequence[str] | None = None,
    session_ids: Sequence | pl.Series | None = None,
) -> SessionCounts:
    """Session × template-transition (bigram) count matrix: the order features of a session.

    Each event contributes the transition from the previous template of its session (or from the session
    start); each session adds the transition from its last template to the session end. Events are taken
    in `order_col` order within a session (a timestamp or position), else in row order. Tokens are
    `previous + TRANSITION_SEPARATOR + current`.
    """
    _require_columns(events, [session_col, template_col] + ([order_col] if order_col else []), "events")
    session_index = _session_index(events, session_col, session_ids)
    template = pl.col(template_col).cast(pl.String).fill_null(UNKNOWN_TEMPLATE).alias("t")
    ordered = events.select(session_col, template, *([pl.col(order_col)] if order_col else []))
    if order_col:
        ordered = ordered.sort(session_col, order_col, maintain_order=True)
    previous = pl.col("t").shift(1).over(session_col).fill_null(START_OF_SESSION)
    steps = ordered.select(
        pl.col(session_col), pl.concat_str(previous, pl.lit(TRANSITION_SEPARATOR), pl.col("t")).alias(_TOKEN)
    )
    endings = ordered.group_by(session_col, maintain_order=True).agg(pl.col("t").last()).select(
        pl.col(session_col),
        pl.concat_str(pl.col("t"), pl.lit(TRANSITION_SEPARATOR + END_OF_SESSION)).alias(_TOKEN),
    )
    return _count_tokens(pl.concat([steps, endings]), session_col, vocabulary, session_index)


def _unique_rows(matrix: sp.spmatrix | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct count rows and how many sessions share each: fitting on these is exact and much smaller,
    since sessions of one workflow repeat the same counts."""
    dense = matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)
    if dense.shape[0] == 0:
        return dense, np.zeros(0, dtype=np.int64)
    rows, weights = np.unique(dense, axis=0, return_counts=True)
    return rows, weights


# ---------------------------------------------------------------------------------------------------------
# Invariants among template counts
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Invariant:
    """sum(coefficients[i] * count(templates[i])) == 0 holds in `support` of the sessions it covers."""

    templates: tuple[str, ...]
    columns: tuple[int, ...]
    coefficients: tuple[int, ...]
    support: float

    def describe(self) -> str:
        """As an equation between positive terms, e.g. `count('B') = 3·count('A')`."""
        def side(sign: int) -> str:
            terms = [(abs(c), t) for c, t in zip(self.coefficients, self.templates) if c * sign > 0]
            return " + ".join(f"{c}·count({t!r})" if c != 1 else f"count({t!r})" for c, t in terms) or "0"

        return f"{side(1)} = {side(-1)}"


def _smallest_eigenvectors(gram: np.ndarray, combos: np.ndarray) -> np.ndarray:
    """For each column combination, the unit vector theta minimising ||X[:, combo] @ theta||."""
    sub_grams = gram[combos[:, :, None], combos[:, None, :]]
    _, vectors = np.linalg.eigh(sub_grams)
    return vectors[:, :, 0]


def _integer_invariants(
    rows: np.ndarray, weights: np.ndarray, combos: np.ndarray, scales: Sequence[int], min_support: float,
    conditional: bool,
) -> list[tuple[tuple[int, ...], tuple[int, ...], float]]:
    """Mine integer invariants on the given column combinations (loglizer's scaling rule).

    The smallest-eigenvalue direction of each combination's Gram matrix is scaled so its smallest entry
    becomes 1, 2 or 3 and rounded; the first scaling whose exact zero-residual support reaches
    `min_support` is kept. Support counts all sessions (loglizer) or, with `conditional`, only the
    sessions where at least one of the combination's templates occurs.
    """
    if combos.size == 0 or rows.shape[0] == 0:
        return []
    gram = rows.T @ (rows * weights[:, None])
    thetas = _smallest_eigenvectors(gram, combos)
    found: list[tuple[tuple[int, ...], tuple[int, ...], float]] = []
    # a direction with a (near) zero entry is really an invariant on fewer columns
    usable = ~(np.abs(thetas) < 1e-6).any(axis=1)
    total = weights.sum()
    pending = np.flatnonzero(usable)
    # keep memory bounded: rows × combos × width per chunk
    chunk = max(1, int(4_000_000 // max(1, rows.shape[0] * combos.shape[1])))
    for start in range(0, pending.size, chunk):
        batch = pending[start : start + chunk]
        sub = rows[:, combos[batch]]  # (rows, batch, width)
        theta = thetas[batch]
        smallest = np.argmin(np.abs(theta), axis=1)
        pivot = theta[np.arange(batch.size), smallest]
        if conditional:
            active = (sub > 0).any(axis=2)
            covered = (active * weights[:, None]).sum(axis=0)
        else:
            active = np.ones(sub.shape[:2], dtype=bool)
            covered = np.full(batch.size, total, dtype=float)
        settled = np.zeros(batch.size, dtype=bool)
        for scale in scales:
            scaled = np.rint(theta * (scale / pivot)[:, None])
            scaled[np.arange(batch.size), smallest] = scale
            residual = np.einsum("rbw,bw->rb", sub, scaled)
            holds = ((np.abs(residual) < 1e-9) & active) * weights[:, None]
            support = holds.sum(axis=0) / np.maximum(covered, 1)
            accept = ~settled & ~(scaled == 0).any(axis=1) & (support >= min_support) & (covered > 0)
            for position in np.flatnonzero(accept):
                found.append(
                    (tuple(int(c) for c in combos[batch[position]]), tuple(int(c) for c in scaled[position]),
                     float(support[position]))
                )
            settled |= accept
    return sorted(found)  # combination order, as the published search visits them


def _candidate_combos(columns: Sequence[int], width: int, found: Sequence[tuple[int, ...]]) -> np.ndarray:
    """Column combinations of `width` that contain no already-mined invariant (Apriori-style pruning)."""
    combos = np.array(list(combinations(sorted(columns), width)), dtype=np.int64).reshape(-1, width)
    keep = np.ones(len(combos), dtype=bool)
    for cols in found:  # loops over mined invariants, vectorised over combinations
        contains = np.ones(len(combos), dtype=bool)
        for column in cols:
            contains &= (combos == column).any(axis=1)
        keep &= ~contains
    return combos[keep]


def _cooccurring(combos: np.ndarray, rows: np.ndarray, weights: np.ndarray, min_support: float) -> np.ndarray:
    """Drop combinations that cannot reach `min_support` among the sessions where they occur.

    A zero-sum relation needs at least two non-zero terms, so a session where one template of the
    combination occurs without any of the others always breaks it. Those sessions are bounded from
    below by presence counts alone: sessions(i) - sum over j of sessions(i and j). A cheap test that never
    drops a combination that could hold, and removes most combinations of unrelated templates.
    """
    if combos.size == 0:
        return combos
    present = (rows > 0).astype(float)
    together = present.T @ (present * weights[:, None])  # sessions where both templates occur
    alone_lower_bound = np.zeros(len(combos))
    for position in range(combos.shape[1]):
        column = combos[:, position]
        others = np.delete(combos, position, axis=1)
        alone = together[column, column] - together[column[:, None], others].sum(axis=1)
        alone_lower_bound += np.maximum(alone, 0.0)
    active_upper_bound = together[combos, combos].sum(axis=1)
    return combos[alone_lower_bound <= (1.0 - min_support) * active_upper_bound + 1e-9]


# ---------------------------------------------------------------------------------------------------------
# Detectors
# ---------------------------------------------------------------------------------------------------------


class _SessionDetector:
    """Common plumbing: the trained vocabulary, re-alignment, `predict` from `score`."""

    vocabulary_: tuple[str, ...]
    threshold_: float

    def _check_fitted(self) -> None:
        if not hasattr(self, "vocabulary_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() on training sessions first")

    def _aligned(self, counts: SessionCounts) -> SessionCounts:
        self._check_fitted()
        return counts.aligned_to(self.vocabulary_)

    def score(self, counts: SessionCounts) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def predict(self, counts: SessionCounts) -> np.ndarray:
        """True for sessions judged anomalous (score above the fitted threshold)."""
        return self.score(counts) > self.threshold_

    def get_params(self) -> dict:
        return {name: getattr(self, name) for name in self._param_names}

    _param_names: tuple[str, ...] = ()

    def __repr__(self) -> str:
        params = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._param_names)
        return f"{type(self).__name__}({params})"


class InvariantRarityDetector(_SessionDetector):
    """Unsupervised: a session is anomalous when it shows a template that is rare or unseen in training,
    or breaks an invariant among the counts of common templates.

    - A template is rare when it occurred in fewer than `rare_fraction` of the training sessions.
    - Invariants are integer linear relations (e.g. `count(A) - count(B) = 0`, `3·count(A) - count(B) = 0`)
      among the common templates, of at most `max_invariant_size` templates, holding in at least
      `invariant_support` of the training sessions where any of their templates occurs. Training sessions
      may include anomalies: a relation only needs that support, not all sessions.
    - The score is the number of signals (rare templates present, unknown-template presence, invariants
      broken); the threshold is fixed at "any signal", so no labelled data is needed to choose it.
    """

    _param_names = ("rare_fraction", "invariant_support", "max_invariant_size", "coefficient_scales",
                    "max_invariant_templates")

    def __init__(
        self,
        rare_fraction: float = 0.01,
        invariant_support: float = 0.98,
        max_invariant_size: int = 3,
        coefficient_scales: tuple[int, ...] = (1, 2, 3),
        max_invariant_templates: int = 80,
    ) -> None:
        self.rare_fraction = rare_fraction
        self.invariant_support = invariant_support
        self.max_invariant_size = max_invariant_size
        self.coefficient_scales = coefficient_scales
        self.max_invariant_templates = max_invariant_templates

    def fit(self, counts: SessionCounts) -> InvariantRarityDetector:
        """Learn template frequencies and invariants from training sessions (labels are never used)."""
        if counts.n_sessions == 0:
            raise SessionDataError("no training sessions: fit needs at least one session")
        if not 0 < self.invariant_support <= 1 or not 0 <= self.rare_fraction < 1:
            raise ValueError("invariant_support must be in (0, 1] and rare_fraction in [0, 1)")
        known = counts.known
        self.vocabulary_ = counts.vocabulary
        self.n_training_sessions_ = counts.n_sessions
        self.session_frequency_ = np.asarray((known > 0).sum(axis=0)).ravel() / counts.n_sessions
        self.rare_templates_ = self.session_frequency_ < self.rare_fraction
        common = np.flatnonzero(~self.rare_templates_)
        # the search is combinatorial: bound it to the most frequent common templates
        by_frequency = np.argsort(-self.session_frequency_[common], kind="stable")
        common = common[by_frequency][: self.max_invariant_templates]
        rows, weights = _unique_rows(known[:, common])
        local_found: list[tuple[tuple[int, ...], tuple[int, ...], float]] = []
        for width in range(2, self.max_invariant_size + 1):
            combos = _candidate_combos(range(common.size), width, [cols for cols, _, _ in local_found])
            combos = _cooccurring(combos, rows, weights, self.invariant_support)
            local_found += _integer_invariants(rows, weights, combos, self.coefficient_scales,
                                               self.invariant_support, conditional=True)
        self.invariants_ = [
            Invariant(tuple(self.vocabulary_[common[c]] for c in cols), tuple(int(common[c]) for c in cols),
                      coefficients, support)
            for cols, coefficients, support in local_found
        ]
        self.threshold_ = 0.5  # any single signal
        return self

    def _invariant_matrix(self) -> sp.csr_matrix:
        """(vocabulary + unknown) × invariants coefficient matrix: counts @ it gives every residual."""
        rows, cols, values = [], [], []
        for index, invariant in enumerate(self.invariants_):
            rows += list(invariant.columns)
            cols += [index] * len(invariant.columns)
            values += list(invariant.coefficients)
        return sp.csr_matrix((values, (rows, cols)), shape=(len(self.vocabulary_) + 1, len(self.invariants_)))

    def signals(self, counts: SessionCounts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per session: rare templates present (n × vocabulary, bool), unknown-template count, and
        broken invariants (n × invariants, bool)."""
        counts = self._aligned(counts)
        rare_present = (counts.known[:, self.rare_templates_] > 0).toarray()
        residuals = (counts.matrix @ self._invariant_matrix()).toarray()
        return rare_present, counts.unknown, residuals != 0

    def score(self, counts: SessionCounts) -> np.ndarray:
        rare_present, unknown, broken = self.signals(counts)
        return (rare_present.sum(axis=1) + (unknown > 0) + broken.sum(axis=1)).astype(float)

    def explain(self, counts: SessionCounts) -> pl.DataFrame:
        """Why each session was flagged: `session_id`, `score`, `is_anomaly`, `reasons` (list of text)."""
        rare_present, unknown, broken = self.signals(counts)
        rare_names = [t for t, rare in zip(self.vocabulary_, self.rare_templates_) if rare]
        rare_freq = self.session_frequency_[self.rare_templates_]
        reasons: list[list[str]] = [[] for _ in range(counts.n_sessions)]
        for column in range(rare_present.shape[1]):  # loops over templates and invariants, not sessions
            text = (f"template seen in {rare_freq[column]:.2%} of training sessions: {rare_names[column]!r}"
                    if rare_freq[column] > 0 else f"template absent from training: {rare_names[column]!r}")
            for session in np.flatnonzero(rare_present[:, column]):
                reasons[session].append(text)
        for session in np.flatnonzero(unknown > 0):
            reasons[session].append(f"{int(unknown[session])} event(s) of templates never seen in training")
        for column, invariant in enumerate(self.invariants_):
            text = (f"breaks invariant {invariant.describe()} (held in {invariant.support:.1%} of the "
                    "training sessions showing these templates)")
            for session in np.flatnonzero(broken[:, column]):
                reasons[session].append(text)
        score = rare_present.sum(axis=1) + (unknown > 0) + broken.sum(axis=1)
        return pl.DataFrame({
            "session_id": counts.session_ids,
            "score": score.astype(float),
            "is_anomaly": score > self.threshold_,
            "reasons": pl.Series(reasons, dtype=pl.List(pl.String)),
        })


class InvariantsMiningBaseline(_SessionDetector):
    """Invariants Mining as loglizer implements it (its published HDFS baseline), for comparison.

    The invariant-space dimension r is estimated by SVD (directions with |X·v| < epsilon on at least
    `support` of the sessions); integer invariants are then searched over growing column combinations,
    with support counted over all sessions (all-zero columns are one-column invariants), until r are
    found. A session breaking any invariant is anomalous. Templates unseen in training are ignored, as
    loglizer's feature extractor drops them.
    """

    _param_names = ("support", "epsilon", "coefficient_scales", "max_invariant_size")

    def __init__(self, support: float = 0.98, epsilon: float = 0.5,
                 coefficient_scales: tuple[int, ...] = (1, 2, 3), max_invariant_size: int = 3) -> None:
        self.support = support
        self.epsilon = epsilon
        self.coefficient_scales = coefficient_scales
        self.max_invariant_size = max_invariant_size

    def fit(self, counts: SessionCounts) -> InvariantsMiningBaseline:
        if counts.n_sessions == 0:
            raise SessionDataError("no training sessions: fit needs at least one session")
        self.vocabulary_ = counts.vocabulary
        rows, weights = _unique_rows(counts.known)
        n_templates = rows.shape[1]
        gram = rows.T @ (rows * weights[:, None])
        _, _, directions = np.linalg.svd(gram)
        dimension = 0
        for direction in directions[::-1]:  # smallest singular values first
            near_zero = (np.abs(rows @ direction) < self.epsilon) @ weights
            if near_zero / weights.sum() < self.support:
                break
            dimension += 1
        self.invariant_space_dimension_ = dimension
        found: list[tuple[tuple[int, ...], tuple[int, ...], float]] = []
        for column in np.flatnonzero(~rows.any(axis=0)):
            found.append(((int(column),), (1,), 1.0))
        searchable = [c for c in range(n_templates) if rows[:, c].any()]
        for width in range(2, self.max_invariant_size + 1):
            if len(found) >= dimension:
                break
            combos = _candidate_combos(searchable, width, [cols for cols, _, _ in found])
            mined = _integer_invariants(rows, weights, combos, self.coefficient_scales, self.support,
                                        conditional=False)
            # loglizer stops once it holds as many invariants as the invariant space has dimensions
            found += mined[: max(0, dimension - len(found))]
        self.invariants_ = [
            Invariant(tuple(self.vocabulary_[c] for c in cols), cols, coefficients, support)
            for cols, coefficients, support in found[: max(dimension, 0)]
        ]
        self.threshold_ = 0.0
        return self

    def score(self, counts: SessionCounts) -> np.ndarray:
        known = self._aligned(counts).known
        total = np.zeros(counts.n_sessions)
        for invariant in self.invariants_:
            residual = known[:, list(invariant.columns)] @ np.array(invariant.coefficients, dtype=float)
            total += np.abs(np.asarray(residual).ravel())
        return total


def q_statistic_threshold(residual_variances: np.ndarray, c_alpha: float = 3.2905) -> float:
    """Jackson–Mudholkar Q-statistic threshold for the squared prediction error of a PCA model, from the
    variances of the residual (discarded) components; c_alpha 3.2905 is a 0.001 false-alarm rate."""
    phi = [float(np.sum(residual_variances ** power)) for power in (1, 2, 3)]
    if phi[0] <= 0 or phi[1] <= 0:
        return 0.0
    h0 = 1.0 - 2.0 * phi[0] * phi[2] / (3.0 * phi[1] ** 2)
    return phi[0] * (
        c_alpha * np.sqrt(2.0 * phi[1] * h0 ** 2) / phi[0] + 1.0 + phi[1] * h0 * (h0 - 1.0) / phi[0] ** 2
    ) ** (1.0 / h0)


class PCABaseline(_SessionDetector):
    """PCA detection (Xu et al., SOSP 2009) as loglizer runs it: tf-idf weighted, zero-mean counts; the
    normal subspace keeps `variance_kept` of the variance; a session whose squared prediction error
    exceeds the Q-statistic threshold is anomalous."""

    _param_names = ("variance_kept", "c_alpha")

    def __init__(self, variance_kept: float = 0.95, c_alpha: float = 3.2905) -> None:
        self.variance_kept = variance_kept
        self.c_alpha = c_alpha

    def _weighted(self, known: sp.csr_matrix) -> np.ndarray:
        return np.asarray(known.todense(), dtype=float) * self.idf_ - self.mean_

    def fit(self, counts: SessionCounts) -> PCABaseline:
        if counts.n_sessions == 0:
            raise SessionDataError("no training sessions: fit needs at least one session")
        self.vocabulary_ = counts.vocabulary
        known = counts.known
        n_sessions = counts.n_sessions
        document_frequency = np.asarray((known > 0).sum(axis=0)).ravel()
        self.idf_ = np.log(n_sessions / (document_frequency + 1e-8))
        self.mean_ = np.zeros(known.shape[1])
        self.mean_ = self._weighted(known).mean(axis=0)
        weighted = self._weighted(known)
        covariance = weighted.T @ weighted / n_sessions
        components, variances, _ = np.linalg.svd(covariance)
        explained = np.cumsum(variances) / max(variances.sum(), 1e-12)
        n_components = int(np.searchsorted(explained, self.variance_kept) + 1)
        self.n_components_ = min(n_components, known.shape[1])
        normal_space = components[:, : self.n_components_]
        self.residual_projection_ = np.eye(known.shape[1]) - normal_space @ normal_space.T
        self.threshold_ = q_statistic_threshold(variances[self.n_components_ :], self.c_alpha)
        return self

    def score(self, counts: SessionCounts) -> np.ndarray:
        residual = self._weighted(self._aligned(counts).known) @ self.residual_projection_
        return np.einsum("ij,ij->i", residual, residual)


class IsolationForestDetector(_SessionDetector):
    """scikit-learn's isolation forest on template counts (unknown column included), with its own
    label-free threshold (`contamination="auto"`: the offset of the original paper)."""

    _param_names = ("n_estimators", "random_state")

    def __init__(self, n_estimators: int = 200, random_state: int = 0) -> None:
        self.n_estimators = n_estimators
        self.random_state = random_state

    def fit(self, counts: SessionCounts) -> IsolationForestDetector:
        from sklearn.ensemble import IsolationForest

        self.vocabulary_ = counts.vocabulary
        self.forest_ = IsolationForest(n_estimators=self.n_estimators, contamination="auto",
                                       random_state=self.random_state).fit(counts.matrix.astype(float))
        self.threshold_ = float(-self.forest_.offset_)
        return self

    def score(self, counts: SessionCounts) -> np.ndarray:
        return -self.forest_.score_samples(self._aligned(counts).matrix.astype(float))


# ---------------------------------------------------------------------------------------------------------
# Supervised
# ---------------------------------------------------------------------------------------------------------


def precision_recall_f1(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float, float]:
    """Precision, recall and F1 of the anomaly class (0.0 where undefined)."""
    y_true = np.asarray(y_true, dtype=bool)
    y_pred = np.asarray(y_pred, dtype=bool)
    true_positives = int((y_true & y_pred).sum())
    precision = true_positives / y_pred.sum() if y_pred.sum() else 0.0
    recall = true_positives / y_true.sum() if y_true.sum() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if true_positives else 0.0
    return float(precision), float(recall), float(f1)


def best_f1_threshold(
    y_true: np.ndarray, scores: np.ndarray, sample_weight: np.ndarray | None = None
) -> float:
    """The score threshold (predict `score > threshold`) with the best F1 on labelled scores.

    Use it on training data only (e.g. out-of-fold scores). `sample_weight` counts how many sessions each
    row stands for. The result is a midpoint between adjacent distinct scores, never a training score.
    """
    y_true = np.asarray(y_true, dtype=bool)
    scores = np.asarray(scores, dtype=float)
    weights = np.ones(scores.size) if sample_weight is None else np.asarray(sample_weight, dtype=float)
    if not y_true.any():
        raise SessionDataError("best_f1_threshold needs at least one anomalous training session")
    distinct = np.unique(scores)
    candidates = np.concatenate([[distinct[0] - 1.0], (distinct[:-1] + distinct[1:]) / 2])
    # rows sorted by score, high to low: a threshold flags a prefix, so cumulative sums give every
    # candidate's true positives and flagged sessions at once
    order = np.argsort(-scores, kind="stable")
    descending = -scores[order]  # ascending, for searchsorted
    true_positives = np.concatenate([[0.0], np.cumsum(weights[order] * y_true[order])])
    flagged = np.concatenate([[0.0], np.cumsum(weights[order])])
    prefix = np.searchsorted(descending, -candidates, side="left")
    f1 = 2 * true_positives[prefix] / (flagged[prefix] + weights[y_true].sum())
    return float(candidates[int(np.argmax(f1))])


ClassifierName = Literal["decision_tree", "logistic_regression", "gradient_boosting", "random_forest"]


def _make_classifier(model: str, random_state: int):
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MaxAbsScaler
    from sklearn.tree import DecisionTreeClassifier

    if model == "decision_tree":
        return DecisionTreeClassifier(random_state=random_state)
    if model == "logistic_regression":
        # counts differ by orders of magnitude between templates: scale so the solver converges quickly
        return make_pipeline(MaxAbsScaler(), LogisticRegression(max_iter=5000))
    if model == "gradient_boosting":
        return HistGradientBoostingClassifier(random_state=random_state)
    if model == "random_forest":
        return RandomForestClassifier(n_estimators=200, random_state=random_state, n_jobs=1)
    raise ValueError(
        f"unknown model {model!r}: choose decision_tree, logistic_regression, gradient_boosting "
        "or random_forest"
    )


class SupervisedSessionClassifier(_SessionDetector):
    """A scikit-learn classifier on template counts (plus the unknown column) and, when given, template
    transition counts. The decision threshold on the anomaly probability is 0.5 by default;
    `threshold="cv"` picks the one with the best out-of-fold F1 on the training labels instead."""

    _param_names = ("model", "threshold", "cv_folds", "random_state")

    def __init__(self, model: ClassifierName = "random_forest", threshold: float | Literal["cv"] = 0.5,
                 cv_folds: int = 5, random_state: int = 0) -> None:
        self.model = model
        self.threshold = threshold
        self.cv_folds = cv_folds
        self.random_state = random_state

    def _features(self, counts: SessionCounts, transitions: SessionCounts | None) -> np.ndarray:
        parts = [self._aligned(counts).matrix]
        if self.transition_vocabulary_ is not None:
            if transitions is None:
                raise SessionDataError("this classifier was trained with transitions: pass transitions=")
            if transitions.n_sessions != counts.n_sessions:
                raise SessionDataError(
                    "counts and transitions must cover the same sessions in the same order"
                )
            parts.append(transitions.aligned_to(self.transition_vocabulary_).matrix)
        return sp.hstack(parts).toarray()

    def fit(self, counts: SessionCounts, labels: np.ndarray,
            transitions: SessionCounts | None = None) -> SupervisedSessionClassifier:
        """Fit on labelled training sessions; `labels` is true for anomalous sessions."""
        labels = np.asarray(labels, dtype=bool)
        if labels.shape != (counts.n_sessions,):
            raise SessionDataError(f"labels has shape {labels.shape}, expected ({counts.n_sessions},)")
        if labels.all() or not labels.any():
            raise SessionDataError(
                "supervised training needs both normal and anomalous sessions in the labels"
            )
        self.vocabulary_ = counts.vocabulary
        self.transition_vocabulary_ = transitions.vocabulary if transitions is not None else None
        session_features = self._features(counts, transitions)
        if self.threshold == "cv":
            from sklearn.model_selection import StratifiedKFold, cross_val_predict

            folds = min(self.cv_folds, int(labels.sum()), int((~labels).sum()))
            if folds < 2:
                raise SessionDataError("threshold='cv' needs at least two sessions of each class")
            out_of_fold = cross_val_predict(
                _make_classifier(self.model, self.random_state), session_features.astype(float), labels,
                cv=StratifiedKFold(folds, shuffle=True, random_state=self.random_state),
                method="predict_proba",
            )[:, 1]
            self.threshold_ = best_f1_threshold(labels, out_of_fold)
        else:
            self.threshold_ = float(self.threshold)
        self.classifier_ = _make_classifier(self.model, self.random_state)
        self.classifier_.fit(session_features.astype(float), labels)
        return self

    def score(self, counts: SessionCounts, transitions: SessionCounts | None = None) -> np.ndarray:
        """Probability that each session is anomalous."""
        self._check_fitted()
        return self.classifier_.predict_proba(self._features(counts, transitions).astype(float))[:, 1]

    def predict(self, counts: SessionCounts, transitions: SessionCounts | None = None) -> np.ndarray:
        return self.score(counts, transitions) > self.threshold_


# ---------------------------------------------------------------------------------------------------------
# What the labels allow
# ---------------------------------------------------------------------------------------------------------


def label_ceiling(session_keys: pl.Series | Sequence, y_true: np.ndarray) -> tuple[float, float, float]:
    """Best precision/recall/F1 that ANY detector can reach when it sees only `session_keys` (e.g. the
    session's full template sequence): sessions with equal keys must get equal predictions. Uses the
    labels being scored, so it is an upper bound for reference, never a detector.

    Flagging key groups in order of anomaly purity is optimal for F1 (maximising 2·TP / (flagged + P) is
    a ratio problem whose optimum takes every group above a purity level).
    """
    frame = pl.DataFrame({"key": pl.Series(session_keys), "anomaly": np.asarray(y_true, dtype=bool)})
    positives = int(frame["anomaly"].sum())
    if positives == 0:
        return 0.0, 0.0, 0.0
    groups = (
        frame.group_by("key")
        .agg(pl.len().alias("sessions"), pl.col("anomaly").sum().alias("anomalies"))
        .filter(pl.col("anomalies") > 0)
        .sort(pl.col("anomalies") / pl.col("sessions"), descending=True)
    )
    true_positives = groups["anomalies"].cum_sum().to_numpy()
    flagged = groups["sessions"].cum_sum().to_numpy()
    f1 = 2 * true_positives / (flagged + positives)
    best = int(np.argmax(f1))
    precision = float(true_positives[best] / flagged[best])
    return precision, float(true_positives[best] / positives), float(f1[best])
