"""Rankings of N candidates from round-robin comparisons (the arithmetic of ``Assessor.rank``).

Scheme (position-debiased round robin): every unordered pair {i, j} is assessed in both orders, (A=i,
B=j) and (A=j, B=i). In each order the preferred candidate gets a win indicator 1 and the other 0; an
order whose ``<answer>`` cannot be read gives both 0.5. A candidate's pair score is the mean of its two
indicators (a pair judged differently in the two orders, position bias, is a draw) and its ``wins`` the
sum of its pair scores over all opponents (0..N-1). The two orders of a pair also give a probability
P(i preferred over j) (``preferthinker.calibration``); a candidate's ``probability`` is its mean over
opponents, i.e. the chance it beats an opponent drawn at random from the others. Candidates are ordered
by ``wins``, then ``probability``, then mean total-score margin, then mean own total; entries equal on
all four share a rank.

``write_ranking`` writes a ranking as JSON or CSV (one row per candidate: rank, score, probability,
rationale), optionally only the ``top_k`` best.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from preferthinker.calibration import Calibrator, pair_features, pair_probability
from preferthinker.evaluation.metrics import _mean
from preferthinker.profile import ELEMENTS
from preferthinker.response import Assessment

__all__ = ["Comparison", "RankEntry", "Ranking", "candidate_rationale", "pair_win_probability", "rank_from_comparisons", "write_ranking"]

SCHEME = ("position-debiased round robin: every pair in both orders; pair score = mean per-order win (1 win, 0 loss, "
          "0.5 unparseable); rank by summed pair scores, then mean P(beats opponent), then mean total margin, then mean total")


@dataclass
class Comparison:
    """One generation of ``rank``: candidate ``a`` shown as Image A, candidate ``b`` as Image B;
    ``logodds``: the answer token's log P(A) - log P(B) (None when unscored or no answer)."""

    a: int
    b: int
    assessment: Assessment
    logodds: float | None = None

    @property
    def parsed(self) -> bool:
        return self.assessment.answer is not None

    @property
    def winner(self) -> int | None:
        """Index of the preferred candidate, or None when the answer is unreadable (a tie)."""
        ans = self.assessment.answer
        return None if ans is None else (self.a if ans == "Image A" else self.b)

    def outcome(self, candidate: int) -> float:
        """Win indicator for ``candidate``: 1 win, 0 loss, 0.5 unparseable."""
        return 0.5 if self.winner is None else float(self.winner == candidate)

    def total(self, candidate: int) -> int | None:
        return self.assessment.total_a if candidate == self.a else self.assessment.total_b

    def evidence(self) -> dict[str, Any]:
        """The fields ``calibration.pair_features`` reads."""
        x = self.assessment
        return {"answer": x.answer, "total_a": x.total_a, "total_b": x.total_b, "answer_logodds": self.logodds}

    def to_dict(self, labels: Sequence[str] | None = None) -> dict:
        out = {"a": self.a, "b": self.b, "winner": self.winner, "parsed": self.parsed, "answer_logodds": self.logodds,
               "assessment": self.assessment.to_dict()}
        if labels is not None:
            out.update(candidate_a=labels[self.a], candidate_b=labels[self.b],
                       winner_candidate=None if self.winner is None else labels[self.winner])
        return out


@dataclass
class RankEntry:
    """One candidate's place in a ranking.

    ``wins``: sum over opponents of the pair score (mean of the two per-order win indicators), 0..N-1.
    ``probability``: mean over opponents of P(this candidate preferred over the opponent).
    ``mean_margin``: mean of (own total - opponent total) over comparisons with both totals readable.
    ``mean_total``: mean of the candidate's own total over comparisons where it is readable.
    ``pairwise``: one record per opponent with both orders' outcomes and totals and the pair probability.
    """

    candidate: str
    index: int
    rank: int
    wins: float
    mean_total: float | None
    mean_margin: float | None
    pairwise: list[dict] = field(default_factory=list)
    probability: float | None = None
    rationale: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class Ranking(list):
    """A list of ``RankEntry``, best first, with ``comparisons`` (every generation), ``notes``,
    ``candidates`` (labels in input order), ``calibrated`` (whether the probabilities come from a fitted
    calibrator) and ``timing`` (pairs/s of the generation). ``to_dict()`` is the JSON form."""

    def __init__(self, entries: Iterable[RankEntry], comparisons: list[Comparison], candidates: list[str], notes: list[str],
                 calibrated: bool = False):
        super().__init__(entries)
        self.comparisons = comparisons
        self.candidates = candidates
        self.notes = notes
        self.calibrated = calibrated
        self.timing: dict[str, Any] = {}

    def to_dict(self, top_k: int | None = None) -> dict:
        return {
            "scheme": SCHEME,
            "probability": "calibrated" if self.calibrated else "uncalibrated (sigmoid of the mean answer log-odds; no calibration.json)",
            "candidates": list(self.candidates),
            "ranking": [e.to_dict() for e in (self[:top_k] if top_k else self)],
            "comparisons": [c.to_dict(self.candidates) for c in self.comparisons],
            "timing": dict(self.timing),
            "notes": list(self.notes),
        }


