"""Calibrated P(A over B): features from both orders, the logistic fit, the stored file, ECE / Brier, and
the evaluation's calibration step (fit on some users, report on the others)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from preferthinker.calibration import (CALIBRATION_FILE, CalibrationError, Calibrator, fallback_probability, fit_calibrator,
                                       heldout_split, load_calibrator, pair_features)
from preferthinker.evaluation.calibration_metrics import (brier_score, calibration_report, expected_calibration_error,
                                                          fit_on_heldout_users, pairs_from_records, reliability_bins)


def order(answer, lo, ta=None, tb=None):
    return {"answer": answer, "answer_logodds": lo, "total_a": ta, "total_b": tb}


def test_features_are_oriented_to_candidate_one_and_flip_under_swap():
    ab = order("Image A", 2.0, 20, 10)   # candidate 1 shown as A, wins
    ba = order("Image B", -1.0, 12, 18)  # candidate 1 shown as B, wins again
    f = pair_features(ab, ba)
    assert f == {"logodds": pytest.approx(1.5), "vote": 1.0, "margin": pytest.approx(8 / 25), "has_logodds": True}
    g = pair_features(ba, ab)  # the same pair seen from candidate 2
    assert (g["logodds"], g["vote"], g["margin"]) == (pytest.approx(-1.5), -1.0, pytest.approx(-8 / 25))
    split = pair_features(order("Image A", 3.0), order("Image A", 3.0))  # position bias: evidence cancels
    assert split["vote"] == 0 and split["logodds"] == 0
    none = pair_features(order(None, None), None)
    assert none == {"logodds": 0.0, "vote": 0.0, "margin": 0.0, "has_logodds": False} and fallback_probability(none) == 0.5
    assert pair_features(order("Image A", float("inf")), None)["logodds"] == 20.0  # clipped


def test_metrics_on_known_values():
    assert expected_calibration_error([0.9, 0.9, 0.1, 0.1], [1, 1, 0, 0], 10) == pytest.approx(0.1)
    assert expected_calibration_error([0.5, 0.5], [1, 0], 10) == 0.0
    assert brier_score([1.0, 0.0, 0.5], [1, 0, 1]) == pytest.approx(0.25 / 3)
    bins = reliability_bins([0.05, 0.95, 1.0], [0, 1, 1], 10)
    assert [(b["lo"], b["n"]) for b in bins] == [(0.0, 1), (0.9, 2)]
    with pytest.raises(ValueError, match="no probabilities"):
        expected_calibration_error([], [])


def synthetic_pairs(n, seed, scale=3.0):
    """Pairs whose true P(candidate 1) = sigmoid(z); the model's log-odds overstate z by ``scale``."""
    rng = random.Random(seed)
    rows, labels = [], []
    for i in range(n):
        z = rng.gauss(0, 1.5)
        y = int(rng.random() < 1 / (1 + np.exp(-z)))
        lo = scale * z
        rows.append(pair_features(order("Image A" if lo > 0 else "Image B", lo), order("Image B" if lo > 0 else "Image A", -lo)))
        labels.append(y)
    return rows, labels


def test_fit_recovers_an_overconfident_model_and_round_trips(tmp_path):
    rows, labels = synthetic_pairs(3000, 0)
    raw = [fallback_probability(r) for r in rows]
    cal = fit_calibrator(rows, labels, fitted_on={"what": "synthetic"})
    test_rows, test_labels = synthetic_pairs(3000, 1)
    ece_raw = expected_calibration_error([fallback_probability(r) for r in test_rows], test_labels)
    ece_cal = expected_calibration_error([cal.predict(r) for r in test_rows], test_labels)
    assert ece_cal < 0.03 < ece_raw and ece_cal < expected_calibration_error(raw, labels)
    assert cal.predict({"logodds": 1.0, "vote": 1.0, "margin": 0.2}) == pytest.approx(1 - cal.predict({"logodds": -1.0, "vote": -1.0, "margin": -0.2}))
    path = cal.save(tmp_path)
    assert path.name == CALIBRATION_FILE and load_calibrator(tmp_path) == cal
    assert json.loads(path.read_text())["fitted_on"]["what"] == "synthetic"
    assert load_calibrator(tmp_path / "nowhere") is None


