"""Calibrated P(candidate 1 preferred over candidate 2) from the model's own evidence.

A verdict alone ("Image A") says nothing about how sure the model is. Every pair is therefore judged
in both orders (candidate 1 shown as Image A, then as Image B), and three features are read from the
two responses, each oriented towards candidate 1 and averaged over the orders, so that position bias
cancels and swapping the candidates flips every feature's sign:

* ``logodds``: the answer token's log-odds, log P("A") - log P("B") at the ``<answer>`` slot
  (``evaluation.generate.Generator.answer_logodds``), clipped to +-``LOGODDS_CLIP``;
* ``vote``: +1 / -1 for the candidate named in ``<answer>``, 0 for an unreadable answer;
* ``margin``: the totals' margin (own total - other total) / 25, the largest possible margin.

A ``Calibrator`` is a logistic regression without intercept on these features
(``p = sigmoid(w . x)``; no intercept keeps ``P(1 over 2) = 1 - P(2 over 1)``), fitted on held-out
users (``fit_calibrator``; the evaluation does it with ``calibration.fit=true``) and stored as JSON
beside the weights (``<checkpoint>/calibration.json``). Without one, ``fallback_probability`` is used and
marked uncalibrated: sigmoid of the mean answer log-odds, i.e. the geometric mean of the model's own
answer probabilities over both orders (the vote when no log-odds could be read).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CALIBRATION_FILE",
    "FEATURES",
    "Calibrator",
    "CalibrationError",
    "fallback_probability",
    "fit_calibrator",
    "heldout_split",
    "load_calibrator",
    "pair_features",
    "pair_probability",
]

CALIBRATION_FILE = "calibration.json"
FEATURES = ("logodds", "vote", "margin")
LOGODDS_CLIP = 20.0  # a saturated softmax gives +-inf-ish log-odds; beyond 20 nothing changes in p
MAX_TOTAL = 25  # five elements, 0-5 each


class CalibrationError(ValueError):
    """A calibration file that cannot be used, or data a calibrator cannot be fitted on."""


def _side_vote(answer: str | None, shown_as: str) -> float:
    if answer not in ("Image A", "Image B"):
        return 0.0
    return 1.0 if answer == shown_as else -1.0


def pair_features(first: Mapping[str, Any], second: Mapping[str, Any] | None) -> dict[str, float]:
    """Features for candidate 1 over candidate 2 from the two orders' parsed responses.

    ``first``: candidate 1 shown as Image A; ``second``: candidate 1 shown as Image B (None when only one
    order was judged). Each is a mapping with ``answer``, ``total_a``, ``total_b`` and ``answer_logodds``
    (an evaluation prediction record, or ``Assessment.to_dict()`` plus the log-odds)."""
    orders = [(first, "Image A", 1.0)] + ([(second, "Image B", -1.0)] if second is not None else [])
    logodds, votes, margins = [], [], []
    for rec, shown_as, sign in orders:
        lo = rec.get("answer_logodds")
        if lo is not None and not math.isnan(float(lo)):
            logodds.append(sign * max(-LOGODDS_CLIP, min(LOGODDS_CLIP, float(lo))))
        votes.append(_side_vote(rec.get("answer"), shown_as))
        ta, tb = rec.get("total_a"), rec.get("total_b")
        if ta is not None and tb is not None:
            margins.append(sign * (float(ta) - float(tb)) / MAX_TOTAL)
    return {"logodds": float(np.mean(logodds)) if logodds else 0.0, "vote": float(np.mean(votes)),
            "margin": float(np.mean(margins)) if margins else 0.0, "has_logodds": bool(logodds)}


def _sigmoid(z: np.ndarray | float) -> np.ndarray | float:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


def fallback_probability(features: Mapping[str, float]) -> float:
    """The documented uncalibrated probability: sigmoid(mean answer log-odds), else (vote + 1) / 2."""
    if features.get("has_logodds", True):
        return float(_sigmoid(features["logodds"]))
    return (float(features["vote"]) + 1.0) / 2.0


@dataclass
class Calibrator:
    """``p = sigmoid(sum_k coef[k] * features[k])`` over ``FEATURES``; ``fitted_on`` describes the data."""

    coef: list[float]
    features: list[str] = field(default_factory=lambda: list(FEATURES))
    fitted_on: dict[str, Any] = field(default_factory=dict)
    kind: str = "logistic (no intercept) on both-order evidence"
    version: int = 1

    def predict(self, features: Mapping[str, float]) -> float:
        z = sum(c * float(features[name]) for c, name in zip(self.coef, self.features, strict=True))
        return float(_sigmoid(z))

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, folder: str | os.PathLike) -> Path:
        path = Path(folder) / CALIBRATION_FILE
        tmp = path.with_suffix(".json.tmp")  # never leave a half-written calibrator next to the weights
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path

    @classmethod
    def from_dict(cls, rec: Mapping[str, Any], where: str = "calibration") -> Calibrator:
        try:
            feats = [str(f) for f in rec.get("features", FEATURES)]
            coef = [float(c) for c in rec["coef"]]
        except (KeyError, TypeError, ValueError) as e:
            raise CalibrationError(f"{where}: field 'coef' must be a list of numbers ({e})") from None
        unknown = [f for f in feats if f not in FEATURES]
        if unknown or len(coef) != len(feats) or not all(math.isfinite(c) for c in coef):
            raise CalibrationError(f"{where}: needs one finite coefficient per feature of {list(FEATURES)}; "
                                   f"got features {feats}, coef {coef}")
        return cls(coef=coef, features=feats, fitted_on=dict(rec.get("fitted_on") or {}),
                   kind=str(rec.get("kind", cls.kind)), version=int(rec.get("version", 1)))


def load_calibrator(folder: str | os.PathLike | None) -> Calibrator | None:
    """The calibrator stored in a checkpoint folder (or a LoRA adapter's parent), or None if there is none."""
    if folder is None:
        return None
    base = Path(folder).expanduser()
    for path in (base / CALIBRATION_FILE, base.parent / CALIBRATION_FILE if base.name == "adapter" else None):
        if path is not None and path.is_file():
            try:
                rec = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise CalibrationError(f"{path}: unreadable calibration file ({e}); refit it or delete it") from None
            if not isinstance(rec, dict):
                raise CalibrationError(f"{path}: expected a JSON object, got {type(rec).__name__}")
            return Calibrator.from_dict(rec, where=str(path))
    return None


def pair_probability(features: Mapping[str, float], calibrator: Calibrator | None) -> tuple[float, bool]:
    """(P(candidate 1 preferred), calibrated?) for one pair's features."""
    if calibrator is None:
        return fallback_probability(features), False
    return calibrator.predict(features), True


def fit_calibrator(rows: Sequence[Mapping[str, float]], labels: Sequence[int], *, l2: float = 1e-2,
                   fitted_on: Mapping[str, Any] | None = None, iterations: int = 50) -> Calibrator:
    """Fit the logistic calibrator by Newton's method (a 3x3 system per step: no optimiser dependency).

    ``rows``: ``pair_features`` of each pair; ``labels``: 1 where candidate 1 is the preferred one. The
    small ridge ``l2`` keeps the weights finite when the evidence separates the data perfectly (a
    trained model on easy pairs), where plain maximum likelihood would diverge to 0/1 probabilities."""
    y = np.asarray(labels, dtype=float)
    if len(rows) != len(y):
        raise CalibrationError(f"fit_calibrator: {len(rows)} feature rows but {len(y)} labels")
    if len(y) < 10:
        raise CalibrationError(f"fit_calibrator: {len(y)} pairs are too few to fit a calibrator (need >= 10)")
    if not set(np.unique(y)) <= {0.0, 1.0}:
        raise CalibrationError("fit_calibrator: labels must be 0 or 1 (1 = candidate 1 preferred)")
    x = np.asarray([[float(r[f]) for f in FEATURES] for r in rows])
    w = np.zeros(x.shape[1])
    n = len(y)
    for _ in range(iterations):
        p = _sigmoid(x @ w)
        grad = x.T @ (p - y) / n + l2 * w
        hess = (x * (p * (1 - p))[:, None]).T @ x / n + l2 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return Calibrator(coef=[round(float(c), 6) for c in w], fitted_on={"pairs": n, "l2": l2, **dict(fitted_on or {})})


def heldout_split(user_id: Any, fraction: float, seed: int = 0) -> bool:
    """True when ``user_id`` belongs to the calibration (fitting) users. A stable hash of the id, so the
    split is the same in every run and process and a user's pairs never straddle fit and report."""
    digest = hashlib.sha256(f"{seed}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction
