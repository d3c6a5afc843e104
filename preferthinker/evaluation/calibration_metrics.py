"""Calibration of P(A preferred over B) on evaluation records: ECE, Brier, reliability bins, and the
fitting of ``preferthinker.calibration.Calibrator`` on held-out users.

The evaluation scores every pair in both orders (``bench.swap=true``); the two records of one pair (same
``index``, ``swapped`` False / True) give its ``pair_features``, candidate 1 being the pair's Image A as
stored in the bench file. The probability is reported for that Image A, and ``y`` = 1 when it is the
preferred one, so ECE is measured on the probability the product reports (not on max(p, 1 - p)).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from preferthinker.calibration import CalibrationError, Calibrator, fit_calibrator, heldout_split, pair_features, pair_probability

DEFAULT_BINS = 10


def expected_calibration_error(probs: Sequence[float], labels: Sequence[int], n_bins: int = DEFAULT_BINS) -> float:
    """sum over equal-width bins of [0, 1] of (bin share) x |mean probability - observed frequency|."""
    p, y = np.asarray(probs, dtype=float), np.asarray(labels, dtype=float)
    if len(p) == 0:
        raise ValueError("expected_calibration_error: no probabilities")
    idx = np.minimum((p * n_bins).astype(int), n_bins - 1)  # p = 1.0 goes to the last bin
    ece = 0.0
    for b in range(n_bins):
        sel = idx == b
        if sel.any():
            ece += sel.mean() * abs(p[sel].mean() - y[sel].mean())
    return float(ece)


def brier_score(probs: Sequence[float], labels: Sequence[int]) -> float:
    p, y = np.asarray(probs, dtype=float), np.asarray(labels, dtype=float)
    if len(p) == 0:
        raise ValueError("brier_score: no probabilities")
    return float(np.mean((p - y) ** 2))


def reliability_bins(probs: Sequence[float], labels: Sequence[int], n_bins: int = DEFAULT_BINS) -> list[dict]:
    """Per non-empty bin: its range, count, mean predicted probability and observed frequency."""
    p, y = np.asarray(probs, dtype=float), np.asarray(labels, dtype=float)
    idx = np.minimum((p * n_bins).astype(int), n_bins - 1)
    out = []
    for b in range(n_bins):
        sel = idx == b
        if sel.any():
            out.append({"lo": b / n_bins, "hi": (b + 1) / n_bins, "n": int(sel.sum()),
                        "mean_p": float(p[sel].mean()), "freq": float(y[sel].mean())})
    return out


def pairs_from_records(records: Sequence[Mapping]) -> list[dict[str, Any]]:
    """One entry per pair judged in both orders without error: ``{user_id, index, y, features}``."""
    by_index: dict[Any, dict[bool, Mapping]] = {}
    for r in records:
        by_index.setdefault(r.get("index"), {})[bool(r.get("swapped", False))] = r
    out = []
    for index, orders in by_index.items():
        first, second = orders.get(False), orders.get(True)
        if first is None or first.get("error") or first.get("label") not in ("Image A", "Image B"):
            continue
        if second is not None and second.get("error"):
            second = None
        out.append({"user_id": first.get("user_id"), "index": index, "y": int(first["label"] == "Image A"),
                    "features": pair_features(first, second)})
    return out


def calibration_report(pairs: Sequence[Mapping], calibrator: Calibrator | None, n_bins: int = DEFAULT_BINS) -> dict | None:
    """``{ece, brier, n_bins, n, calibrated, bins}`` of the pairs' probabilities (None without pairs or
    without any answer log-odds, i.e. for systems that do not score their answer: baselines)."""
    if not pairs or not any(p["features"]["has_logodds"] for p in pairs):
        return None
    probs, flags = zip(*(pair_probability(p["features"], calibrator) for p in pairs), strict=True)
    labels = [p["y"] for p in pairs]
    return {"ece": expected_calibration_error(probs, labels, n_bins), "brier": brier_score(probs, labels),
            "n_bins": int(n_bins), "n": len(pairs), "calibrated": bool(all(flags)),
            "bins": reliability_bins(probs, labels, n_bins)}


def fit_on_heldout_users(pairs_by_subset: Mapping[str, Sequence[Mapping]], fraction: float, seed: int,
                         description: Mapping[str, Any]) -> tuple[Calibrator, dict[str, list[Mapping]]]:
    """Fit on the pairs of users hashed into the calibration share (``heldout_split``), pooled over
    subsets; return the calibrator and, per subset, the remaining users' pairs for the report."""
    fit_rows, report = [], {}
    for subset, pairs in pairs_by_subset.items():
        report[subset] = [p for p in pairs if not heldout_split(p["user_id"], fraction, seed)]
        fit_rows += [p for p in pairs if heldout_split(p["user_id"], fraction, seed)]
    users = {p["user_id"] for p in fit_rows}
    if not any(p["features"]["has_logodds"] for p in fit_rows):
        raise CalibrationError(f"none of the {len(fit_rows)} calibration pairs has an <answer> to score: the model "
                               "writes no answers yet (train it further or raise generation.max_new_tokens)")
    cal = fit_calibrator([p["features"] for p in fit_rows], [p["y"] for p in fit_rows],
                         fitted_on={**dict(description), "users": len(users), "fraction": fraction, "seed": seed,
                                    "split": "users whose sha256(seed:user_id) falls below the fraction"})
    return cal, report


