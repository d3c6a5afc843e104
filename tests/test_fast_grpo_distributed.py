"""The fast GRPO path on 2 processes (torchrun + gloo: DDP, DeepSpeed ZeRO-2 and ZeRO-3 on CPU) against TRL's own path.

Each stage runs tests/dist_grpo_worker.py twice, the fast trainer and TRL's GRPOTrainer, with the same rollout function,
seed and data, so both train on the same completions (checked by hash) and differ only in the loss pass. What it shows:

* the shared-prompt loss pass runs under the DeepSpeed engine (no fallback) and its per-token log-probs equal TRL's pass
  on the same micro-batch within 1e-5, on every call of every rank; the rollout's own log-probs (FastRollout, decoding
  from the ZeRO-3-gathered weights) equal TRL's scoring of the sampled tokens within 1e-5;
* after 3 SGD steps the weights of the two runs agree within 1e-6 while they moved by more than 1e-3 from the start. The
  tolerance: with plain SGD at lr 0.05 a weight differs by lr x the summed gradient difference, and the two passes sum
  the same float32 terms in another order (one prompt pass whose gradient collects G completions, against G prompt
  passes), i.e. relative differences of ~1e-7 on gradients of order 1 (measured: 1.1e-8 on the weights).

DDP uses G=2 with 2 completions per process (each rank holds whole groups: the wrapper's forward arms DDP's gradient
all-reduce for the shared pass); ZeRO-2 uses G=4 completions with 2 per process, so every group is split across the two ranks (each rank shares its
prompt between its 2 rows); ZeRO-3 uses G=2, 1 completion per micro-batch and 2 accumulation steps, so no micro-batch
repeats a prompt and the pass runs anyway (every ZeRO-3 rank must take the same path); its rollouts decode from the
stable buffers that keep CUDA graphs valid across gathers (``stable_weights``, forced on here since CPU does not compile).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO

SHAPES = {0: ["--generations", "2", "--per-device", "2"],
          2: ["--generations", "4", "--per-device", "2"],
          3: ["--generations", "2", "--per-device", "1", "--accum", "2", "--stable-weights"]}


def _launch(tiny_model, mini_data, out, stage: int, mode: str, port: int) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           str(REPO / "tests" / "dist_grpo_worker.py"), str(tiny_model), str(mini_data), str(out), "--stage", str(stage),
           "--mode", mode, "--steps", "3", *SHAPES[stage]]
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads((out / "result.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("stage", [0, 2, 3], ids=["ddp", "zero2", "zero3"])
def test_fast_path_matches_trl_under_deepspeed(tiny_model, mini_data, tmp_path, stage):
    fast = _launch(tiny_model, mini_data, tmp_path / "fast", stage, "fast", 29620 + stage)
    vanilla = _launch(tiny_model, mini_data, tmp_path / "vanilla", stage, "vanilla", 29630 + stage)
    assert fast["world_size"] == vanilla["world_size"] == 2 and fast["global_step"] == vanilla["global_step"] == 3
    for r in fast["ranks"]:
        assert r["rollout_policy"]["sharding"] == (f"zero{stage}" if stage else "ddp") and r["rollout_fallbacks"] == 0 and r["rollout_calls"] >= 2
        assert r["shared_prefix_calls"] == r["loss_pass_calls"] > 0 and r["shared_prefix_fallbacks"] == {}
        assert r["loss_pass_max_diff"] <= 1e-5, r
        assert r["rollout_tokens"] > 0 and r["rollout_max_diff"] <= 1e-5, r
        if stage == 3:  # decoding from the stable buffers: refreshed from each gather, at the same addresses every time
            assert r["rollout_policy"]["stable_weights"] and r["stable_copies"] == r["rollout_calls"]
            assert len(set(r["buffer_addresses"])) == 1, r["buffer_addresses"]
    # same completions in both runs, rank by rank: the runs differ only in the loss pass
    assert [r["completion_sha"] for r in fast["ranks"]] == [r["completion_sha"] for r in vanilla["ranks"]]
    a, b = torch.load(tmp_path / "fast" / "weights.pt"), torch.load(tmp_path / "vanilla" / "weights.pt")
    from transformers import AutoModelForImageTextToText

    init = dict(AutoModelForImageTextToText.from_pretrained(tiny_model).named_parameters())
    assert a.keys() == b.keys() and set(a) <= set(init)
    moved = max((a[k] - init[k]).abs().max().item() for k in a)
    assert moved > 1e-3, "the runs did not train: the comparison would be vacuous"
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0, msg=k)
