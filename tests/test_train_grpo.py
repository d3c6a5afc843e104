"""The GRPO recipe on the tiny model: a real update with registry rewards, per-reward logging, config
errors, and ZeRO-2/3 on 2 processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from preferthinker.runtime import ConfigError
from tests.conftest import REPO, compose, train_overrides


def _grpo_overrides(mini_data, tiny_model, run_dir, **extra):
    base = {"trainer.max_steps": 2, "trainer.num_generations": 4, "trainer.per_device_train_batch_size": 4,
            "trainer.gradient_accumulation_steps": 1, "trainer.max_completion_length": 24, "trainer.learning_rate": 0.05,
            "trainer.save_steps": 1, "trainer.mask_truncated_completions": False, "reward.names": "[accuracy,format,pref_profile,tests.helpers:brevity]", "reward.weights": "[1.0,0.3,0.35,0.5]"}
    base.update(extra)
    return train_overrides(mini_data, tiny_model, run_dir, **base)


@pytest.mark.slow
def test_grpo_updates_policy_and_logs_each_reward(mini_data, tiny_model, tmp_path):
    from safetensors.torch import load_file

    from preferthinker.train.grpo import run

    res = run(compose("grpo", _grpo_overrides(mini_data, tiny_model, tmp_path / "run")))
    assert res["global_step"] == 2 and res["init_model"] == str(tiny_model)
    history = json.loads((tmp_path / "run" / "log_history.json").read_text())
    step_logs = [h for h in history if "reward" in h]
    assert len(step_logs) == 2
    for h in step_logs:  # per-reward mean and std every step, plus answer accuracy / format / similarity
        for name in ("accuracy", "format", "pref_profile", "brevity"):
            assert f"rewards/{name}/mean" in h and f"rewards/{name}/std" in h
    before, after = load_file(tiny_model / "model.safetensors"), load_file(tmp_path / "run" / "final" / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert (tmp_path / "run" / "reward_curves.png").is_file()


@pytest.mark.parametrize(
    "override, key",
    [
        ({"trainer.num_generations": 1}, "trainer.num_generations"),
        ({"trainer.per_device_train_batch_size": 3}, "per_device_train_batch_size"),
        ({"trainer.temperature": 0}, "trainer.temperature"),
        ({"trainer.loss_type": "ppo"}, "trainer.loss_type"),
        ({"reward.names": "[accuracy,nope]"}, "reward.names"),
        ({"reward.weights": "[1.0]"}, "reward"),
        ({"trainer.not_a_field": 3}, "trainer.not_a_field"),
        ({"model.path": "/does/not/exist"}, "model.path"),
        ({"rollout.engine": "sglang"}, "rollout.engine"),
        ({"rollout.compile": "maybe"}, "rollout.compile"),
        ({"rollout.cache_bucket": 0}, "rollout.cache_bucket"),
        ({"dynamic_sampling.max_rounds": -1}, "dynamic_sampling.max_rounds"),
        ({"dynamic_sampling.max_rounds": "many"}, "dynamic_sampling.max_rounds"),
        ({"dynamic_sampling.max_rounds": 2, "trainer.per_device_train_batch_size": 2, "trainer.num_generations": 4,
          "trainer.gradient_accumulation_steps": 2, "+trainer.steps_per_generation": 1}, "trainer.per_device_train_batch_size"),
    ],
)
def test_bad_settings_fail_early_with_the_key(mini_data, tiny_model, tmp_path, override, key):
    from preferthinker.train.grpo import run

    over = _grpo_overrides(mini_data, tiny_model, tmp_path / "run", **{"reward.names": "[accuracy,format]", "reward.weights": "[1.0,0.3]"})
    over += [f"+{k}={v}" if k == "trainer.not_a_field" else f"{k}={v}" for k, v in override.items()]
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        run(compose("grpo", over))


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_grpo_deepspeed_two_processes(mini_data, tiny_model, tmp_path, stage):
    run_dir = tmp_path / stage
    over = _grpo_overrides(mini_data, tiny_model, run_dir, **{"reward.names": "[accuracy,format]", "reward.weights": "[1.0,0.3]",
                                                              "trainer.per_device_train_batch_size": 2, "trainer.num_generations": 2})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(29510 + (stage == "zero3")),
           str(REPO / "scripts" / "train_grpo.py"), *over, f"deepspeed={stage}"]
    out = subprocess.run(cmd, env={**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads((run_dir / "results.json").read_text())
    assert res["distributed"]["world_size"] == 2 and res["distributed"]["ranks_agree"], res["distributed"]
    assert res["global_step"] == 2
    # the fast path stayed on under DeepSpeed: FastRollout for every rollout, the shared-prompt pass in the loss
    rollout = res["rollout"]
    assert rollout["engine"] == "fast" and rollout["policy"]["sharding"] == stage and rollout["rollout_fallbacks"] == 0
    assert rollout["shared_prefix_calls"] >= 2 and rollout["shared_prefix_fallbacks"] == {}, rollout


@pytest.mark.slow
def test_grpo_resume_after_kill_matches_uninterrupted_run(mini_data, sft_model, tmp_path):
    """SIGKILL after step 3 (checkpoint-2 on disk), re-run the same command: the run resumes from checkpoint-2
    (weights, optimizer, RNG: the sampled completions follow the restored torch RNG) and ends with the weights of
    a run that was never interrupted."""
    from safetensors.torch import load_file

    def cmd(run_dir):
        over = _grpo_overrides(mini_data, sft_model, run_dir, **{"trainer.max_steps": 4, "trainer.save_steps": 2,
                                                                  "trainer.learning_rate": 0.01, "reward.names": "[accuracy,format,tests.helpers:brevity]",
                                                                  "reward.weights": "[1.0,0.3,0.5]"})
        return [sys.executable, str(REPO / "scripts" / "train_grpo.py"), *over]

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}  # the brevity plugin lives in tests/helpers.py
    ref = subprocess.run(cmd(tmp_path / "ref"), env=env, capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr[-2000:]
    killed = subprocess.run(cmd(tmp_path / "run"), env={**env, "PT_FAULT_AT_STEP": "3"}, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-2").is_dir() and not (tmp_path / "run" / "final").exists()
    resumed = subprocess.run(cmd(tmp_path / "run"), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["resumed_from"].endswith("checkpoint-2") and res["global_step"] == 4
    init = load_file(sft_model / "model.safetensors")
    a, b = load_file(tmp_path / "ref" / "final" / "model.safetensors"), load_file(tmp_path / "run" / "final" / "model.safetensors")
    assert any(not torch.equal(init[k], a[k]) for k in init), "the reference run did not change the policy: the test would be vacuous"
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


def _rollout_cfg(mini_data, tiny_model, tmp_path, *extra):
    return compose("grpo", _grpo_overrides(mini_data, tiny_model, tmp_path / "run") + list(extra))


def test_rollout_group_maps_to_the_trainer(mini_data, tiny_model, tmp_path, monkeypatch):
    """configs/rollout/: fast (the project's rollout + shared-prompt pass), trl (plain GRPOTrainer), vllm (TRL's own
    use_vllm=True, vllm_mode=colocate, with the shared-prompt pass). vLLM is looked up, never imported: without it,
    choosing it is a ConfigError naming the extra to install; with it (pretended here), the GRPOConfig fields are set."""
    import importlib.util
    import sys as _sys

    from preferthinker.train.grpo import rollout_settings

    fast = rollout_settings(_rollout_cfg(mini_data, tiny_model, tmp_path).rollout)
    assert fast == {"engine": "fast", "fast": True, "shared_prefix": "auto", "grpo_args": {},
                    "rollout": {"static_cache": True, "cache_bucket": 256, "compile": None, "stable_weights": None}}
    forced = rollout_settings(_rollout_cfg(mini_data, tiny_model, tmp_path, "rollout.compile=false", "rollout.shared_prefix=true").rollout)
    assert forced["rollout"]["compile"] is False and forced["shared_prefix"] is True
    trl = rollout_settings(_rollout_cfg(mini_data, tiny_model, tmp_path, "rollout=trl").rollout)
    assert trl["fast"] is False and trl["rollout"] is None and trl["grpo_args"] == {}

    vcfg = _rollout_cfg(mini_data, tiny_model, tmp_path, "rollout=vllm", "rollout.gpu_memory_utilization=0.4")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real_find_spec(name, *a))
    with pytest.raises(ConfigError, match=r"rollout=vllm: the vllm package is not installed.*\[vllm\]"):
        rollout_settings(vcfg.rollout)
    from preferthinker.train.grpo import run

    with pytest.raises(ConfigError, match="rollout=vllm"):  # the recipe refuses before loading any model
        run(vcfg)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "vllm" else real_find_spec(name, *a))
    v = rollout_settings(vcfg.rollout)
    assert v["fast"] is True and v["rollout"] is None and v["shared_prefix"] == "auto"
    assert v["grpo_args"] == {"use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.4,
                              "vllm_tensor_parallel_size": 1, "vllm_enable_sleep_mode": False}
    from trl import GRPOConfig

    args = GRPOConfig(output_dir=str(tmp_path / "o"), use_cpu=True, **v["grpo_args"])  # every field is TRL's own
    assert args.use_vllm and args.vllm_mode == "colocate"
    with pytest.raises(ConfigError, match="rollout.vllm_mode"):
        rollout_settings(_rollout_cfg(mini_data, tiny_model, tmp_path, "rollout=vllm", "rollout.vllm_mode=server").rollout)
    assert "vllm" not in _sys.modules  # looked up, never imported


def test_element_scores_reward_is_refused_on_data_without_per_element_truth(mini_data, tiny_model, tmp_path):
    """reward element_scores reads the synthetic records' true_scores_a/b; on a file without them (PreferImg has
    none) the recipe stops at start-up naming the reward, before loading a model, instead of training on None."""
    import json

    from preferthinker.train.grpo import run

    stripped = tmp_path / "grpo.jsonl"
    lines = (mini_data / "train" / "grpo.jsonl").read_text().splitlines()
    stripped.write_text("\n".join(json.dumps({k: v for k, v in json.loads(x).items() if not k.startswith("true_scores")})
                                  for x in lines if x.strip()) + "\n")
    reward = ["reward=acc_format", "reward.names=[accuracy,format,element_scores]", "reward.weights=[1.0,0.3,1.0]"]
    cfg = _rollout_cfg(mini_data, tiny_model, tmp_path, *reward, f"data.train_grpo={stripped}",
                       f"data.image_root={mini_data / 'train' / 'images'}")
    with pytest.raises(ConfigError, match="reward.names includes element_scores, but no record of .* has true_scores_a"):
        run(cfg)
