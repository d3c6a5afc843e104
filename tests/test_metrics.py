import json
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from preferthinker.evaluation.metrics import (  # noqa: E402
    accuracy_by_margin,
    metrics_by_subset,
    paired_bootstrap_diff,
    read_records,
    subset_metrics,
    wilson_interval,
)
from preferthinker.profile import ELEMENTS  # noqa: E402

A, B = "Image A", "Image B"


def rec(i, user, label, answer, *, swapped=False, pair=None, fmt=True, error=None, subset="SP_ID", **extra):
    r = {
        "subset": subset, "index": i, "pair_id": pair or f"p{i}", "user_id": user, "swapped": swapped,
        "label": label, "raw": "", "answer": answer, "format_ok": fmt, "scores_a": None, "scores_b": None,
        "total_a": None, "total_b": None, "pred_preference": None, "pred_non_preference": None,
        "true_preference": None, "true_non_preference": None, "error": error,
    }
    r.update(extra)
    return r


def hand_set():
    # u1: 3/4 correct, u2: 1/2 correct, u3: 0/2 (one unparsed answer, one corrupt input).
    return [
        rec(0, "u1", A, A), rec(1, "u1", B, B), rec(2, "u1", A, A), rec(3, "u1", B, A),
        rec(4, "u2", A, A), rec(5, "u2", B, A, fmt=False),
        rec(6, "u3", A, None, fmt=False), rec(7, "u3", B, B, error="corrupt image"),
    ]


def test_hand_computed_accuracy_and_rates():
    m = subset_metrics(hand_set(), n_boot=500, compute_similarity=False)
    assert m["n"] == 8 and m["n_users"] == 3 and m["bootstrap_unit"] == "user"
    assert m["n_correct"] == 4 and m["accuracy"] == pytest.approx(0.5)  # the corrupt record counts as wrong
    assert m["macro_accuracy"] == pytest.approx((0.75 + 0.5 + 0.0) / 3)
    assert m["parse_fail_rate"] == pytest.approx(1 / 8)
    assert m["format_fail_rate"] == pytest.approx(2 / 8)
    assert m["n_errors"] == 1 and m["error_rate"] == pytest.approx(1 / 8)
    assert m["label_a_share"] == pytest.approx(4 / 8)
    assert m["answer_a_share"] == pytest.approx(5 / 7)
    lo, hi = m["ci95"]
    assert 0.0 <= lo <= m["accuracy"] <= hi <= 1.0
    assert m["macro_ci95"][0] <= m["macro_accuracy"] <= m["macro_ci95"][1]
    assert m["per_user_accuracy_quantiles"]["p50"] == pytest.approx(0.5)
    assert m["users_above_chance"] == pytest.approx(1 / 3)
    assert "position_consistency" not in m  # no swapped twins
    json.dumps(m)  # JSON-serialisable


def test_bootstrap_deterministic_and_narrows_with_n():
    rng = np.random.default_rng(1)

    def make(n_users, per_user=10):
        out = []
        for u in range(n_users):
            for k in range(per_user):
                lab = A if rng.random() < 0.5 else B
                ans = lab if rng.random() < 0.7 else (B if lab == A else A)
                out.append(rec(len(out), f"u{u}", lab, ans))
        return out

    small, big = make(8), make(200)
    ms, mb = subset_metrics(small, compute_similarity=False), subset_metrics(big, compute_similarity=False)
    for m in (ms, mb):
        assert m["ci95"][0] <= m["accuracy"] <= m["ci95"][1]
    width = lambda m: m["ci95"][1] - m["ci95"][0]  # noqa: E731
    assert width(mb) < width(ms) / 2
    assert subset_metrics(small, seed=3, compute_similarity=False)["ci95"] == subset_metrics(small, seed=3, compute_similarity=False)["ci95"]
    assert subset_metrics(small, seed=3, compute_similarity=False)["ci95"] != subset_metrics(small, seed=4, compute_similarity=False)["ci95"]


