"""benchmarks/gpu_speed.py --quick: every stage runs on the tiny model on CPU and reports into the JSON file."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO


def test_gpu_speed_quick_runs_every_stage(tmp_path):
    out = tmp_path / "gpu_speed.json"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OUT": str(tmp_path / "unused")}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_speed.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    for stage in ("env", "build", "rollout", "sft", "grpo_vanilla", "grpo_project", "summary"):
        assert res[stage].get("ok"), (stage, res[stage].get("error") or res[stage].get("skipped"), res[stage].get("traceback"))
        assert res[stage]["wall_s"] >= 0
    assert res["meta"]["quick"] is True
    assert res["build"]["images"] == 12 and res["build"]["image_tokens"] == 12 * 4
    ro = res["rollout"]
    assert ro["plain_tok_s"] > 0 and ro["fast_tok_s"] > 0 and ro["speedup"] > 0
    assert ro["greedy_prefix_match"] == ro["greedy_tokens_compared"]  # fp32 on CPU: the fast path is exact
    sft = res["sft"]
    assert sft["plain"]["gradient_checkpointing"] and sft["best"]["tokens_per_s"] > 0
    assert 0 < sft["plain"]["mfu"] <= sft["plain"]["mfu_with_recompute"]
    gv, gp = res["grpo_vanilla"], res["grpo_project"]
    assert gv["steps"] == gp["steps"] == 2 and gv["G"] == gp["G"]
    assert gp["rollout_calls"] == 2 and gp["rollout_fallbacks"] == 0 and gp["shared_prefix_calls"] >= 2
    summary = res["summary"]
    for key in ("rollout_speedup", "grpo_step_ratio", "sft_best_mfu", "goal_rollout_1000_tok_s", "goal_grpo_ratio_le_1/3"):
        assert key in summary, key
    assert "DONE" in proc.stdout


def _row(label, sa, sb, ta, tb, true_a, true_b, answer):
    return {"label": label, "scores_a": sa, "scores_b": sb, "total_a": ta, "total_b": tb,
            "true_scores_a": true_a, "true_scores_b": true_b, "answer": answer}


def test_score_consistency_counts_totals_and_counterfactual_sums(tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
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


def test_vit_probe_trains_the_vision_tower_alone_and_reports_each_element(tmp_path):
    """benchmarks/vit_probe.py on a tiny synthetic dataset: per-element held-out accuracy after a few steps, one
    evaluation per --eval-every, chance beside it; a name that is not an element is refused before any work."""
    from preferthinker.data.synthetic.splits import make_dataset
    from preferthinker.profile import ELEMENTS

    data = tmp_path / "d"
    make_dataset({"out_dir": str(data), "seed": 3, "image_size": 56, "workers": 1, "progress": False, "contact_sheets": False,
                  "users": {"train_sft": 8, "train_grpo": 2, "SP_ID": 4, "SP_OD": 2, "MP_ID": 2, "MP_OD": 2}})
    script = str(REPO / "benchmarks" / "vit_probe.py")
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


def test_gpu_shell_scripts_parse_and_share_one_environment(tmp_path):
    """The device scripts cannot run here; check they parse and that the shared prologue sets what they use."""
    scripts = sorted(p for p in (REPO / "benchmarks").glob("gpu_*.sh") if p.name != "gpu_env.sh")
    assert scripts
    for script in scripts:
        proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, (script.name, proc.stderr)
        assert 'source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"' in script.read_text(), script.name
    probe = tmp_path / "probe.sh"
    probe.write_text(f'set -u\nsource {REPO / "benchmarks" / "gpu_env.sh"}\nsay "out=$OUT path=$PYTHONPATH offline=$HF_HUB_OFFLINE"\n')
    env = {**os.environ, "OUT": str(tmp_path / "out"), "EXTRA_PYTHONPATH": "/extra"}
    proc = subprocess.run(["bash", str(probe)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    stamp, said = proc.stdout.strip().split(" ", 1)
    assert stamp in ("[0s]", "[1s]") and said == f"out={tmp_path / 'out'} path=/tmp/site:{tmp_path}:/extra offline=1"
    assert (tmp_path / "out").is_dir()
