"""benchmarks/recipe_speed.py (gpu_speed.py --mode recipes): the launches compare like with like, the summary turns
run results into every goal and its ratio, and the script runs end to end on CPU with the tiny shape."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import recipe_speed  # noqa: E402


def _split(overrides: list[str]) -> dict[str, str]:
    return dict(o.split("=", 1) for o in overrides)


def test_project_and_vanilla_launches_differ_only_in_the_compared_settings(tmp_path):
    paths = {"data": Path("/d"), "tiny": Path("/t"), "grpo_model": Path("/m7"), "sft_model": Path("/m3")}
    for stage in ("zero2", "zero3"):
        runs = {k: _split(v) for k, v in recipe_speed.launches(stage, paths, recipe_speed.SHAPES["gpu"], tmp_path).items()}
        assert all(r["deepspeed"] == stage for r in runs.values())
        diff = {k for k in runs["grpo_project"].keys() | runs["grpo_vanilla"].keys()
                if runs["grpo_project"].get(k) != runs["grpo_vanilla"].get(k)}
        assert diff == {"rollout", "trainer.gradient_checkpointing", "run_dir"}
        assert runs["grpo_project"]["rollout"] == "fast" and runs["grpo_vanilla"]["rollout"] == "trl"
        assert runs["grpo_project"]["trainer.num_generations"] == "8" and runs["grpo_project"]["model.max_pixels"] == str(448 * 448)
        diff = {k for k in runs["sft_project"].keys() | runs["sft_vanilla"].keys() if runs["sft_project"].get(k) != runs["sft_vanilla"].get(k)}
        assert diff == {"trainer.gradient_checkpointing", "trainer.per_device_train_batch_size", "run_dir"}
        assert runs["sft_project"]["peft"] == "none" and runs["sft_project"]["model.path"] == "/m3"  # full fine-tuning, 3B shape


def test_summary_states_every_goal_with_its_ratio():
    def run(step=None, rollout=None, tokens=None, runtime=None, peak=None):
        return {"rc": 0, "results": {"step_time_s": {"median_after_first": step}, "tokens": tokens, "train_runtime_s": runtime,
                                     "peak_gpu_gib": peak, "rollout": {"throughput": {"new_tokens_per_s": rollout}}}}

    results = {"runs": {"zero3": {"grpo_project": run(step=4.0, rollout=1250.0, peak=60.0), "grpo_vanilla": run(step=32.0, peak=40.0),
                                  "sft_project": run(tokens=100_000, runtime=10.0), "sft_vanilla": run(tokens=50_000, runtime=10.0)},
                        "zero2": {"grpo_project": {"rc": 1, "error": "boom"}}}}
    s = recipe_speed.summarize(results, n_sft=3_750_000_000, nproc=1)
    z3 = s["zero3"]
    assert z3["grpo_step_ratio"] == 0.125 and z3["grpo_step_goal_met"] is True
    assert z3["rollout_goal_ratio"] == 1.25
    mfu = 6 * 3.75e9 * 10_000 / 989e12
    assert z3["sft_project"]["mfu"] == round(mfu, 4) and z3["sft_mfu_goal_ratio"] == round(round(mfu, 4) / 0.35, 3)
    assert z3["sft_speedup"] == 2.0 and z3["peak_gpu_gib"]["grpo_project"] == 60.0
    assert "grpo_step_ratio" not in s["zero2"] and s["zero2"]["grpo_step_s"] == {"project": None, "vanilla": None}


def test_bad_arguments_are_refused(capsys):
    for argv in (["--stages", "zero4"], ["--runs", "grpo_fast"], ["--nproc", "0", "--shape", "tiny"]):
        with pytest.raises(SystemExit):
            recipe_speed.main(argv)
        assert "error" in capsys.readouterr().err


@pytest.mark.slow
def test_cpu_dry_run_of_the_grpo_pair(tmp_path):
    out = tmp_path / "recipes.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "gpu_speed.py"), "--mode", "recipes", "--shape", "tiny", "--stages", "zero2",
           "--runs", "grpo_project,grpo_vanilla", "--work", str(tmp_path / "work"), "--out", str(out)]
    proc = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["meta"]["dry_run"] and res["env"]["trl"] and res["env"]["deepspeed"]
    runs = res["runs"]["zero2"]
    assert runs["grpo_project"]["rc"] == 0 and runs["grpo_vanilla"]["rc"] == 0
    assert runs["grpo_project"]["results"]["rollout"]["policy"]["sharding"] == "zero2"
    assert runs["grpo_vanilla"]["results"]["rollout"]["engine"] == "trl"
    z2 = res["summary"]["zero2"]
    assert z2["grpo_step_ratio"] > 0 and z2["rollout_new_tokens_per_s_rank0"] > 0