def add_calibration(results: dict, records: Mapping[str, Sequence[Mapping]], model_path: str, cfg: Any, run_dir: Any) -> None:
    """The evaluation's calibration step: per subset ``calibration: {ece, brier, n_bins, ...}`` in
    ``results["subsets"]`` and a summary in ``results["calibration"]``.

    ``calibration.fit=true``: fit on the users hashed into ``calibration.fit_fraction`` (pooled over the
    subsets), store ``calibration.json`` in the checkpoint folder (and the run folder), and report only
    the other users' pairs, so the figure is measured on users the calibrator never saw. Otherwise the
    checkpoint's stored calibrator (or the uncalibrated fallback) is applied to every pair."""
    import logging
    from pathlib import Path

    from preferthinker.calibration import load_calibrator

    log = logging.getLogger("preferthinker.eval")
    c = cfg.calibration
    n_bins = int(c.get("n_bins", DEFAULT_BINS))
    if n_bins < 2 or n_bins > 100:
        raise ValueError(f"calibration.n_bins={n_bins}: use 2..100")
    pairs = {s: pairs_from_records(r) for s, r in records.items()}
    summary: dict[str, Any] = {"n_bins": n_bins}
    if bool(c.get("fit", False)):
        fraction = float(c.get("fit_fraction", 0.5))
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"calibration.fit_fraction={fraction}: use a fraction strictly between 0 and 1")
        desc = {"checkpoint": str(model_path), "bench_root": str(cfg.bench.root), "subsets": list(pairs),
                "max_samples": cfg.bench.max_samples, "orders": "both (bench.swap)"}
        try:
            calibrator, pairs = fit_on_heldout_users(pairs, fraction, int(cfg.seed), desc)
        except CalibrationError as e:  # e.g. too few users: keep the evaluation's results, say why there is no fit
            log.warning("calibration not fitted: %s", e)
            results["calibration"] = {**summary, "fitted": False, "calibrated": False, "error": str(e)}
            return
        saved = [str(calibrator.save(run_dir))]
        try:
            saved.append(str(calibrator.save(model_path)))
        except OSError as e:  # a read-only checkpoint: the run folder still holds it
            log.warning("could not store the calibrator in %s (%s); it is in %s", model_path, e, saved[0])
        summary.update(fitted=True, saved=saved, coef=dict(zip(calibrator.features, calibrator.coef, strict=True)),
                       fitted_on=calibrator.fitted_on, reported_on="users not used for fitting")
    else:
        calibrator = load_calibrator(model_path)
        summary.update(fitted=False, source=str(Path(model_path) / "calibration.json") if calibrator else
                       "uncalibrated fallback: sigmoid(mean answer log-odds over both orders)")
    summary["calibrated"] = calibrator is not None
    for subset, rows in pairs.items():
        rep = calibration_report(rows, calibrator, n_bins)
        if rep is not None and subset in results["subsets"]:
            results["subsets"][subset]["calibration"] = rep
    # pooled over the subsets: with ~50 pairs a subset, 10-bin ECE is dominated by sampling noise
    # (about 0.05-0.08 even for a perfectly calibrated predictor); the pooled figure has 4x the pairs
    pooled = calibration_report([p for rows in pairs.values() for p in rows], calibrator, n_bins)
    if pooled is not None:
        summary["pooled"] = {k: v for k, v in pooled.items() if k != "bins"}
    results["calibration"] = summary
