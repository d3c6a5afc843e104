"""Tests of the research probes (``research/``): run them with ``pytest research/tests``; the product's suite
(``tests/``, what CI runs) does not collect them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RESEARCH = REPO / "research"


def _row(label, sa, sb, ta, tb, true_a, true_b, answer):
    return {"label": label, "scores_a": sa, "scores_b": sb, "total_a": ta, "total_b": tb,
            "true_scores_a": true_a, "true_scores_b": true_b, "answer": answer}


def test_score_consistency_counts_totals_and_counterfactual_sums(tmp_path):
    sys.path.insert(0, str(RESEARCH))
    try:
        import score_consistency as sc
    finally:
        sys.path.pop(0)
    rows = [
        # totals match the score lines, answer follows them and is right; Detail misread (5 vs 1, true 1 vs 5)
        _row("Image A", [5, 5, 5, 5, 5], [1, 1, 1, 1, 1], 25, 5, [5, 5, 5, 5, 1], [1, 1, 1, 1, 5], "Image A"),
        # wrong total for B, answer follows the totals and is wrong; own sums 11 vs 13 also pick B
        _row("Image A", [1, 1, 5, 1, 3], [3, 3, 1, 3, 3], 11, 14, [5, 1, 5, 1, 5], [1, 3, 1, 3, 1], "Image B"),
        # no answer: counts half
        _row("Image B", [1, 1, 1, 1, 1], [5, 5, 5, 5, 5], 5, 25, [1, 1, 1, 1, 1], [5, 5, 5, 5, 5], None),
    ]
    folder = tmp_path / "predictions" / "model"
    folder.mkdir(parents=True)
    (folder / "SP_ID.rank0.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    r = sc.report(str(folder), "SP_ID", ["Detail"])
    assert r["n"] == r["with_scores"] == 3
    assert r["answer"] == 100 * (1 + 0 + 0.5) / 3
    assert r["totals_right"] == 2 and r["unequal_totals"] == 3
    assert r["follows_totals"] == 2  # rows 1 and 2; the missing answer does not follow
    assert r["own 5"] == 100 * 2 / 3  # row 2: 11 < 13 picks B, wrong
    assert r["own w/o Detail"] == 100 * 2 / 3  # row 2 without Detail: 8 < 10, still B
    assert r["own + true Detail"] == 100.0  # row 2: 13 vs 11 -> A right; row 1: 21 vs 9 right; row 3 right
    assert sc.main([str(folder), "--subsets", "SP_ID", "--json", str(tmp_path / "o.json")]) == 0
    assert json.loads((tmp_path / "o.json").read_text())[0]["totals_right"] == 2


@pytest.mark.slow
def test_vit_probe_trains_the_vision_tower_alone_and_reports_each_element(tmp_path):
    """research/vit_probe.py on a tiny synthetic dataset: per-element held-out accuracy after a few steps, one
    evaluation per --eval-every, chance beside it; a name that is not an element is refused before any work."""
    from preferthinker.data.synthetic.splits import make_dataset
    from preferthinker.profile import ELEMENTS

    data = tmp_path / "d"
    make_dataset({"out_dir": str(data), "seed": 3, "image_size": 56, "workers": 1, "progress": False, "contact_sheets": False,
                  "users": {"train_sft": 8, "train_grpo": 2, "SP_ID": 4, "SP_OD": 2, "MP_ID": 2, "MP_OD": 2}})
    script = str(RESEARCH / "vit_probe.py")
    out = subprocess.run([sys.executable, script, "--data", str(data), "--steps", "4", "--batch", "4", "--eval-every", "2",
                          "--first-only", "Art Styles,Detail", "--first-steps", "2", "--threads", "1", "--json", str(tmp_path / "p.json")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads((tmp_path / "p.json").read_text())
    assert [c["step"] for c in res["curve"]] == [2, 4]
    for c in res["curve"]:
        assert set(ELEMENTS) <= set(c) and all(0.0 <= c[e] <= 1.0 for e in ELEMENTS)
    assert res["chance"]["Color"] == round(1 / 8, 3) and res["chance"]["Detail"] == round(1 / 6, 3)
    bad = subprocess.run([sys.executable, script, "--data", str(data), "--elements", "Detail,Brushwork"], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode != 0 and "Brushwork" in bad.stderr


def test_research_gpu_scripts_parse_and_use_the_benchmarks_environment():
    """The research device scripts share benchmarks/gpu_env.sh ($OUT, PYTHONPATH, say) with the product's."""
    scripts = sorted(RESEARCH.glob("gpu_*.sh"))
    assert scripts
    for script in scripts:
        proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, (script.name, proc.stderr)
        assert 'source "$(dirname "${BASH_SOURCE[0]}")/../benchmarks/gpu_env.sh"' in script.read_text(), script.name


def _import(name):
    sys.path.insert(0, str(RESEARCH))
    try:
        return __import__(name)
    finally:
        sys.path.pop(0)


_RAW = """<visual preference profile>
"Art Styles": "Pop Art, Minimalism",
"Color": "Golden Yellow, Jungle Green",
"Artistic Medium": "Flat Digital",
"Saturation": "Pastel",
"Detail": "Selective"
</visual preference profile>

<visual non-preference profile>
"Art Styles": "Art Deco",
"Color": "Cobalt Blue",
"Artistic Medium": "Pixel Mosaic",
"Saturation": "Muted",
"Detail": "Smooth"
</visual non-preference profile>

<think>
1. Artistic style:
A shows Art Deco; liked Pop Art no, Minimalism no; disliked Art Deco yes. B shows Pop Art; liked Pop Art yes, Minimalism no; disliked Art Deco no.
Image A(1) - Art Deco, non-preferred;
Image B(5) - Pop Art, preferred.

2. Color:
A shows Golden Yellow; liked Jungle Green no, Jungle Green no; disliked Cobalt Blue no. B shows Teal; liked Jungle Green no, Jungle Green no; disliked Cobalt Blue no.
Image A(3) - Golden Yellow, neutral;
Image B(3) - Teal, neutral.

Total:
Image A: total_score=4
Image B: total_score=8
</think>

<answer>Image B</answer>"""


