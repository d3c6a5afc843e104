import json
import math

import pytest
from PIL import Image

from preferthinker.evaluation.metrics import paired_average_diff, paired_bootstrap_diff, subset_metrics
from preferthinker.evaluation.report import markdown_table, systems_of, write_report

A, B = "Image A", "Image B"


def make_records(subset, n, n_right, with_extras=True):
    out = []
    for i in range(n):
        label = A if i % 2 == 0 else B
        answer = label if i < n_right else (B if label == A else A)
        r = {"subset": subset, "index": i, "pair_id": f"{subset}-{i}", "user_id": f"u{i % 4}", "swapped": False,
             "label": label, "raw": "", "answer": answer, "format_ok": True, "error": None}
        if with_extras:
            ta, tb = (20, 20 - i % 7) if answer == A else (20 - i % 7, 20)
            r.update(scores_a=[4, 4, 4, 4, 4], scores_b=[3, 4, 5, 4, 3], total_a=ta, total_b=tb,
                     true_scores_a=[5, 4, 3, 4, 2], true_scores_b=[1, 4, 4, 4, 3])
        out.append(r)
        # a swapped twin for every record: always answers Image A
        tw = dict(r, swapped=True, label=B if label == A else A, answer=A)
        out.append(tw)
    return out


@pytest.fixture(scope="module")
def results():
    sp = make_records("SP_ID", 40, 34)
    pk = make_records("PICKAPIC", 30, 19, with_extras=False)
    main = {"SP_ID": subset_metrics(sp, n_boot=300, compute_similarity=False),
            "PICKAPIC": subset_metrics(pk, n_boot=300, compute_similarity=False)}
    base_sp = make_records("SP_ID", 40, 20)
    base = {"SP_ID": subset_metrics(base_sp, n_boot=300, compute_similarity=False)}
    return {
        "system": "PreferThinker-tiny",
        "model": "/ckpt/tiny",
        "seed": 0,
        "decoding": {"do_sample": False, "max_new_tokens": 64},
        "subsets": main,
        "systems": {"Random": {"subsets": base}},
        "comparisons": {"PreferThinker-tiny - Random": paired_bootstrap_diff(sp, base_sp, n_boot=300),
                        "per subset": {"SP_ID": paired_bootstrap_diff(sp, base_sp, n_boot=300)}},
        "pred_comparisons": {"PreferThinker-tiny - Random": {"SP_ID": {"diff": 12.34, "ci95": [10.0, 14.5], "n": 40, "significant": True}}},
        "average_comparisons": {"PreferThinker-tiny - Random": {
            "accuracy": paired_average_diff({"SP_ID": sp}, {"SP_ID": base_sp}, n_boot=300),
            "pred": {"diff": -0.5, "ci95": [-1.25, 0.5], "subsets": {"SP_ID": -0.5}, "n_users": 40, "significant": False}}},
    }


def test_markdown_table_values_and_avg():
    rows = {
        "Sys1": {"PICKAPIC": {"accuracy": 0.657, "ci95": [0.62, 0.69]}, "SP_ID": {"accuracy": 0.966, "ci95": [0.95, 0.98]}},
        "Sys2": {"SP_ID": {"accuracy": 0.5, "ci95": None}},
    }
    md = markdown_table(rows)
    lines = md.strip().splitlines()
    assert lines[0] == "| System | SP_ID | PICKAPIC | Avg. |"  # paper column order, not insertion order
    assert lines[2] == "| Sys1 | 96.6 [95.0, 98.0] | 65.7 [62.0, 69.0] | 81.2 |"
    assert lines[3] == "| Sys2 | 50.0 | – | 50.0* |"


def test_write_report_files(tmp_path, results):
    written = write_report(results, tmp_path / "run")
    for key in ("json", "markdown", "accuracy_plot", "element_plot", "margin_plot"):
        assert written[key].is_file(), key
    data = json.loads(written["json"].read_text())
    sp = data["subsets"]["SP_ID"]
    assert sp["accuracy"] == pytest.approx(34 / 40) and sp["n"] == 40 and sp["parse_fail_rate"] == 0.0
    assert len(sp["ci95"]) == 2 and sp["ci95"][0] <= sp["accuracy"] <= sp["ci95"][1]
    assert sp["first_slot_win_rate"] > 0.5 and data["model"] == "/ckpt/tiny"
    assert data["systems"]["Random"]["subsets"]["SP_ID"]["accuracy"] == pytest.approx(0.5)

    md = written["markdown"].read_text()
    lo, hi = sp["ci95"]
    assert f"| PreferThinker-tiny | 85.0 [{100 * lo:.1f}, {100 * hi:.1f}] | 63.3 [" in md
    assert "| Random | 50.0 [" in md and "50.0* |" in md
    assert "## Details: PreferThinker-tiny" in md and "Pos. consistency" in md
    assert "| PreferThinker-tiny - Random | all | +35.0 |" in md
    assert "| per subset | SP_ID | +35.0 |" in md
    # Pred and the subset average are tables, not JSON dumps in the header
    assert "pred_comparisons" not in md and "average_comparisons" not in md
    assert "| PreferThinker-tiny - Random | SP_ID | +12.3 | [+10.0, +14.5] | 40 | yes |" in md
    assert "| PreferThinker-tiny - Random | accuracy | +35.0 | [+" in md and "| SP_ID +35.0 | 4 | yes |" in md
    assert "| PreferThinker-tiny - Random | pred | -0.5 | [-1.2, +0.5] | SP_ID -0.5 | 40 | no |" in md
    assert "![accuracy_plot](accuracy_per_subset.png)" in md
    assert "- **seed**: 0" in md

    for key in ("accuracy_plot", "element_plot", "margin_plot"):
        with Image.open(written[key]) as im:
            assert im.format == "PNG" and im.size[0] > 400 and im.size[1] > 300


def test_nan_becomes_null_and_single_system(tmp_path):
    res = {"subsets": {"MP_OD": {"accuracy": 0.5, "n": 2, "parse_fail_rate": 0.0, "ci95": [0.0, 1.0],
                                 "macro_accuracy": float("nan")}}}
    written = write_report(res, tmp_path)
    data = json.loads(written["json"].read_text())
    assert data["subsets"]["MP_OD"]["macro_accuracy"] is None
    assert "element_plot" not in written and "margin_plot" not in written
    assert list(systems_of(res)) == ["model"]
    assert not math.isnan(data["subsets"]["MP_OD"]["accuracy"])


def test_no_subsets_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="subsets"):
        write_report({"model": "x"}, tmp_path)