def test_bad_calibration_files_and_fit_inputs(tmp_path):
    (tmp_path / CALIBRATION_FILE).write_text("{not json")
    with pytest.raises(CalibrationError, match="unreadable calibration file"):
        load_calibrator(tmp_path)
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps({"coef": [1.0]}))
    with pytest.raises(CalibrationError, match="one finite coefficient per feature"):
        load_calibrator(tmp_path)
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps({"coef": "x"}))
    with pytest.raises(CalibrationError, match="'coef'"):
        load_calibrator(tmp_path)
    rows, labels = synthetic_pairs(20, 0)
    with pytest.raises(CalibrationError, match="too few"):
        fit_calibrator(rows[:5], labels[:5])
    with pytest.raises(CalibrationError, match="labels must be 0 or 1"):
        fit_calibrator(rows, [2] * 20)


def test_separable_data_gives_finite_weights():
    rows = [pair_features(order("Image A", 5.0, 25, 0), order("Image B", -5.0, 0, 25))] * 20
    rows += [pair_features(order("Image B", -5.0, 0, 25), order("Image A", 5.0, 25, 0))] * 20
    cal = fit_calibrator(rows, [1] * 20 + [0] * 20)
    assert all(np.isfinite(cal.coef)) and 0.9 < cal.predict(rows[0]) < 1.0


def eval_records(n_users=40, per_user=5, seed=0):
    """Evaluation prediction records (both orders) of an overconfident model with known truth."""
    rng = random.Random(seed)
    recs = []
    for u in range(n_users):
        for k in range(per_user):
            idx = u * per_user + k
            z = rng.gauss(0, 1.5)
            a_wins = rng.random() < 1 / (1 + np.exp(-z))
            label = "Image A" if a_wins else "Image B"
            ans = "Image A" if z > 0 else "Image B"
            recs.append({"index": idx, "user_id": f"u{u}", "swapped": False, "label": label, "answer": ans,
                         "answer_logodds": 3 * z, "total_a": None, "total_b": None, "error": None})
            recs.append({"index": idx, "user_id": f"u{u}", "swapped": True, "label": "Image B" if a_wins else "Image A",
                         "answer": "Image B" if z > 0 else "Image A", "answer_logodds": -3 * z, "total_a": None,
                         "total_b": None, "error": None})
    return recs


def test_eval_pairs_fit_on_some_users_report_on_the_others():
    pairs = pairs_from_records(eval_records() + [{"index": 999, "swapped": False, "label": "Image A", "error": "corrupt image"}])
    assert len(pairs) == 200 and all(p["features"]["has_logodds"] for p in pairs)
    cal, report = fit_on_heldout_users({"SP_ID": pairs}, 0.5, 0, {"checkpoint": "x"})
    fit_users = {p["user_id"] for p in pairs if heldout_split(p["user_id"], 0.5, 0)}
    assert report["SP_ID"] and not fit_users & {p["user_id"] for p in report["SP_ID"]}
    assert cal.fitted_on["users"] == len(fit_users) and cal.fitted_on["checkpoint"] == "x"
    rep = calibration_report(report["SP_ID"], cal, 10)
    raw = calibration_report(report["SP_ID"], None, 10)
    assert rep["calibrated"] and not raw["calibrated"] and rep["n"] == len(report["SP_ID"]) and rep["n_bins"] == 10
    assert rep["brier"] <= raw["brier"] + 1e-9
    with pytest.raises(CalibrationError, match="has an <answer> to score"):
        fit_on_heldout_users({"SP_ID": pairs_from_records([{**r, "answer_logodds": None, "answer": None} for r in eval_records()])},
                             0.5, 0, {})
    # baselines write no log-odds: nothing to calibrate
    assert calibration_report(pairs_from_records([{**r, "answer_logodds": None} for r in eval_records(2)]), None) is None