def candidate_rationale(comparisons: Sequence[Comparison], i: int) -> str | None:
    """The model's per-element scores and rationales for candidate ``i``, from the first comparison in
    which it was written readably ("Color 4: warm tones match; ...")."""
    for c in comparisons:
        if i not in (c.a, c.b):
            continue
        x = c.assessment
        scores, why = (x.scores_a, x.rationales_a) if i == c.a else (x.scores_b, x.rationales_b)
        if scores and why:
            return "; ".join(f"{e} {s}: {' '.join(str(w).split())}" for e, s, w in zip(ELEMENTS, scores, why, strict=False))
    return None


def pair_win_probability(comparisons: Sequence[Comparison], i: int, j: int, calibrator: Calibrator | None) -> float | None:
    """P(candidate i preferred over j) from their comparisons in either or both orders (None if none)."""
    first = next((c for c in comparisons if (c.a, c.b) == (i, j)), None)
    second = next((c for c in comparisons if (c.a, c.b) == (j, i)), None)
    if first is None and second is None:
        return None
    if first is None:  # only (j, i) was judged: P(i over j) = 1 - P(j over i)
        return 1.0 - pair_probability(pair_features(second.evidence(), None), calibrator)[0]
    return pair_probability(pair_features(first.evidence(), second.evidence() if second else None), calibrator)[0]


def rank_from_comparisons(comparisons: Sequence[Comparison], candidates: Sequence[str],
                          calibrator: Calibrator | None = None) -> Ranking:
    """Aggregate round-robin comparisons into a ranking (the scheme in the module docstring)."""
    n = len(candidates)
    stats = []
    for i in range(n):
        mine = [c for c in comparisons if i in (c.a, c.b)]
        totals = [t for c in mine if (t := c.total(i)) is not None]
        margins = [c.total(i) - c.total(c.b if c.a == i else c.a) for c in mine
                   if c.total(i) is not None and c.total(c.b if c.a == i else c.a) is not None]
        pairwise, wins, probs = [], 0.0, []
        for j in range(n):
            if j == i:
                continue
            both = [c for c in mine if j in (c.a, c.b)]
            if not both:
                continue
            score = _mean([c.outcome(i) for c in both])
            wins += score
            prob = pair_win_probability(both, i, j, calibrator)
            if prob is not None:
                probs.append(prob)
            pairwise.append({
                "opponent": candidates[j], "opponent_index": j, "score": score, "probability": prob,
                "orders": [{"position": "Image A" if c.a == i else "Image B", "answer": c.assessment.answer,
                            "outcome": c.outcome(i), "total": c.total(i), "opponent_total": c.total(j),
                            "answer_logodds": c.logodds} for c in both],
                "agree": len({c.winner for c in both}) == 1 and both[0].winner is not None,
            })
        stats.append(RankEntry(candidates[i], i, 0, wins, _mean(totals), _mean(margins), pairwise, _mean(probs),
                               candidate_rationale(mine, i)))

    def key(e: RankEntry) -> tuple:
        return tuple(-(v if v is not None else float("-inf")) for v in (e.wins, e.probability, e.mean_margin, e.mean_total))

    ordered = sorted(stats, key=lambda e: (*key(e), e.index))
    for pos, e in enumerate(ordered):  # competition ranking: equal keys share a rank (1, 2, 2, 4)
        e.rank = ordered[pos - 1].rank if pos and key(ordered[pos - 1]) == key(e) else pos + 1
    notes = []
    unparsed = sum(not c.parsed for c in comparisons)
    if unparsed:
        notes.append(f"{unparsed} of {len(comparisons)} comparisons had no readable <answer> and counted as ties (0.5 each)")
    pairs = {frozenset((c.a, c.b)) for c in comparisons}
    split = sum(1 for e in stats for p in e.pairwise if p["opponent_index"] > e.index
                and None not in (o["answer"] for o in p["orders"]) and len({o["outcome"] for o in p["orders"]}) > 1)
    if split:
        notes.append(f"{split} of {len(pairs)} pairs got opposite answers in the two orders (position bias) and count as draws")
    if len({e.rank for e in ordered}) < n:
        notes.append("some candidates tie on wins, probability, margin and total and share a rank")
    return Ranking(ordered, list(comparisons), list(candidates), notes, calibrated=calibrator is not None)


CSV_COLUMNS = ("rank", "candidate", "score", "probability", "mean_total", "mean_margin", "rationale")


def ranking_rows(ranking: Ranking, top_k: int | None = None) -> list[dict[str, Any]]:
    """One flat row per candidate (best first): ``score`` is ``wins`` (0..N-1)."""
    return [{"rank": e.rank, "candidate": e.candidate, "score": e.wins,
             "probability": None if e.probability is None else round(e.probability, 4),
             "mean_total": e.mean_total, "mean_margin": e.mean_margin, "rationale": e.rationale}
            for e in (ranking[:top_k] if top_k else ranking)]


def write_ranking(ranking: Ranking, path: str | os.PathLike, *, top_k: int | None = None, header: dict | None = None) -> Path:
    """Write ``ranking`` to ``path``: ``.csv`` -> one row per candidate, anything else -> the JSON document
    (``header`` first: model, settings, inputs). Written to a temporary file and renamed, so an
    interrupted write never leaves a truncated result."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise FileNotFoundError(f"output folder does not exist: {path.parent}")
    if path.suffix.lower() == ".csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(ranking_rows(ranking, top_k))
        text = buf.getvalue()
    else:
        text = json.dumps({**(header or {}), **ranking.to_dict(top_k)}, indent=2, ensure_ascii=False, default=str) + "\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
