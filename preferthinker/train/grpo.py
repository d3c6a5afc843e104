"""Stage 2 recipe: GRPO from the SFT checkpoint with format, accuracy and profile-prediction rewards.

Reads top to bottom: config checks -> run dir -> records -> model (the SFT checkpoint) -> rewards from
the registry -> TRL dataset (prompt + images + reward columns) -> GRPOConfig -> train (resume) ->
final HF directory -> curves + results.json.

TRL logs, every step, `rewards/<name>/mean|std` for each reward (accuracy = answer accuracy, format =
format rate, pref_profile / nonpref_profile = profile similarity), `reward`, `reward_std`, `kl`,
`completions/mean_length` and `frac_reward_zero_std` (which misses groups whose float32 reward mean is off in the
last bit; the fast trainer also logs `frac_reward_flat`, counted with a tolerance: train/flat_groups.py).

    python scripts/train_grpo.py                                  # tiny default: continues the newest SFT run
    python scripts/train_grpo.py model.path=outputs/sft/<run>/final reward=acc_format
    accelerate launch --num_processes 8 scripts/train_grpo.py model=qwen2_5_vl_7b model.path=... deepspeed=zero3 run_dir=...
    python scripts/train_grpo.py rollout=trl                      # plain TRL (rollout=vllm: TRL's colocated vLLM)
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from preferthinker.data.loading import PromptSpec, build_examples, image_root_for
from preferthinker.data.schema import load_train_jsonl
from preferthinker.runtime import ConfigError, check, is_main_process, resolve_checkpoint, setup_run, write_json
from preferthinker.train.common import (distributed_report, fault_injection_callbacks, make_args, peft_config, plot_curves, ref_draw,
                                        save_final, throughput, train_with_resume, trainer_kwargs, validate_common)

log = logging.getLogger("preferthinker.grpo")


def validate(cfg: DictConfig) -> None:
    validate_common(cfg)
    t = cfg.trainer
    g = int(t.num_generations)
    check(g >= 2, "trainer.num_generations", g, "GRPO needs at least 2 completions per prompt")
    per_step = int(t.per_device_train_batch_size) * int(t.get("gradient_accumulation_steps", 1))
    check(per_step % g == 0, "trainer.per_device_train_batch_size*gradient_accumulation_steps", per_step,
          f"must be a multiple of num_generations={g} (the batch counts completions, not prompts)")
    check(int(t.max_completion_length) >= 16, "trainer.max_completion_length", t.max_completion_length, "use >= 16 tokens")
    check(float(t.temperature) > 0, "trainer.temperature", t.temperature, "sampling needs temperature > 0")
    check(t.loss_type in ("grpo", "dapo", "dr_grpo", "bnpo", "cispo", "sapo"), "trainer.loss_type", t.loss_type,
          "choose grpo, dapo, dr_grpo, bnpo, cispo or sapo")
    check(str(t.scale_rewards) in ("group", "batch", "none", "True", "False"), "trainer.scale_rewards", t.scale_rewards, "choose group, batch or none")
    check(float(t.beta) >= 0, "trainer.beta", t.beta, "the KL coefficient cannot be negative")
    rollout_settings(cfg.rollout)
    dynamic_sampling_rounds(cfg)


def dynamic_sampling_rounds(cfg: DictConfig) -> int:
    """``dynamic_sampling.max_rounds`` checked: a whole number in 0..64, and whole groups on each process."""
    ds = cfg.get("dynamic_sampling") or {}
    raw = ds.get("max_rounds", 0)
    check(isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw <= 64, "dynamic_sampling.max_rounds", raw,
          "use a whole number of extra generation rounds in 0..64 (0 = off)")
    if raw:
        t = cfg.trainer
        per_process = int(t.per_device_train_batch_size) * int(t.get("steps_per_generation") or t.get("gradient_accumulation_steps", 1))
        check(per_process % int(t.num_generations) == 0, "trainer.per_device_train_batch_size", t.per_device_train_batch_size,
              f"dynamic sampling regroups whole groups: per_device_train_batch_size x steps_per_generation ({per_process}) "
              f"must be a multiple of num_generations={t.num_generations}")
    return int(raw)


def _tri(value: object, key: str) -> bool | None:
    """``auto`` -> None, booleans as they are; anything else is a ConfigError naming ``key``."""
    if value in ("auto", None):
        return None
    check(isinstance(value, bool), key, value, "use auto, true or false")
    return bool(value)


def rollout_settings(r: DictConfig) -> dict:
    """What the ``rollout`` config group means for the trainer: ``fast`` (project trainer), ``rollout`` (options of
    ``TRLRolloutFunc``, or ``None`` to keep TRL's generation), ``shared_prefix`` and the ``GRPOConfig`` fields it sets.

    vLLM is never imported here: choosing it only checks that the package is installed, so that a missing vLLM is a
    ConfigError before any model is loaded rather than an ImportError inside TRL."""
    import importlib.util

    engine = str(r.get("engine", "fast"))
    check(engine in ("fast", "trl", "vllm"), "rollout.engine", engine, "choose fast, trl or vllm (configs/rollout/)")
    if engine == "trl":
        return {"engine": engine, "fast": False, "rollout": None, "shared_prefix": False, "grpo_args": {}}
    sp = r.get("shared_prefix", "auto")
    shared_prefix = "auto" if sp in ("auto", None) else _tri(sp, "rollout.shared_prefix")
    if engine == "fast":
        bucket = int(r.get("cache_bucket", 256))
        check(1 <= bucket <= 65536, "rollout.cache_bucket", bucket, "use 1..65536 tokens")
        options = {"static_cache": bool(r.get("static_cache", True)), "cache_bucket": bucket,
                   "compile": _tri(r.get("compile", "auto"), "rollout.compile"),
                   "stable_weights": _tri(r.get("stable_weights", "auto"), "rollout.stable_weights")}
        return {"engine": engine, "fast": True, "rollout": options, "shared_prefix": shared_prefix, "grpo_args": {}}
    mode = str(r.get("vllm_mode", "colocate"))
    check(mode == "colocate", "rollout.vllm_mode", mode, "only colocate is supported (server mode needs a separate `trl vllm-serve`)")
    util = float(r.get("gpu_memory_utilization", 0.3))
    check(0 < util < 1, "rollout.gpu_memory_utilization", util, "use a fraction in (0, 1)")
    tp = int(r.get("tensor_parallel_size", 1))
    check(tp >= 1, "rollout.tensor_parallel_size", tp, "use >= 1")
    if importlib.util.find_spec("vllm") is None:
        raise ConfigError("rollout=vllm: the vllm package is not installed. Install it with `pip install -e \".[vllm]\"` "
                          "(TRL 1.16 accepts vllm 0.22-0.31, CUDA only), or choose rollout=fast (the default) or rollout=trl")
    grpo_args = {"use_vllm": True, "vllm_mode": mode, "vllm_gpu_memory_utilization": util, "vllm_tensor_parallel_size": tp,
                 "vllm_enable_sleep_mode": bool(r.get("enable_sleep_mode", False))}
    if r.get("max_model_length") is not None:
        grpo_args["vllm_max_model_length"] = int(r.max_model_length)
    return {"engine": engine, "fast": True, "rollout": None, "shared_prefix": shared_prefix, "grpo_args": grpo_args}


def rollout_report(trainer: object, settings: dict) -> dict:
    """What the rollout and the loss pass actually did (results.json): engine, the fast path's policy (sharding,
    compiled decode, stable ZeRO-3 buffers), rollout calls and fallbacks, shared-prompt passes and why TRL's pass ran
    instead when it did."""
    rf = getattr(trainer, "rollout_func", None)
    out: dict = {"engine": settings["engine"]}
    if rf is not None and hasattr(rf, "policy"):
        out.update(policy=rf.policy, rollout_calls=rf.calls, rollout_fallbacks=rf.fallbacks, throughput=rf.throughput())
    if hasattr(trainer, "shared_prefix_calls"):
        out.update(shared_prefix=trainer.shared_prefix, shared_prefix_calls=trainer.shared_prefix_calls,
                   shared_prefix_fallbacks=dict(trainer.shared_prefix_fallbacks))
    return out


def step_times(history: list[dict]) -> dict:
    """TRL's per-step ``step_time``: the first step (warm-up: compilation, CUDA-graph capture, allocator growth) apart
    from the median of the others."""
    times = [float(h["step_time"]) for h in history if "step_time" in h]
    rest = sorted(times[1:])
    return {"first": round(times[0], 3) if times else None, "median_after_first": round(rest[len(rest) // 2], 3) if rest else None,
            "steps": len(times)}


def _mean(xs: list[float]) -> float | None:
    return round(sum(xs) / len(xs), 4) if xs else None


def run(cfg: DictConfig) -> dict:
    validate(cfg)
    ds_rounds = dynamic_sampling_rounds(cfg)
    run_dir = setup_run(cfg, "grpo")
    spec = PromptSpec.from_cfg(cfg.prompt, cfg.model)

    # 1. records (answer-only JSONL; the label and the true profiles feed the rewards)
    train_path = Path(str(cfg.data.train_grpo))
    if not train_path.is_file():
        raise ConfigError(f"data.train_grpo={train_path}: file does not exist (make it with `python scripts/make_data.py`)")
    image_root = image_root_for(train_path, cfg.data.image_root)
    records = load_train_jsonl(train_path, image_root)
    if cfg.data.get("max_samples"):
        records = records[: int(cfg.data.max_samples)]
    log.info("records: %d (from %s)", len(records), train_path)
    if "element_scores" in list(cfg.reward.names) and not any(r.extra.get("true_scores_a") is not None for r in records):
        raise ConfigError(f"reward.names includes element_scores, but no record of {train_path} has true_scores_a / true_scores_b "
                          "(per-element truth, which the synthetic data has and PreferImg does not); drop it from reward.names")

    # 2. policy = the SFT checkpoint
    from preferthinker.modeling import count_parameters, load_model_and_processor

    model_path = resolve_checkpoint(cfg.model.path)
    if not (Path(model_path) / "config.json").is_file() and not (Path(model_path) / "adapter_config.json").is_file():
        raise ConfigError(f"model.path={model_path}: not a checkpoint folder (no config.json). GRPO starts from the SFT "
                          f"checkpoint: pass model.path=outputs/sft/<run>/final")
    model, processor = load_model_and_processor(
        model_path, dtype=cfg.model.dtype, attn_implementation=cfg.model.attn_implementation,
        freeze_vision=bool(cfg.model.freeze_vision), min_pixels=spec.min_pixels, max_pixels=spec.max_pixels,
        for_training=True, padding_side="left",
    )
    log.info("policy %s: %s parameters", model_path, f"{count_parameters(model)['total']:,}")

    # 3. rewards from the registry; weights go to TRL's reward_weights
    from preferthinker.rewards import build_rewards

    reward_funcs, reward_weights = build_rewards(cfg.reward)
    log.info("rewards: %s", ", ".join(f"{f.__name__} x{w}" for f, w in zip(reward_funcs, reward_weights, strict=True)))

    # 4. dataset: conversational prompt (official interleaving via image placeholders) + images + reward columns
    from datasets import Dataset

    rows = build_examples(records, image_root, spec, kind="grpo", processor=processor, max_length=cfg.get("max_length"), source=str(train_path),
                          ref_draw=ref_draw(cfg), seed=int(cfg.seed))  # data.refs_per_side: 1-5 references per side per row
    train_ds = Dataset.from_list(rows)

    # 5. trainer
    from trl import GRPOConfig

    from preferthinker.train.fast_grpo import make_grpo_trainer

    settings = rollout_settings(cfg.rollout)
    kw = trainer_kwargs(cfg, run_dir)
    kw.update(settings["grpo_args"])
    kw["reward_weights"] = reward_weights
    if str(kw.get("scale_rewards")) in ("True", "False"):
        kw["scale_rewards"] = kw["scale_rewards"] == "True"
    args = make_args(GRPOConfig, kw)
    # rollout=fast: one shared prefill per prompt + static KV cache (+ CUDA graphs) for the rollout, and one prompt
    # pass per group in the loss (preferthinker/rollout.py, train/grpo_rollout.py, train/fast_grpo.py); rollout=trl:
    # plain TRL; rollout=vllm: TRL's colocated vLLM generation with the shared-prompt loss pass.
    extra = {} if settings["engine"] != "vllm" else {"rollout_func": None}
    trainer = make_grpo_trainer(fast=settings["fast"], rollout=settings["rollout"], shared_prefix=settings["shared_prefix"],
                                dynamic_sampling_rounds=ds_rounds,
                                model=model, reward_funcs=reward_funcs, args=args, train_dataset=train_ds,
                                processing_class=processor, peft_config=peft_config(cfg), callbacks=fault_injection_callbacks(),
                                **extra)

    out, wall, resume = train_with_resume(trainer, cfg)

    # 6. outputs
    dist_info = distributed_report(trainer.model)
    cfg_for_save = OmegaConf.merge(cfg, {"model": {"path": model_path}})
    final = save_final(trainer, processor, cfg_for_save, run_dir)
    history = trainer.state.log_history
    reward_keys = tuple(k for k in ("reward", *(f"rewards/{f.__name__}/mean" for f in reward_funcs), "completions/mean_length", "kl") if any(k in h for h in history))
    results = {
        "stage": "grpo",
        "init_model": model_path,
        "final_model": str(final),
        "train_loss": out.training_loss,
        "global_step": trainer.state.global_step,
        "train_prompts": len(train_ds),
        "train_runtime_s": round(wall, 1),
        "resumed_from": resume,
        "distributed": dist_info,
        "rollout": rollout_report(trainer, settings),
        "step_time_s": step_times(history),
        "dynamic_sampling": dict(getattr(trainer, "dynamic_sampling_stats", {}), max_rounds=ds_rounds),
        **throughput(history, wall, trainer.model),
        # share of the sampled groups whose rewards were all equal (no gradient; train/flat_groups.py counts them with a
        # tolerance: TRL's frac_reward_zero_std misses groups whose float32 reward mean is off in the last bit)
        "frac_reward_flat_mean": _mean([h["frac_reward_flat"] for h in history if "frac_reward_flat" in h]),
        "last_logged": {k: next((h[k] for h in reversed(history) if k in h), None) for k in reward_keys},
    }
    if is_main_process():
        plot_curves(history, run_dir / "reward_curves.png", reward_keys, f"GRPO {run_dir.name}")
        write_json(run_dir / "log_history.json", history)
        write_json(run_dir / "results.json", results)
    log.info("GRPO done in %.0fs, final model %s", wall, final)
    return results
