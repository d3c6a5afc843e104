#!/usr/bin/env python
"""GPU speed, side by side in one run: vanilla transformers/TRL against PreferThinker's fast paths (issue 8).

Model: Qwen2.5-VL-7B-shaped (8.29 B parameters, random weights, bf16, SDPA attention) built directly on the GPU.
Prompt: PreferThinker-shaped -- the official user texts with the compact system prompt and 12 images at 448x448
(5 preferred, 5 non-preferred, Image A, Image B): ~3.3k tokens. The processor is the project's tiny offline one
(built here in seconds; only its tokenizer size differs from Qwen's), so nothing is downloaded.

Stages, each timed and written to the JSON file as soon as it ends (a failing stage records its error and the
run goes on):

  env           GPU, versions, optional kernels present (flash_attn, liger_kernel, vllm)
  build         the model and the prompt
  rollout       plain ``model.generate`` (G samples x T new tokens, sampling) against ``FastRollout`` (one shared
                prefill, static KV cache, compiled CUDA-graph decode step); warm-up / compile calls reported apart;
                also the uncompiled static path and a greedy agreement check against ``generate``
  sft           full-parameter forward+backward of prompt + answer: tokens/s and MFU (6*N*tokens/time/989e12,
                and with the recompute of gradient checkpointing counted, 8*N*tokens), plain (checkpointing,
                batch 1, full logits) against the project's best settings that fit (no checkpointing, larger
                micro-batch, chunked cross-entropy, flash-attn when installed)
  grpo_vanilla  TRL ``GRPOTrainer`` steps, LoRA r=16 on q,v, G completions x T tokens, 1 prompt per step
  grpo_project  the same settings through ``make_grpo_trainer(fast=True)`` (FastRollout + shared-prompt loss
                pass, checkpointing off)
  summary       the ratios and the issue's goals

Only torch + transformers + peft are needed for env/build/rollout/sft; the GRPO stages import trl and datasets.

    python benchmarks/gpu_speed.py                       # GPU: writes $OUT/gpu_speed.json (or ./gpu_speed.json)
    python benchmarks/gpu_speed.py --quick --out x.json  # CPU smoke run on the tiny model (tests use it)
    python benchmarks/gpu_speed.py --mode recipes ...    # the recipes as launched: torchrun + ZeRO-2/3, project vs
                                                         # vanilla TRL (benchmarks/recipe_speed.py; --shape tiny on CPU)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

PEAK_BF16_FLOPS = 989e12  # dense bf16 of an H100/H200 SXM (datasheet); the MFU denominator


# --------------------------------------------------------------------------------------------------
# run bookkeeping


class Run:
    def __init__(self, out: Path, quick: bool, budget_s: float) -> None:
        self.out = out
        self.quick = quick
        self.budget_s = budget_s
        self.t0 = time.time()
        self.results: dict[str, Any] = {"meta": {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "quick": quick,
                                                 "argv": sys.argv[1:]}}
        self.state: dict[str, Any] = {}
        self.cuda = torch.cuda.is_available() and not quick
        self.device = "cuda" if self.cuda else "cpu"

    def log(self, msg: str) -> None:
        print(f"[{time.time() - self.t0:7.1f}s] {msg}", flush=True)

    def save(self) -> None:
        self.results["meta"]["elapsed_s"] = round(time.time() - self.t0, 1)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.results, indent=1, default=str))
        tmp.replace(self.out)

    def stage(self, name: str, fn: Callable[[], dict], *, needs: tuple[str, ...] = (), min_left_s: float = 0) -> None:
        missing = [n for n in needs if not self.results.get(n, {}).get("ok")]
        left = self.budget_s - (time.time() - self.t0)
        if missing:
            res = {"ok": False, "skipped": f"needs stage(s) that failed or were skipped: {', '.join(missing)}"}
        elif left < min_left_s:
            res = {"ok": False, "skipped": f"time budget: {left:.0f}s left, stage needs ~{min_left_s:.0f}s (--budget-s)"}
        else:
            self.log(f">>> {name}")
            t = time.time()
            try:
                res = fn()
                res["ok"] = True
            except BaseException as err:  # noqa: BLE001 - every stage reports on its own
                if isinstance(err, KeyboardInterrupt):
                    raise
                traceback.print_exc()
                res = {"ok": False, "error": f"{type(err).__name__}: {str(err)[:1500]}",
                       "traceback": traceback.format_exc()[-4000:]}
            res["wall_s"] = round(time.time() - t, 2)
            if self.cuda:
                res.setdefault("peak_gib", round(torch.cuda.max_memory_allocated() / 2**30, 1))
        self.results[name] = res
        self.save()
        short = {k: v for k, v in res.items() if k != "traceback"}
        self.log(f"<<< {name}: {json.dumps(short, default=str)[:2000]}")

    # timing helpers
    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------------------
# shapes


def shape(quick: bool, args: argparse.Namespace) -> dict[str, Any]:
    if quick:
        return dict(side=56, n_images=12, G=2, new_tokens=8, grpo_steps=2, grpo_tokens=8, sft_answer=32,
                    sft_iters=2, greedy_tokens=8, nocompile_tokens=8)
    return dict(side=448, n_images=12, G=args.G, new_tokens=args.new_tokens, grpo_steps=args.grpo_steps,
                grpo_tokens=args.grpo_tokens, sft_answer=1024, sft_iters=3, greedy_tokens=32, nocompile_tokens=64)


def qwen7b_config(ids: dict[str, int]):
    from transformers import Qwen2_5_VLConfig

    cfg = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
            "num_attention_heads": 28, "num_key_value_heads": 4, "max_position_embeddings": 32768,
            "max_window_layers": 28, "use_sliding_window": False, "rms_norm_eps": 1e-6,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [16, 24, 24]},
            "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"], "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "out_hidden_size": 3584,
            "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112,
            "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2,
        },
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    cfg._attn_implementation = "sdpa"
    return cfg


# --------------------------------------------------------------------------------------------------
# stages


def stage_env(run: Run) -> dict:
    import transformers

    out: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "cuda_runtime": torch.version.cuda, "device": run.device,
    }
    if run.cuda:
        props = torch.cuda.get_device_properties(0)
        out.update(gpu=torch.cuda.get_device_name(0), gpu_mem_gib=round(props.total_memory / 2**30, 1),
                   sm_count=props.multi_processor_count)
    for mod in ("peft", "accelerate", "trl", "datasets", "flash_attn", "liger_kernel", "vllm", "triton"):
        try:
            m = __import__(mod)
            out[mod] = getattr(m, "__version__", "present")
        except Exception as err:  # noqa: BLE001
            out[mod] = "absent" if isinstance(err, ImportError) else f"broken: {type(err).__name__}"
    return out


def _texts() -> list[str]:
    from preferthinker import prompting

    return [prompting.PREF_INTRO, prompting.NONPREF_INTRO, prompting.CANDIDATES_INTRO, prompting.FINAL_INSTRUCTION,
            prompting.COMPACT_SYSTEM, "Image A", "Image B", *prompting.COMPACT_TEXTS.values()]


def _images(n: int, side: int, seed: int):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)) for _ in range(n)]


def _messages(images: list, embed: bool):
    from preferthinker.prompting import build_messages

    k = (len(images) - 2) // 2
    msgs, imgs = build_messages(images[:k], images[k:2 * k], images[-2], images[-1], style="official", system="compact",
                                max_refs=k, embed_images=embed)
    return msgs, imgs


def new_model(run: Run):
    """A fresh model: the 7B shape with random bf16 weights on the GPU, or the tiny checkpoint on CPU."""
    from transformers import AutoModelForImageTextToText, GenerationConfig, Qwen2_5_VLForConditionalGeneration

    st = run.state
    if run.quick:
        model = AutoModelForImageTextToText.from_pretrained(st["tiny_dir"], dtype=torch.float32)
    else:
        torch.manual_seed(0)
        with torch.device("cuda"):
            model = Qwen2_5_VLForConditionalGeneration._from_config(qwen7b_config(st["ids"]), dtype=torch.bfloat16)
        model.generation_config = GenerationConfig(bos_token_id=st["ids"]["<|endoftext|>"], eos_token_id=st["ids"]["<|im_end|>"],
                                                   pad_token_id=st["ids"]["<|endoftext|>"])
    model.eval()
    return model


def stage_build(run: Run, sh: dict) -> dict:
    from transformers import AutoProcessor

    from preferthinker.modeling import QWEN_SPECIAL_TOKENS, build_tiny_model

    st = run.state
    tmp = Path(tempfile.mkdtemp(prefix="gpu_speed_"))
    st["tmp"] = tmp
    side = sh["side"]
    t = time.time()
    tiny = build_tiny_model(tmp / "tiny", _texts(), vocab_size=1024, min_pixels=side * side, max_pixels=side * side)
    st["tiny_dir"] = tiny
    proc = AutoProcessor.from_pretrained(tiny)
    proc.tokenizer.padding_side = "left"
    st["proc"] = proc
    st["ids"] = {t_: proc.tokenizer.convert_tokens_to_ids(t_) for t_ in QWEN_SPECIAL_TOKENS}
    processor_s = time.time() - t

    run.reset_peak()
    t = time.time()
    model = new_model(run)
    run.sync()
    build_s = time.time() - t
    st["model"] = model

    images = _images(sh["n_images"], side, seed=0)
    msgs, _ = _messages(images, embed=True)
    t = time.time()
    enc = proc.apply_chat_template(msgs, tokenize=True, return_dict=True, return_tensors="pt", add_generation_prompt=True)
    proc_s = time.time() - t
    st["enc"] = {k: v.to(run.device) for k, v in enc.items()}
    n_params = sum(p.numel() for p in model.parameters())
    st["n_params"] = n_params
    image_tokens = int((enc["input_ids"] == model.config.image_token_id).sum())
    return {"params_b": round(n_params / 1e9, 3), "prompt_tokens": int(enc["input_ids"].shape[1]), "image_tokens": image_tokens,
            "images": sh["n_images"], "image_side": side, "attn_implementation": model.config._attn_implementation,
            "dtype": str(next(model.parameters()).dtype), "processor_build_s": round(processor_s, 2),
            "model_build_s": round(build_s, 2), "image_processing_s": round(proc_s, 3)}


def stage_rollout(run: Run, sh: dict) -> dict:
    from preferthinker.rollout import FastRollout

    st = run.state
    model, proc, enc = st["model"], st["proc"], st["enc"]
    G, T = sh["G"], sh["new_tokens"]
    res: dict[str, Any] = {"G": G, "new_tokens": T, "prompt_tokens": int(enc["input_ids"].shape[1])}

    def plain(n_new: int, g: int, **kw) -> float:
        run.sync()
        t = time.time()
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=n_new, min_new_tokens=n_new, num_return_sequences=g, **kw)
        run.sync()
        assert out.shape[1] - enc["input_ids"].shape[1] == n_new
        return time.time() - t

    sample_kw = dict(do_sample=True, temperature=1.0, top_p=1.0, top_k=0)
    res["plain_warmup_s"] = round(plain(4, G, **sample_kw), 3)
    run.reset_peak()
    s = plain(T, G, **sample_kw)
    res["plain_s"] = round(s, 3)
    res["plain_tok_s"] = round(G * T / s, 1)
    if run.cuda:
        res["plain_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
    run.log(f"plain generate: {res['plain_tok_s']} new tokens/s")

    fast = FastRollout(model, proc, max_new_tokens=T, temperature=1.0, top_p=1.0, static_cache=True, compile=run.cuda,
                       min_new_tokens=T)
    run.sync()
    t = time.time()
    fast.generate(enc, num_generations=G, seed=0)
    run.sync()
    res["fast_warmup_s"] = round(time.time() - t, 2)  # compile + CUDA-graph capture
    run.reset_peak()
    times, stats = [], []
    for seed in (1, 2):
        run.sync()
        t = time.time()
        out = fast.generate(enc, num_generations=G, seed=seed)
        run.sync()
        times.append(time.time() - t)
        stats.append(dict(fast.last_stats))
        res.setdefault("fast_tokens_made", []).append(int(out.mask.sum()))  # G*T: EOS is blocked (min_new_tokens)
    best = min(range(len(times)), key=times.__getitem__)
    res["fast_s"] = [round(x, 3) for x in times]
    res["fast_tok_s"] = round(G * T / times[best], 1)
    res["fast_prefill_s"] = round(stats[best]["prefill_s"], 3)
    res["fast_decode_ms_per_step"] = round(1000 * stats[best]["decode_s"] / max(stats[best]["steps"] - 1, 1), 2)
    res["fast_compiled"] = stats[best]["compiled"]
    res["fast_compile_error"] = fast.compile_error
    if run.cuda:
        res["fast_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
    res["speedup"] = round(res["fast_tok_s"] / res["plain_tok_s"], 2)
    del fast
    torch._dynamo.reset()

    # optional extras (after the main figures, each on its own): greedy agreement and the uncompiled speed
    def greedy_check() -> None:
        gt = sh["greedy_tokens"]
        with torch.no_grad():
            ref = model.generate(**enc, do_sample=False, max_new_tokens=gt, min_new_tokens=gt)[:, enc["input_ids"].shape[1]:]
        eager = FastRollout(model, proc, max_new_tokens=gt, static_cache=True, compile=False, min_new_tokens=gt)
        ids, _, _ = eager.generate(enc, num_generations=1, greedy=True)
        same = (ids[0, : ref.shape[1]] == ref[0, : ids.shape[1]]).int()
        res["greedy_prefix_match"] = int(same.cumprod(0).sum())  # bf16: near-ties may diverge late
        res["greedy_tokens_compared"] = int(min(ids.shape[1], ref.shape[1]))

    def nocompile() -> None:
        nt = sh["nocompile_tokens"]
        eager = FastRollout(model, proc, max_new_tokens=nt, static_cache=True, compile=False, min_new_tokens=nt)
        eager.generate(enc, num_generations=G, seed=0)
        res["fast_nocompile_tokens"] = nt
        res["fast_nocompile_tok_s"] = round(eager.last_stats["new_tokens"] / eager.last_stats["total_s"], 1)

    for name, fn in (("greedy_check", greedy_check), ("nocompile", nocompile)):
        try:
            fn()
        except Exception as err:  # noqa: BLE001
            res[f"{name}_error"] = f"{type(err).__name__}: {str(err)[:500]}"
    run.free()
    return res


def _sft_batch(run: Run, answer: int, mb: int):
    enc = run.state["enc"]
    vocab = run.state["model"].config.get_text_config().vocab_size
    g = torch.Generator(device="cpu").manual_seed(0)
    ans = torch.randint(10, min(vocab, 100_000), (1, answer), generator=g).to(run.device)
    ids = torch.cat([enc["input_ids"], ans], 1)
    labels = ids.clone()
    labels[:, : enc["input_ids"].shape[1]] = -100
    kw = {"input_ids": ids.repeat(mb, 1), "attention_mask": torch.ones_like(ids).repeat(mb, 1),
          "pixel_values": enc["pixel_values"].repeat(mb, 1), "image_grid_thw": enc["image_grid_thw"].repeat(mb, 1)}
    if "mm_token_type_ids" in enc:
        kw["mm_token_type_ids"] = torch.cat([enc["mm_token_type_ids"], torch.zeros_like(ans)], 1).repeat(mb, 1)
    return kw, labels.repeat(mb, 1)


def _chunked_ce_loss(model, kw: dict, labels: torch.Tensor) -> torch.Tensor:
    from preferthinker.train.fast_grpo import token_logps

    hidden = model.model(**kw).last_hidden_state[:, :-1]
    y = labels[:, 1:]
    keep = y != -100
    head = model.get_output_embeddings()
    lp, _ = token_logps(hidden[keep], head.weight, head.bias, y[keep], 1.0, chunk=4096, want_entropy=False)
    return -lp.mean()


def _fwd_bwd(run: Run, model, sh: dict, *, mb: int, ckpt: bool, chunked_ce: bool) -> dict:
    kw, labels = _sft_batch(run, sh["sft_answer"], mb)
    if ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()
    model.train()
    model.config.use_cache = False
    times = []
    run.reset_peak()
    try:
        for _ in range(sh["sft_iters"]):
            run.sync()
            t = time.time()
            if chunked_ce:
                loss = _chunked_ce_loss(model, kw, labels)
            else:
                loss = model(**kw, labels=labels).loss
            loss.backward()
            run.sync()
            times.append(time.time() - t)
            model.zero_grad(set_to_none=True)
            del loss
    finally:
        model.zero_grad(set_to_none=True)
        model.gradient_checkpointing_disable()
        model.eval()
    tokens = int(kw["input_ids"].numel())
    step = min(times[1:]) if len(times) > 1 else times[0]
    n = run.state["n_params"]
    flops = 6 * n * tokens
    return {"micro_batch": mb, "gradient_checkpointing": ckpt, "chunked_ce": chunked_ce, "tokens": tokens,
            "step_s": [round(x, 3) for x in times], "tokens_per_s": round(tokens / step, 1),
            "mfu": round(flops / step / PEAK_BF16_FLOPS, 6),
            "mfu_with_recompute": round((8 if ckpt else 6) * n * tokens / step / PEAK_BF16_FLOPS, 6),
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1) if run.cuda else None}


def stage_sft(run: Run, sh: dict) -> dict:
    model = run.state["model"]
    res: dict[str, Any] = {"peak_flops": PEAK_BF16_FLOPS, "n_params": run.state["n_params"],
                           "formula": "mfu = 6*N*tokens/step_s/peak; with recompute 8*N*tokens when checkpointing"}
    try:
        res["plain"] = _fwd_bwd(run, model, sh, mb=1, ckpt=True, chunked_ce=False)
        run.log(f"sft plain: {res['plain']['tokens_per_s']} tokens/s, mfu {res['plain']['mfu_with_recompute']} (recompute counted)")
    except Exception as err:  # noqa: BLE001 - the best settings are still measured
        res["plain_error"] = f"{type(err).__name__}: {str(err)[:500]}"
        model.zero_grad(set_to_none=True)
    run.free()
    switched = None
    try:
        import flash_attn  # noqa: F401

        if run.cuda and hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation("flash_attention_2")
            switched = "flash_attention_2"
    except Exception:  # noqa: BLE001 - absent or broken: stay on SDPA
        switched = None
    res["best_attn_implementation"] = switched or model.config._attn_implementation
    tried = []
    for mb, ckpt in ((2, False), (1, False), (2, True), (1, True)):
        try:
            res["best"] = _fwd_bwd(run, model, sh, mb=mb, ckpt=ckpt, chunked_ce=True)
            tried.append({"micro_batch": mb, "gradient_checkpointing": ckpt, "ok": True})
        except (torch.cuda.OutOfMemoryError, RuntimeError) as err:  # OOM (also as a RuntimeError from some kernels)
            tried.append({"micro_batch": mb, "gradient_checkpointing": ckpt, "ok": False, "error": str(err)[:200]})
        model.zero_grad(set_to_none=True)
        run.free()  # after the except block, so that the failed attempt's frames are gone
        if "best" in res:
            break
    res["best_tried"] = tried
    if switched:
        model.set_attn_implementation("sdpa")
    if "best" in res and "plain" in res and res["plain"]["tokens_per_s"] > 0:
        res["tokens_per_s_ratio"] = round(res["best"]["tokens_per_s"] / res["plain"]["tokens_per_s"], 2)
    run.free()
    return res


def _grpo(run: Run, sh: dict, fast: bool) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import GRPOConfig

    from preferthinker.train.fast_grpo import make_grpo_trainer

    st = run.state
    G, T, steps = sh["G"], sh["grpo_tokens"], sh["grpo_steps"]
    msgs, _ = _messages(_images(sh["n_images"], sh["side"], seed=0), embed=False)
    rows = [{"prompt": msgs, "images": _images(sh["n_images"], sh["side"], seed=100 + i), "solution": "Image A"}
            for i in range(max(steps, 4))]
    ds = Dataset.from_list(rows)

    def accuracy(completions, solution, **kw):
        return [float(s in c[0]["content"]) for c, s in zip(completions, solution)]

    def length(completions, **kw):
        return [len(c[0]["content"]) / 1000 for c in completions]

    class StepClock(TrainerCallback):
        def __init__(self):
            self.times, self._t = [], 0.0

        def on_step_begin(self, args, state, control, **kw):
            run.sync()
            self._t = time.time()

        def on_step_end(self, args, state, control, **kw):
            run.sync()
            self.times.append(time.time() - self._t)

    clock = StepClock()
    run.reset_peak()
    model = new_model(run)
    cfg = GRPOConfig(
        output_dir=str(st["tmp"] / ("grpo_fast" if fast else "grpo_vanilla")), per_device_train_batch_size=G,
        num_generations=G, max_completion_length=T, max_steps=steps, logging_steps=1, report_to="none",
        bf16=run.cuda, use_cpu=not run.cuda, gradient_checkpointing=not fast, learning_rate=1e-5, save_strategy="no",
        temperature=1.0, seed=0, dataloader_num_workers=0,
    )
    kw = dict(model=model, reward_funcs=[accuracy, length], args=cfg, train_dataset=ds, processing_class=st["proc"],
              peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]),
              callbacks=[clock])
    t = time.time()
    trainer = make_grpo_trainer(fast=fast, **kw)
    init_s = time.time() - t
    t = time.time()
    trainer.train()
    wall = time.time() - t
    logs = [h for h in trainer.state.log_history if "step_time" in h or "completions/mean_length" in h]
    timed = clock.times[1:] if len(clock.times) > 1 else clock.times
    out = {"G": G, "new_tokens": T, "steps": steps, "gradient_checkpointing": not fast, "lora": "r=16 alpha=32 q_proj,v_proj",
           "init_s": round(init_s, 2), "train_wall_s": round(wall, 2), "step_s": [round(x, 3) for x in clock.times],
           "trl_step_time": [round(h["step_time"], 3) for h in logs if "step_time" in h],
           "mean_step_s_after_warmup": round(sum(timed) / len(timed), 3),
           "completion_mean_length": [h.get("completions/mean_length") for h in logs],
           "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1) if run.cuda else None}
    if fast:
        rf = trainer.rollout_func
        out.update(rollout_calls=rf.calls, rollout_fallbacks=rf.fallbacks, shared_prefix_calls=trainer.shared_prefix_calls,
                   last_rollout=rf.last_stats, compile_error=getattr(rf._rollout, "compile_error", None))
    del trainer, model
    torch._dynamo.reset()
    run.free()
    return out


def stage_summary(run: Run) -> dict:
    r = run.results
    ro, sft = r.get("rollout", {}), r.get("sft", {})
    gv, gp = r.get("grpo_vanilla", {}), r.get("grpo_project", {})
    out: dict[str, Any] = {"device": r.get("env", {}).get("gpu", r.get("env", {}).get("device"))}
    if ro.get("ok"):
        out["rollout_plain_tok_s"] = ro["plain_tok_s"]
        out["rollout_fast_tok_s"] = ro["fast_tok_s"]
        out["rollout_speedup"] = ro["speedup"]
        out["goal_rollout_1000_tok_s"] = ro["fast_tok_s"] >= 1000
    if gv.get("ok") and gp.get("ok"):
        out["grpo_vanilla_step_s"] = gv["mean_step_s_after_warmup"]
        out["grpo_project_step_s"] = gp["mean_step_s_after_warmup"]
        out["grpo_step_ratio"] = round(gp["mean_step_s_after_warmup"] / gv["mean_step_s_after_warmup"], 3)
        out["goal_grpo_ratio_le_1/3"] = out["grpo_step_ratio"] <= 1 / 3
    if sft.get("ok"):
        if "plain" in sft:
            out["sft_plain_mfu"] = sft["plain"]["mfu_with_recompute"]
        if "best" in sft:
            out["sft_best_mfu"] = sft["best"]["mfu"]
            out["goal_sft_mfu_0.35"] = sft["best"]["mfu"] >= 0.35
    return out


# --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--mode", choices=("stages", "recipes"), default="stages")
    mode, rest = pre.parse_known_args(sys.argv[1:] if argv is None else argv)
    if mode.mode == "recipes":  # the recipes as launched (torchrun + DeepSpeed), in benchmarks/recipe_speed.py
        from benchmarks.recipe_speed import main as recipes_main

        return recipes_main(rest)
    argv = rest
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_out = Path(os.environ["OUT"]) / "gpu_speed.json" if os.environ.get("OUT") else Path("gpu_speed.json")
    ap.add_argument("--out", type=Path, default=default_out, help="JSON results file (default $OUT/gpu_speed.json)")
    ap.add_argument("--quick", action="store_true", help="tiny model on CPU, tiny sizes: a smoke test of this script")
    ap.add_argument("--G", type=int, default=8, help="samples per prompt")
    ap.add_argument("--new-tokens", type=int, default=256, help="new tokens per sample in the rollout stage")
    ap.add_argument("--grpo-tokens", type=int, default=256, help="max completion length in the GRPO stages")
    ap.add_argument("--grpo-steps", type=int, default=3, help="GRPO steps per trainer (the first is the warm-up)")
    ap.add_argument("--stages", default="rollout,sft,grpo_vanilla,grpo_project",
                    help="comma list of rollout, sft, grpo_vanilla, grpo_project (env, build, summary always run)")
    ap.add_argument("--budget-s", type=float, default=480.0, help="skip stages that would start past this (s)")
    args = ap.parse_args(argv)
    run = Run(args.out, args.quick, args.budget_s)
    sh = shape(args.quick, args)
    run.results["meta"]["shape"] = sh
    wanted = {s.strip() for s in args.stages.split(",") if s.strip()}
    run.log(f"gpu_speed: writing {args.out} (quick={args.quick})")

    run.stage("env", lambda: stage_env(run))
    run.stage("build", lambda: stage_build(run, sh), needs=("env",))
    if "rollout" in wanted:
        run.stage("rollout", lambda: stage_rollout(run, sh), needs=("build",), min_left_s=0 if args.quick else 90)
    if "sft" in wanted:
        run.stage("sft", lambda: stage_sft(run, sh), needs=("build",), min_left_s=0 if args.quick else 30)
    run.state.pop("model", None)
    run.free()
    if "grpo_vanilla" in wanted:
        run.stage("grpo_vanilla", lambda: _grpo(run, sh, fast=False), needs=("build",), min_left_s=0 if args.quick else 120)
    if "grpo_project" in wanted:
        run.stage("grpo_project", lambda: _grpo(run, sh, fast=True), needs=("build",), min_left_s=0 if args.quick else 80)
    run.stage("summary", lambda: stage_summary(run))
    run.log(f"done: {args.out}")
    print("DONE", json.dumps(run.results.get("summary", {})), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
