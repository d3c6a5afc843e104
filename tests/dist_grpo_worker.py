"""One rank of a 2-process GRPO run (torchrun, gloo, DeepSpeed on CPU) for tests/test_fast_grpo_distributed.py.

    python -m torch.distributed.run --nproc_per_node 2 tests/dist_grpo_worker.py MODEL DATA OUT --stage 2 --mode fast

``--mode fast``: FastGRPOTrainer (shared-prompt loss pass) + TRLRolloutFunc. Every loss-pass call also runs TRL's own
``_get_per_token_logps_and_entropies`` on the same batch (no grad) and records the largest difference on completion
tokens; every generation also scores the rollout's own sampled tokens with TRL's pass and records how far the
rollout's log-probs are from it. ``--mode vanilla``: TRL's ``GRPOTrainer`` with the same rollout function, so both
runs train on the same completions and differ only in the loss pass. Rank 0 writes OUT/result.json and the final
(gathered) weights to OUT/weights.pt.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def _rows(data: Path, processor, n: int) -> list[dict]:
    from preferthinker.data.loading import PromptSpec, build_examples
    from preferthinker.data.schema import load_train_jsonl

    recs = load_train_jsonl(data / "train" / "grpo.jsonl")[:n]
    spec = PromptSpec(style="compact", system="compact", min_pixels=3136, max_pixels=3136, max_refs=2)
    return build_examples(recs, data / "train" / "images", spec, kind="grpo", processor=processor)


def _reward(completions, **kw):
    return [len(c[0]["content"]) / 16 for c in completions]


def _ds_config(stage: int) -> dict:
    zero = {"stage": stage, "overlap_comm": False, "contiguous_gradients": True, "reduce_bucket_size": 5e7}
    if stage == 3:
        zero.update(stage3_param_persistence_threshold=0, stage3_gather_16bit_weights_on_model_save=True)
    return {"zero_optimization": zero, "bf16": {"enabled": False}, "fp16": {"enabled": False},
            "gradient_accumulation_steps": "auto", "gradient_clipping": "auto", "train_micro_batch_size_per_gpu": "auto",
            "train_batch_size": "auto", "zero_allow_untested_optimizer": True}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--stage", type=int, choices=(0, 2, 3), default=2, help="0 = DDP without DeepSpeed")
    ap.add_argument("--mode", choices=("fast", "vanilla"), default="fast")
    ap.add_argument("--generations", type=int, default=2)
    ap.add_argument("--per-device", type=int, default=2)
    ap.add_argument("--accum", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--stable-weights", action="store_true", help="ZeRO-3: decode from buffers allocated once")
    a = ap.parse_args()

    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from preferthinker.modeling import load_model_and_processor
    from preferthinker.train.fast_grpo import fast_trainer_class
    from preferthinker.train.grpo_rollout import TRLRolloutFunc

    model, proc = load_model_and_processor(a.model, padding_side="left", for_training=True)
    args = GRPOConfig(
        output_dir=str(Path(a.out) / "ckpt"), use_cpu=True, bf16=False, num_generations=a.generations,
        per_device_train_batch_size=a.per_device, gradient_accumulation_steps=a.accum, max_completion_length=8,
        report_to="none", max_steps=a.steps, logging_steps=1, save_strategy="no", gradient_checkpointing=False,
        learning_rate=0.05, optim="sgd", lr_scheduler_type="constant", max_grad_norm=1e9, seed=0, data_seed=0,
        beta=0.0, deepspeed=_ds_config(a.stage) if a.stage else None, remove_unused_columns=False,
        disable_tqdm=True,
    )
    checks = {"loss_pass_max_diff": 0.0, "loss_pass_calls": 0, "rollout_max_diff": 0.0, "rollout_tokens": 0,
              "completion_sha": [],
              "buffer_addresses": []}

    base = fast_trainer_class() if a.mode == "fast" else GRPOTrainer

    class Checked(base):
        def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kw):
            out = super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep, *args, **kw)
            if a.mode == "fast" and torch.is_grad_enabled():
                with torch.no_grad():
                    ref = GRPOTrainer._get_per_token_logps_and_entropies(self, model, input_ids, attention_mask,
                                                                         logits_to_keep, *args, **kw)
                m = attention_mask[:, -int(logits_to_keep):].bool()
                checks["loss_pass_max_diff"] = max(checks["loss_pass_max_diff"],
                                                   float((out[0].detach() - ref[0])[m].abs().max()))
                checks["loss_pass_calls"] += 1
            return out

        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
            am = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
            kw = {k: out[k] for k in ("pixel_values", "image_grid_thw", "num_images", "mm_token_type_ids") if k in out}
            c = out["completion_ids"].shape[1]
            with torch.no_grad():  # TRL's own scoring of the sampled tokens (both runs, so ZeRO-3 ranks stay in step)
                ref, _, _ = GRPOTrainer._get_per_token_logps_and_entropies(self, self.model_wrapped, ids, am, c, **kw)
            m = out["completion_mask"].bool()
            if "sampling_per_token_logps" in out:
                diff = (out["sampling_per_token_logps"] - ref)[m].abs()
                checks["rollout_max_diff"] = max(checks["rollout_max_diff"], float(diff.max()) if diff.numel() else 0.0)
                checks["rollout_tokens"] += int(m.sum())
            checks["completion_sha"].append(hashlib.sha256(out["completion_ids"].cpu().numpy().tobytes()).hexdigest()[:16])
            checks["buffer_addresses"].append(hash(tuple(self.rollout_func._stable.addresses())))
            return out

    kwargs = dict(model=model, reward_funcs=[_reward], args=args, train_dataset=Dataset.from_list(_rows(Path(a.data), proc, 8)),
                  processing_class=proc,
                  rollout_func=TRLRolloutFunc(stable_weights=True if a.stable_weights else None))
    trainer = Checked(shared_prefix=True, **kwargs) if a.mode == "fast" else Checked(**kwargs)
    trainer.train()

    import torch.distributed as dist

    params = dict(trainer.model.named_parameters())
    gathered = {}
    if a.stage == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(params.values()), modifier_rank=None):
            gathered = {n: p.detach().clone() for n, p in params.items()}
    else:
        gathered = {n: p.detach().clone() for n, p in params.items()}
    per_rank = [None] * dist.get_world_size()
    dist.all_gather_object(per_rank, {**checks, "shared_prefix_calls": getattr(trainer, "shared_prefix_calls", 0),
                                      "shared_prefix_fallbacks": getattr(trainer, "shared_prefix_fallbacks", {}),
                                      "rollout_calls": trainer.rollout_func.calls, "rollout_fallbacks": trainer.rollout_func.fallbacks,
                                      "rollout_policy": trainer.rollout_func.policy, "stable_copies": trainer.rollout_func._stable.copies})
    if dist.get_rank() == 0:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(gathered, out / "weights.pt")
        (out / "result.json").write_text(json.dumps({"world_size": dist.get_world_size(), "stage": a.stage, "mode": a.mode,
                                                      "global_step": trainer.state.global_step, "ranks": per_rank}, indent=1))
    # Leave together and tear the process group down before the interpreter exits: a rank that exits with gloo's
    # threads still running can abort in C++ teardown ("terminate called without an active exception", SIGABRT),
    # which failed one CI run of the DDP case.
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