def test_section_errors_separates_copy_check_and_score_errors():
    se = _import("section_errors")
    rec = {"raw": _RAW, "swapped": False, "true_scores_a": [1, 5, 3, 3, 3], "true_scores_b": [5, 3, 3, 3, 3],
           "pred_preference": {"Art Styles": "Pop Art, Minimalism", "Color": "Golden Yellow, Jungle Green"},
           "pred_non_preference": {"Art Styles": "Art Deco", "Color": "Cobalt Blue"}}
    c = se.analyse([rec, {**rec, "swapped": True}])   # the swapped copy is not counted
    assert c["sections"] == 2 and c["notes"] == 4
    assert c["copy: terms differ from the predicted profile"] == 2   # both Color notes wrote Jungle Green twice
    assert c["check: yes/no contradicts the written terms"] == 0     # Golden Yellow was never written as liked
    assert c["score: does not follow the written yes/no"] == 0
    assert c["score: differs from the truth"] == 1                   # A's Color: 3 written, 5 true


def test_paired_compare_reads_two_prediction_folders(tmp_path, capsys):
    pc = _import("paired_compare")
    for name, answers in (("a", ["Image A"] * 6), ("b", ["Image A", "Image B"] * 3)):
        folder = tmp_path / name
        folder.mkdir()
        rows = [{"subset": "SP_ID", "pair_id": f"p{i}", "user_id": f"u{i}", "swapped": False, "label": "Image A",
                 "answer": ans} for i, ans in enumerate(answers)]
        (folder / "SP_ID.rank0.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    res = pc.main([str(tmp_path / "a"), str(tmp_path / "b"), "--n-boot", "200"])
    assert abs(res["accuracy"]["diff"] - 0.5) < 1e-9 and res["accuracy"]["n"] == 6
    assert "| SP_ID | 6 | 100.0 | 50.0 | +50.0 |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="not a folder"):
        pc.main([str(tmp_path / "missing"), str(tmp_path / "b")])


def _cot(read_a, read_b, liked, disliked):
    """A compact CoT think block: one note per element, each checked against liked / disliked terms."""
    parts = ["<think>"]
    for k, (a, b, lk, dk) in enumerate(zip(read_a, read_b, liked, disliked), 1):
        note = "; ".join([f"liked {lk} {'yes' if a == lk else 'no'}", f"disliked {dk} {'yes' if a == dk else 'no'}"])
        note_b = "; ".join([f"liked {lk} {'yes' if b == lk else 'no'}", f"disliked {dk} {'yes' if b == dk else 'no'}"])
        parts.append(f"{k}. Element {k}:\nA shows {a}; {note}. B shows {b}; {note_b}.\nImage A(3) - {a}, neutral;\nImage B(3) - {b}, neutral.\n")
    return "\n".join(parts) + "Total:\n</think>"


def test_profile_counterfactual_separates_profile_and_reading_errors(tmp_path):
    from preferthinker.profile import ELEMENTS

    pc = _import("profile_counterfactual")
    liked, disliked, neutral = [f"L{k}" for k in range(5)], [f"D{k}" for k in range(5)], [f"N{k}" for k in range(5)]
    true_a, true_b = [liked[0], *neutral[1:]], neutral   # A: 5+3+3+3+3 = 17, B: 15 -> Image A
    bench = [{"true_profile_a": dict(zip(ELEMENTS, true_a)), "true_profile_b": dict(zip(ELEMENTS, true_b))}] * 2
    truth = {"true_preference": dict(zip(ELEMENTS, liked)), "true_non_preference": dict(zip(ELEMENTS, disliked)),
             "label": "Image A", "swapped": False}
    # 0: read right, checked against a wrong liked term (a profile error) -> a tie; 1: A's first term misread -> a tie
    wrong = ["W0", *liked[1:]]
    recs = [{**truth, "index": 0, "answer": "Image A", "pred_preference": {ELEMENTS[0]: "W0"}, "raw": _cot(true_a, true_b, wrong, disliked)},
            {**truth, "index": 1, "answer": "Image B", "pred_preference": {ELEMENTS[0]: "L0, L1"}, "raw": _cot(neutral, true_b, liked, disliked)}]
    res = pc.analyse(recs, bench)
    assert res["n"] == 2
    assert res["accuracy"] == {"model": 50.0, "notes": 50.0, "true profile": 75.0, "true reading": 75.0, "both": 100.0}
    assert res["liked_terms"] == {"true 1 -> written 1": 1, "true 1 -> written 2": 1}
    # the command line reads <data-root>/data/<SUBSET>/<SUBSET>.json and names a missing one
    preds = tmp_path / "preds"
    preds.mkdir()
    (preds / "SP_ID.rank0.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    with pytest.raises(SystemExit, match="no bench file for subset SP_ID"):
        pc.main([str(preds), "--data-root", str(tmp_path / "nowhere")])
    (tmp_path / "root" / "data" / "SP_ID").mkdir(parents=True)
    (tmp_path / "root" / "data" / "SP_ID" / "SP_ID.json").write_text(json.dumps(bench))
    assert pc.main([str(preds), "--data-root", str(tmp_path / "root")])["SP_ID"] == res
