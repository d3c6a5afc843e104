"""TRL ``rollout_func`` that samples GRPO completions with ``preferthinker.rollout.FastRollout``, on one process or many.

``GRPOTrainer._generate`` calls ``rollout_func(prompts, trainer)`` with the conversational prompts (images already
placed in the messages by ``prepare_multimodal_messages``) and takes back ``prompt_ids`` / ``completion_ids`` /
``logprobs``. That hook works for VLMs without vLLM, so no trainer method is overridden for the rollout. Settings
FastRollout does not implement fall back to TRL's own ``_tokenize_prompts`` + ``_generate_single_turn``.

How the rollout runs under each way of sharding the model (``sharding_of``):

* one process, DDP, DeepSpeed ZeRO-1/2: every process holds the whole model at fixed addresses (the optimizer writes
  the new weights in place), so the CUDA-graph-compiled decode step is captured once and replayed every rollout.
* ZeRO-3: TRL's ``unwrap_model_for_generation`` gathers every parameter once per rollout (``ds3_gather_for_generation``,
  TRL's default) and removes ZeRO's per-module hooks; decoding then runs on the gathered weights with no collective
  at all. The gathered tensors land at new addresses on every gather, which would leave captured CUDA graphs reading
  freed memory, so with compilation on (``stable_weights``) the gathered weights are copied into buffers allocated
  once and the parameters point at them while decoding (one device-to-device copy of the model per rollout, one extra
  copy of the model in memory). Without the gather, ZeRO-3 gathers layer by layer inside every forward, a collective
  that each rank must call the same number of times, while FastRollout stops early when its own rows are done: that
  setting therefore uses TRL's generation (which syncs the ranks).
* FSDP: uncompiled (FSDP re-shards parameters after each forward).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

from preferthinker.rollout import FastRollout, _unwrap

log = logging.getLogger(__name__)

__all__ = ["StableWeights", "TRLRolloutFunc", "consecutive_groups", "prompt_key", "sharding_of"]


def _fingerprint(obj: Any, h: Any) -> None:
    """Feed a prompt's content (text and image pixels) into a hash."""
    if isinstance(obj, Mapping):
        for k in sorted(obj, key=str):
            h.update(str(k).encode())
            _fingerprint(obj[k], h)
    elif isinstance(obj, (list, tuple)):
        h.update(b"[")
        for x in obj:
            _fingerprint(x, h)
        h.update(b"]")
    elif hasattr(obj, "tobytes") and hasattr(obj, "size") and hasattr(obj, "mode"):  # PIL image
        h.update(f"img{obj.size}{obj.mode}".encode())
        h.update(obj.tobytes())
    elif isinstance(obj, torch.Tensor):
        h.update(obj.detach().cpu().numpy().tobytes())
    else:
        h.update(repr(obj).encode())


def prompt_key(prompt: Any) -> str:
    """A content hash of one prompt (messages and image pixels)."""
    h = hashlib.blake2b(digest_size=16)
    _fingerprint(prompt, h)
    return h.hexdigest()


def consecutive_groups(keys: Sequence[str]) -> list[tuple[int, int]]:
    """(start, size) of runs of equal consecutive keys: TRL's sampler repeats each prompt G times in a row."""
    groups: list[tuple[int, int]] = []
    for i, k in enumerate(keys):
        if groups and keys[groups[-1][0]] == k:
            groups[-1] = (groups[-1][0], groups[-1][1] + 1)
        else:
            groups.append((i, 1))
    return groups


def sharding_of(trainer: Any) -> str:
    """How the trainer's model is spread over processes: ``none``, ``ddp``, ``zero1``/``zero2``/``zero3`` or ``fsdp``."""
    if getattr(trainer, "is_fsdp_enabled", False):
        return "fsdp"
    if getattr(trainer, "is_deepspeed_enabled", False):
        plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
        stage = int(getattr(plugin, "zero_stage", 0) or 0) if plugin is not None else 0
        return f"zero{stage}"
    return "ddp" if trainer.accelerator.num_processes > 1 else "none"