def test_cluster_bootstrap_wider_than_sample_bootstrap_for_clustered_data():
    # users are all-right or all-wrong: resampling users must give a wider interval than resampling samples
    recs = [rec(i, f"u{i // 10}", A, A if (i // 10) % 2 == 0 else B) for i in range(200)]
    by_user = subset_metrics(recs, compute_similarity=False)
    no_user = subset_metrics([dict(r, user_id=None) for r in recs], compute_similarity=False)
    assert no_user["bootstrap_unit"] == "sample" and no_user["n_users"] == 0 and no_user["n_clusters"] == 200
    assert (by_user["ci95"][1] - by_user["ci95"][0]) > 2 * (no_user["ci95"][1] - no_user["ci95"][0])


def test_position_bias_on_hand_made_swapped_set():
    recs = [
        # p1: right in both orders -> consistent
        rec(0, "u1", A, A, pair="p1"), rec(0, "u1", B, B, pair="p1", swapped=True),
        # p2: always picks the first slot -> inconsistent, 1 of 2 right
        rec(1, "u1", A, A, pair="p2"), rec(1, "u1", B, A, pair="p2", swapped=True),
        # p3: wrong in both orders but consistent
        rec(2, "u2", B, A, pair="p3"), rec(2, "u2", A, B, pair="p3", swapped=True),
        # p4: no answer in swapped order -> inconsistent, 1 of 2 right
        rec(3, "u2", B, B, pair="p4"), rec(3, "u2", A, None, pair="p4", swapped=True),
    ]
    m = subset_metrics(recs, n_boot=300, compute_similarity=False)
    assert m["n"] == 4 and m["n_swapped"] == 4 and m["n_swap_pairs"] == 4
    assert m["accuracy"] == pytest.approx(3 / 4)
    assert m["position_consistency"] == pytest.approx(2 / 4)
    # parsed answers across both orders: A, B, A, A, A, B, B -> 4 of 7 in the first slot
    assert m["first_slot_win_rate"] == pytest.approx(4 / 7)
    assert m["swap_avg_accuracy"] == pytest.approx((1 + 0.5 + 0 + 0.5) / 4)
    assert m["swapped_accuracy"] == pytest.approx(1 / 4)
    assert m["swap_avg_ci95"][0] <= m["swap_avg_accuracy"] <= m["swap_avg_ci95"][1]


def test_profiles_similarity_and_element_match():
    true = {"Art Styles": "Pixel Art, Watercolor", "Color": "Warm", "Artistic Medium": "Oil Painting",
            "Saturation": "High", "Detail": "Minimal"}
    non = {"Art Styles": "Cubism", "Color": "Cool", "Artistic Medium": "Charcoal", "Saturation": "Low", "Detail": "Intricate"}
    partial = dict(true, **{"Art Styles": "watercolor, pixel art", "Color": "Cool"})
    recs = [
        rec(0, "u1", A, A, pred_preference=dict(true), true_preference=true, pred_non_preference=non, true_non_preference=non),
        rec(1, "u1", A, A, pred_preference=partial, true_preference=true, pred_non_preference=None, true_non_preference=non),
        rec(2, "u2", A, B, pred_preference=None, true_preference=true, pred_non_preference=dict(non), true_non_preference=non),
    ]
    m = subset_metrics(recs, n_boot=100)
    assert m["n_profiles"] == 3 and m["pred_coverage"] == pytest.approx(2 / 3)
    # identical -> 100, partial -> between, missing -> 0 in the mean
    assert m["pred_similarity_parsed"] > m["pred_similarity"]
    assert m["pred_similarity"] == pytest.approx(m["pred_similarity_parsed"] * 2 / 3, rel=1e-6)
    assert 60 < m["pred_similarity"] < 2 / 3 * 100 + 1e-6
    assert m["pred_similarity_non"] == pytest.approx(2 / 3 * 100, abs=1e-3)
    assert m["element_match"] == {"Art Styles": pytest.approx(2 / 3), "Color": pytest.approx(1 / 3),
                                  "Artistic Medium": pytest.approx(2 / 3), "Saturation": pytest.approx(2 / 3),
                                  "Detail": pytest.approx(2 / 3)}
    assert m["profile_exact_match"] == pytest.approx(1 / 3)
    assert all(v == pytest.approx(2 / 3) for v in m["element_match_non"].values())


def test_element_score_agreement_and_margin():
    recs = [
        rec(0, "u1", A, A, scores_a=[5, 3, 2, 4, 1], scores_b=[1, 3, 4, 4, 2], total_a=15, total_b=14,
            true_scores_a=[5, 2, 1, 4, 0], true_scores_b=[0, 2, 5, 3, 0]),
        rec(1, "u1", B, B, scores_a=[0, 0, 0, 0, 0], scores_b=[5, 5, 5, 5, 5], total_a=0, total_b=25,
            true_scores_a=[0, 1, 0, 0, 0], true_scores_b=[5, 0, 5, 5, 5]),
        rec(2, "u2", A, B, scores_a=None, scores_b=None, total_a=None, total_b=None,
            true_scores_a=[5, 5, 5, 5, 5], true_scores_b=[0, 0, 0, 0, 0]),
        rec(3, "u2", A, B, scores_a=[1, 1, 1, 1, 1], scores_b=[2, 1, 1, 1, 1]),  # totals from scores: 5 vs 6
    ]
    m = subset_metrics(recs, n_boot=100)
    assert m["n_score_pairs"] == 3
    # element-wise: rec0 agrees on Art Styles(+,+), Color(0,0), Medium(-,-), Saturation(0 vs +: no), Detail(- vs 0: no)
    # rec1: Art(-,-) yes, Color(- vs +) no, Medium yes, Saturation yes, Detail yes; rec2: no prediction
    assert m["element_score_agreement"] == {
        "Art Styles": pytest.approx(2 / 3), "Color": pytest.approx(1 / 3), "Artistic Medium": pytest.approx(2 / 3),
        "Saturation": pytest.approx(1 / 3), "Detail": pytest.approx(1 / 3)}
    rows = {r["bin"]: r for r in m["accuracy_by_margin"]}
    assert rows["1"]["n"] == 2 and rows["1"]["accuracy"] == pytest.approx(0.5)
    assert rows["8+"]["n"] == 1 and rows["8+"]["accuracy"] == 1.0
    assert rows["0"]["n"] == 0 and rows["0"]["accuracy"] is None
    assert sum(r["n"] for r in m["accuracy_by_margin"]) == 3
    assert m["answer_total_consistency"] == pytest.approx(1.0)
    custom = accuracy_by_margin(recs, bins=(0, 10))
    assert [(r["bin"], r["n"]) for r in custom] == [("0-9", 2), ("10+", 1)]
    with pytest.raises(ValueError):
        accuracy_by_margin(recs, bins=(3, 1))


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(10, 10)
    assert hi == pytest.approx(1.0) and lo == pytest.approx(0.7225, abs=1e-4)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_paired_bootstrap_diff():
    a = [rec(i, f"u{i % 5}", A, A) for i in range(40)]                           # all right
    b = [rec(i, f"u{i % 5}", A, A if i % 2 == 0 else B) for i in range(40)]      # half right
    d = paired_bootstrap_diff(a, b, n_boot=1000, seed=0)
    assert d["diff"] == pytest.approx(0.5) and d["acc_a"] == 1.0 and d["acc_b"] == 0.5
    assert d["ci95"][0] <= d["diff"] <= d["ci95"][1] and d["significant"] and d["n"] == 40 and d["n_users"] == 5
    same = paired_bootstrap_diff(b, b, n_boot=200)
    assert same["diff"] == 0.0 and same["ci95"] == [0.0, 0.0] and not same["significant"]
    assert paired_bootstrap_diff(a, b, n_boot=300, seed=7) == paired_bootstrap_diff(a, b, n_boot=300, seed=7)
    # only the shared pairs are compared
    d2 = paired_bootstrap_diff(a[:10], b, n_boot=100)
    assert d2["n"] == 10
    with pytest.raises(ValueError, match="share no pair"):
        paired_bootstrap_diff(a, [rec(0, "u", A, A, pair="other")], n_boot=10)


def test_bad_label_and_grouping(tmp_path):
    with pytest.raises(ValueError, match="label"):
        subset_metrics([rec(0, "u", "A", "Image A")], compute_similarity=False)
    recs = hand_set() + [rec(0, "u9", A, A, subset="PICKAPIC")]
    by = metrics_by_subset(recs, n_boot=50, compute_similarity=False)
    assert list(by) == ["SP_ID", "PICKAPIC"] and by["PICKAPIC"]["accuracy"] == 1.0 and by["SP_ID"]["n"] == 8
    path = tmp_path / "preds.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n\n")
    assert read_records(path) == recs
    empty = subset_metrics([], compute_similarity=False)
    assert empty["n"] == 0 and empty["accuracy"] is None
    # answers outside the two labels count as unparsed
    odd = subset_metrics([rec(0, "u", A, "image a")], compute_similarity=False)
    assert odd["accuracy"] == 0.0 and odd["parse_fail_rate"] == 1.0
    assert ELEMENTS[0] == "Art Styles"


def test_format_fail_rate_only_over_flagged_records():
    recs = [rec(0, "u", A, A), rec(1, "u", A, A, fmt=False), rec(2, "u", B, B, fmt=None)]
    assert subset_metrics(recs, n_boot=10, compute_similarity=False)["format_fail_rate"] == pytest.approx(1 / 2)
    bare = [{"subset": "PICKAPIC", "index": 0, "pair_id": "x", "label": A, "answer": B}]
    m = subset_metrics(bare, n_boot=10, compute_similarity=False)
    assert m["format_fail_rate"] is None and m["accuracy"] == 0.0 and m["bootstrap_unit"] == "sample"


def test_paired_similarity_diff_is_clustered_and_signed():
    from preferthinker.evaluation.metrics import paired_similarity_diff
    from preferthinker.profile import ELEMENTS

    class Emb:  # deterministic stand-in: one-hot per distinct text, so similarity is 1 for an exact match else 0
        def __init__(self):
            self.ids = {}

        def embed(self, texts):
            import numpy as np

            for t in texts:
                self.ids.setdefault(t, len(self.ids))
            out = np.zeros((len(texts), 64))
            for i, t in enumerate(texts):
                out[i, self.ids[t] % 64] = 1.0
            return out

    truth = {e: "x" for e in ELEMENTS}
    wrong = {e: "y" for e in ELEMENTS}
    rows_a = [{"subset": "S", "pair_id": f"S:{i}", "user_id": f"u{i}", "swapped": False, "true_preference": truth, "pred_preference": truth}
              for i in range(20)]
    rows_b = [{**r, "pred_preference": wrong if i % 2 else None} for i, r in enumerate(rows_a)]
    res = paired_similarity_diff(rows_a, rows_b, Emb(), n_boot=200, seed=0)
    assert res["n"] == 20 and res["pred_a"] == 100.0 and res["pred_b"] == 0.0 and res["diff"] == 100.0 and res["significant"]
    assert paired_similarity_diff([{**r, "true_preference": None} for r in rows_a], rows_b, Emb()) is None


def test_paired_average_diff_is_the_mean_of_subset_diffs_with_a_stratified_interval():
    from preferthinker.evaluation.metrics import paired_average_diff

    # S1: A right everywhere, B half right (+0.5); S2: both right (0.0); S3 only in A (not comparable)
    a = {"S1": [rec(i, f"a{i % 10}", A, A, subset="S1") for i in range(40)],
         "S2": [rec(i, f"b{i % 10}", B, B, subset="S2") for i in range(40)],
         "S3": [rec(0, "c", A, A, subset="S3")]}
    b = {"S1": [rec(i, f"a{i % 10}", A, A if i % 2 == 0 else B, subset="S1") for i in range(40)],
         "S2": [rec(i, f"b{i % 10}", B, B, subset="S2") for i in range(40)]}
    d = paired_average_diff(a, b, n_boot=500, seed=3)
    assert d["metric"] == "accuracy" and d["diff"] == pytest.approx(0.25) and d["subsets"] == {"S1": 0.5, "S2": 0.0}
    assert d["n"] == 80 and d["n_users"] == 20 and d["significant"] and 0 < d["ci95"][0] <= 0.25 <= d["ci95"][1]
    flipped = paired_average_diff(b, a, n_boot=500, seed=3)
    assert flipped["diff"] == pytest.approx(-0.25) and flipped["ci95"] == pytest.approx([-d["ci95"][1], -d["ci95"][0]])
    assert paired_average_diff(a, b, n_boot=200, seed=1) == paired_average_diff(a, b, n_boot=200, seed=1)
    # B right on exactly the pairs where A is wrong and vice versa, in one subset: no difference on average
    even = {"S1": [rec(i, f"u{i % 4}", A, A if i % 2 else B, subset="S1") for i in range(8)]}
    odd = {"S1": [rec(i, f"u{i % 4}", A, B if i % 2 else A, subset="S1") for i in range(8)]}
    tie = paired_average_diff(even, odd, n_boot=300, seed=0)
    assert tie["diff"] == 0.0 and not tie["significant"]
    assert paired_average_diff(a, {"X": b["S1"]}, n_boot=10) is None
    with pytest.raises(ValueError, match="metric"):
        paired_average_diff(a, b, metric="f1", n_boot=10)
