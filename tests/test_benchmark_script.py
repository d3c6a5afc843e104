"""The product benchmarks in ``benchmarks/``: gpu_speed.py --quick runs every stage on the tiny model on CPU and reports
into the JSON file; the device shell scripts parse and share one environment. (The research probes' tests are in
``research/tests``.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_cpu_batching_times_the_split_and_the_eval_batch_through_the_scripts(mini_data, tiny_model, tmp_path):
    """benchmarks/cpu_batching.py on the mini data: one entry per split and per batch size, in the JSON it writes;
    splits 2 and 4 draw the same rows and log the same losses; the eval's accuracy does not depend on the batch."""
    out = tmp_path / "b.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "cpu_batching.py"), "--sft-model", str(tiny_model),
                           "--eval-model", str(tiny_model), "--data-root", str(mini_data), "--sft-steps", "2", "--splits", "2,4",
                           "--eval-users", "2", "--batch-sizes", "1,4", "--max-new-tokens", "16", "--subsets", "SP_ID,SP_OD", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert [r["split"] for r in res["sft"]] == [2, 4] and [r["batch_size"] for r in res["eval"]] == [1, 4]
    a, b = (r["first_losses"] for r in res["sft"])
    assert len(a) == 2 and all(abs(x - y) < 1e-3 * max(1.0, abs(x)) for x, y in zip(a, b))
    assert res["eval"][0]["accuracy"] == res["eval"][1]["accuracy"] and res["eval"][0]["samples"] > 0
    assert "length_split=2" in proc.stdout and "batch_size=4" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["--checks-steps", "5"], "--checks-steps=5: at least 20"),
    (["--arms", "tuned,jemalloc"], "--arms: unknown ['jemalloc']"),
    (["--data-root", "no/such/data"], "--data-root=no/such/data: no manifest.json there"),
])
def test_cpu_allocator_refuses_bad_arguments_before_training(args, message):
    """benchmarks/cpu_allocator.py (~7 minutes of the default SFT per arm, figures in docs/benchmarks.md) names
    a wrong argument before it starts anything."""
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "cpu_allocator.py"), *args], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