class StableWeights:
    """Parameters at the same addresses on every rollout: the gathered ZeRO-3 weights are copied into buffers that
    are allocated on the first call and reused, and the parameters point at them inside ``pinned``."""

    def __init__(self) -> None:
        self._buffers: list[torch.Tensor] = []
        self.copies = 0

    def addresses(self) -> list[int]:
        return [b.data_ptr() for b in self._buffers]

    @contextlib.contextmanager
    def pinned(self, model: torch.nn.Module) -> Iterator[None]:
        params = list(model.parameters())
        if len(self._buffers) != len(params) or any(b.shape != p.data.shape or b.dtype != p.dtype
                                                    for b, p in zip(self._buffers, params, strict=False)):
            self._buffers = [torch.empty_like(p.data) for p in params]
        saved = []
        for p, buf in zip(params, self._buffers, strict=True):
            buf.copy_(p.data)
            saved.append(p.data)
            p.data = buf
        self.copies += 1
        try:
            yield
        finally:  # hand the gathered tensors back so that ZeRO-3 re-partitions what it gathered
            for p, data in zip(params, saved, strict=True):
                p.data = data


class TRLRolloutFunc:
    """A TRL ``rollout_func`` that samples with ``FastRollout``.

    Args:
        static_cache, cache_bucket, check_every: passed to ``FastRollout``.
        compile: compile the decode step; ``None`` = on CUDA unless FSDP (ZeRO-3 then decodes from stable buffers).
        stable_weights: under ZeRO-3, decode from buffers allocated once (see the module docstring); ``None`` = when
            compiling.
    """

    def __init__(self, *, static_cache: bool = True, compile: bool | None = None, cache_bucket: int = 256,
                 check_every: int | None = None, stable_weights: bool | None = None) -> None:
        self.static_cache = static_cache
        self.compile = compile
        self.cache_bucket = cache_bucket
        self.check_every = check_every
        self.stable_weights = stable_weights
        self._rollout: FastRollout | None = None
        self._rollout_model_id: int | None = None
        self._stable = StableWeights()
        self.calls = 0
        self.fallbacks = 0
        self.last_stats: list[dict] = []
        self.policy: dict[str, Any] = {}
        # sums over the rollouts after the first (the first one compiles / captures CUDA graphs on GPU)
        self.totals: dict[str, float] = {"rollouts": 0, "new_tokens": 0, "prefill_s": 0.0, "decode_s": 0.0}

    def unsupported(self, trainer: Any) -> str | None:
        """Why FastRollout cannot reproduce TRL's sampling for this trainer (None when it can)."""
        args = trainer.args
        if getattr(trainer, "tools", None):
            return "tools"
        if getattr(trainer, "environment_factories", None):
            return "environment_factory"
        if float(getattr(trainer, "repetition_penalty", 1.0) or 1.0) != 1.0:
            return "repetition_penalty"
        if getattr(args, "generation_kwargs", None):
            return "generation_kwargs"
        if getattr(trainer, "use_vllm", False):
            return "use_vllm"
        if sharding_of(trainer) == "zero3" and not getattr(args, "ds3_gather_for_generation", True):
            return "ZeRO-3 without ds3_gather_for_generation (per-layer gathers need every rank in step)"
        return None

    def decide(self, trainer: Any) -> dict[str, Any]:
        """The rollout policy for this trainer: sharding, compiled decode, stable ZeRO-3 buffers."""
        sharding = sharding_of(trainer)
        compile_ = self.compile if self.compile is not None else (torch.cuda.is_available() and sharding != "fsdp")
        if sharding == "fsdp":
            compile_ = False  # FSDP frees and re-gathers the flat parameters around every forward
        stable = self.stable_weights if self.stable_weights is not None else bool(compile_)
        stable = bool(stable) and sharding == "zero3"
        if sharding == "zero3" and compile_ and not stable:
            compile_ = False  # graphs captured on one gather's addresses would read freed memory on the next
        return {"sharding": sharding, "compile": bool(compile_), "stable_weights": stable}

    def _fallback(self, prompts: list, trainer: Any) -> dict:
        self.fallbacks += 1
        mode = "train" if trainer.model.training else "eval"
        num_generations = trainer.num_generations if mode == "train" else trainer.num_generations_eval
        prompt_ids, images, fields = trainer._tokenize_prompts(prompts)
        completion_ids, logprobs = trainer._generate_single_turn(prompt_ids, images, fields, num_generations)
        return {"prompt_ids": [list(p) for p in prompt_ids], "completion_ids": completion_ids, "logprobs": logprobs}

    def _rollout_for(self, model: Any, trainer: Any) -> FastRollout:
        if self._rollout is None or self._rollout_model_id != id(model):
            suppress = None
            proc = trainer.processing_class
            if hasattr(proc, "image_processor") and getattr(_unwrap(model).config, "image_token_id", None) is not None:
                suppress = [_unwrap(model).config.image_token_id]  # as TRL: a sampled image token breaks the forward
            self._rollout = FastRollout(
                model, proc, max_new_tokens=trainer.max_completion_length, temperature=trainer.temperature,
                top_p=trainer.top_p, top_k=trainer.top_k or 0, min_p=trainer.min_p, static_cache=self.static_cache,
                compile=self.policy["compile"], eos_token_id=trainer.eos_token_ids,
                pad_token_id=trainer._tokenizer.pad_token_id, suppress_tokens=suppress, cache_bucket=self.cache_bucket,
                check_every=self.check_every,
            )
            self._rollout_model_id = id(model)
        return self._rollout

    def _tokenize(self, trainer: Any, prompts: list) -> dict:
        from trl.data_utils import is_conversational, prepare_multimodal_messages

        proc = trainer.processing_class
        tok = getattr(proc, "tokenizer", proc)
        side = tok.padding_side
        tok.padding_side = "left"
        try:
            if is_conversational({"prompt": prompts[0]}):
                if getattr(trainer, "_is_vlm", False):
                    prompts = [prepare_multimodal_messages(p) for p in prompts]
                enc = proc.apply_chat_template(
                    conversation=prompts, chat_template=trainer.chat_template, add_generation_prompt=True, tokenize=True,
                    return_dict=True, return_tensors="pt", padding=True, **trainer.chat_template_kwargs,
                )
            else:
                enc = proc(text=prompts, return_tensors="pt", padding=True)
        finally:
            tok.padding_side = side
        return dict(enc)

    def __call__(self, prompts: list, trainer: Any) -> dict:
        from trl.models import unwrap_model_for_generation

        self.calls += 1
        why = self.unsupported(trainer)
        if why is not None:
            if self.fallbacks == 0:
                log.warning("fast rollout: %s is not supported by FastRollout; using TRL's own generation", why)
            return self._fallback(prompts, trainer)
        if not self.policy:
            self.policy = self.decide(trainer)
            log.info("fast rollout policy: %s", self.policy)

        groups = consecutive_groups([prompt_key(p) for p in prompts])
        by_size: dict[int, list[int]] = {}
        for start, size in groups:
            by_size.setdefault(size, []).append(start)
        out_prompt: list[list[int] | None] = [None] * len(prompts)
        out_comp: list[list[int] | None] = [None] * len(prompts)
        out_logp: list[list[float] | None] = [None] * len(prompts)
        args = trainer.args
        self.last_stats = []
        # one gather per rollout under ZeRO-3 (TRL's context), then no collective until the loss pass
        with (
            unwrap_model_for_generation(
                trainer.model_wrapped, trainer.accelerator, gather_deepspeed3_params=args.ds3_gather_for_generation,
                gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs,
            ) as unwrapped,
            self._stable.pinned(unwrapped) if self.policy["stable_weights"] else contextlib.nullcontext(),
            torch.no_grad(),
        ):
            fr = self._rollout_for(unwrapped, trainer)
            for size, starts in by_size.items():
                enc = self._tokenize(trainer, [prompts[s] for s in starts])
                seed = int(torch.randint(0, 2**62, (1,)).item())  # follows the trainer's seed
                res = fr.generate(enc, num_generations=size, seed=seed)
                self.last_stats.append(dict(fr.last_stats))
                am = enc["attention_mask"].bool()
                ids_cpu, logp_cpu, mask_cpu = res.completion_ids.cpu(), res.logprobs.cpu(), res.mask.cpu().bool()
                for u, start in enumerate(starts):
                    p_ids = enc["input_ids"][u][am[u]].tolist()
                    for g in range(size):
                        row = u * size + g
                        m = mask_cpu[row]
                        out_prompt[start + g] = p_ids
                        out_comp[start + g] = ids_cpu[row][m].tolist()
                        out_logp[start + g] = logp_cpu[row][m].tolist()
        if self.calls > 1:
            self.totals["rollouts"] += 1
            for st in self.last_stats:
                self.totals["new_tokens"] += st["new_tokens"]
                self.totals["prefill_s"] += st["prefill_s"]
                self.totals["decode_s"] += st["decode_s"]
        return {"prompt_ids": out_prompt, "completion_ids": out_comp, "logprobs": out_logp}

    def throughput(self) -> dict[str, Any]:
        """New tokens per second of this process's rollouts after the first (results.json ``rollout``)."""
        t = dict(self.totals)
        busy = t["prefill_s"] + t["decode_s"]
        t["new_tokens_per_s"] = round(t["new_tokens"] / busy, 1) if busy > 0 else None
        t["prefill_s"], t["decode_s"] = round(t["prefill_s"], 3), round(t["decode_s"], 3)
        return t