def test_eval_fits_stores_and_reapplies_the_calibrator(tiny_model, tmp_path, monkeypatch):
    """calibration.fit=true through the real evaluation recipe: per-subset {ece, brier, n_bins} on the users
    not used for fitting, calibration.json next to the weights, a reliability diagram; a second run applies
    it. Generation is scripted (well-formed responses; the untrained model writes no answers) while the
    answer log-odds come from the real model's teacher-forced pass over those responses."""
    import shutil
    import zlib

    from preferthinker.evaluation.generate import Generator
    from preferthinker.evaluation.run import run
    from preferthinker.response import render_response
    from tests.conftest import compose
    from tests.helpers import make_mini_dataset

    profile = {"Art Styles": "Minimalism", "Color": "Crimson", "Artistic Medium": "Flat Digital", "Saturation": "Vivid", "Detail": "Smooth"}

    def scripted_decode(self, inputs):
        out = []
        for row in inputs["input_ids"]:
            h = zlib.crc32(row.numpy().tobytes())
            sa, sb = [h % 6] * 5, [(h // 7) % 6] * 5
            out.append(render_response(profile, profile, sa, sb, ["x"] * 5, ["y"] * 5, answer="Image A" if sum(sa) >= sum(sb) else "Image B"))
        return out

    monkeypatch.setattr(Generator, "decode_batch", scripted_decode)
    data = make_mini_dataset(tmp_path / "bench", n_bench=16, seed=1)
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_model, ckpt)
    over = [f"data.root={data}", f"model.path={ckpt}", "generation.batch_size=8", "metrics.n_boot=50", "metrics.similarity=false",
            "systems=[model]", "data.eval_subsets=[SP_ID,SP_OD]", "prompt.max_refs=2"]
    res = run(compose("eval", [*over, f"run_dir={tmp_path / 'fit'}", "calibration.fit=true"]))
    rows = [json.loads(l) for l in (tmp_path / "fit" / "predictions" / "model" / "SP_ID.rank0.jsonl").read_text().splitlines()]
    assert len(rows) == 32 and all(isinstance(r["answer_logodds"], float) for r in rows)
    assert res["calibration"]["fitted"] and res["calibration"]["reported_on"] == "users not used for fitting"
    stored = load_calibrator(ckpt)
    assert stored is not None and stored.fitted_on["checkpoint"] == str(ckpt) and (tmp_path / "fit" / CALIBRATION_FILE).is_file()
    reported = [m["calibration"] for m in res["subsets"].values() if "calibration" in m]
    assert reported and all({"ece", "brier", "n_bins"} <= set(c) and 0 <= c["ece"] <= 1 and c["calibrated"] for c in reported)
    assert sum(c["n"] for c in reported) < 32  # the fitting users are not in the report
    assert (tmp_path / "fit" / "reliability.png").is_file() and "## Calibration" in (tmp_path / "fit" / "results.md").read_text()
    on_disk = json.loads((tmp_path / "fit" / "results.json").read_text())
    assert on_disk["subsets"][next(iter(on_disk["subsets"]))]["calibration"]["n_bins"] == 10
    again = run(compose("eval", [*over, f"run_dir={tmp_path / 'apply'}"]))
    assert again["calibration"]["calibrated"] and not again["calibration"]["fitted"]
    assert sum(m["calibration"]["n"] for m in again["subsets"].values() if "calibration" in m) == 32
    with pytest.raises(ValueError, match="calibration.fit_fraction=1.5: use a fraction strictly between 0 and 1"):
        run(compose("eval", [*over, f"run_dir={tmp_path / 'bad'}", "calibration.fit=true", "calibration.fit_fraction=1.5"]))


def test_add_calibration_keeps_results_when_nothing_can_be_fitted(tmp_path):
    from omegaconf import OmegaConf

    from preferthinker.evaluation.calibration_metrics import add_calibration

    cfg = OmegaConf.create({"calibration": {"fit": True, "fit_fraction": 0.5, "n_bins": 10}, "bench": {"root": "b", "max_samples": None},
                            "seed": 0})
    results = {"subsets": {"SP_ID": {"accuracy": 0.5}}}
    silent = [{**r, "answer_logodds": None, "answer": None} for r in eval_records()]
    add_calibration(results, {"SP_ID": silent}, str(tmp_path), cfg, tmp_path)
    assert results["calibration"]["fitted"] is False and "writes no answers yet" in results["calibration"]["error"]
    assert results["subsets"]["SP_ID"] == {"accuracy": 0.5} and not (tmp_path / CALIBRATION_FILE).exists()
    add_calibration(results, {"SP_ID": eval_records()}, str(tmp_path), cfg, tmp_path)  # answers: fitted and stored
    assert results["calibration"]["fitted"] and load_calibrator(tmp_path) is not None
    assert results["subsets"]["SP_ID"]["calibration"]["n"] < 200
    assert results["calibration"]["pooled"]["n"] == results["subsets"]["SP_ID"]["calibration"]["n"]
