"""Opt-in fast paths for TRL's ``GRPOTrainer`` (TRL 1.16): the project's rollout and a shared-prompt loss pass.

Two levers, each exact (the same sampling distribution, the same log-probs and gradients up to float rounding):

1. **Rollout** through ``preferthinker.rollout.FastRollout`` (one prefill per prompt shared by its G samples, a
   static KV cache, a CUDA-graph-compiled decode step on CUDA). It plugs into TRL through TRL's own
   ``rollout_func`` argument (experimental in 1.16): ``GRPOTrainer._generate`` calls ``rollout_func(prompts,
   trainer)`` with the conversational prompts (images already placed in the messages by
   ``prepare_multimodal_messages``) and takes back ``prompt_ids`` / ``completion_ids`` / ``logprobs``; it then
   restores the dataset images itself for the loss forward. That hook works for VLMs without vLLM, so no trainer
   method is overridden for the rollout. Settings FastRollout does not implement (``repetition_penalty``, custom
   ``generation_kwargs``, tools, environments) fall back to TRL's own ``_tokenize_prompts`` +
   ``_generate_single_turn``.

2. **Shared-prompt log-probs** (``FastGRPOTrainer``). TRL scores each of the G completions of a prompt with a full
   forward over prompt + completion, so a 3.3k-token, 12-image prompt goes through the vision tower and the decoder
   G times, forward and backward. ``FastGRPOTrainer._get_per_token_logps_and_entropies`` (the smallest method that
   computes them; TRL has no hook for it) groups the rows of a batch that share a prompt (same ids, same pixels),
   runs the prompt once into a ``DynamicCache``, repeats the cache rows (a differentiable ``index_select``) and runs
   only the completion tokens against it. Gradients flow back through the cache into the single prompt pass, so
   the result equals the per-row computation. It applies to one-process training (no DDP/DeepSpeed/FSDP wrapper,
   whose hooks need the wrapped forward) on Qwen-style inputs (``image_grid_thw`` + ``mm_token_type_ids``);
   anything else uses TRL's method. Its forward cannot be checkpointed (transformers drops a KV cache under
   checkpointing), so by default (``shared_prefix="auto"``) it is used only when gradient checkpointing is off;
   ``shared_prefix=True`` uses it anyway, without checkpointing (activations of P + G*C tokens instead of G*(P+C)
   checkpointed: ~5.3k tokens for a 7B model with G=8, a 3.3k prompt and 256-token completions, ~30 GB).

    trainer = make_grpo_trainer(fast=True, model=model, reward_funcs=rewards, args=grpo_config,
                                train_dataset=ds, processing_class=processor, peft_config=lora)
    trainer.train()

``make_grpo_trainer(fast=False, ...)`` returns a plain ``GRPOTrainer``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from preferthinker.rollout import FastRollout, _cache_keyword, _unwrap

log = logging.getLogger(__name__)

__all__ = ["FastGRPOTrainer", "TRLRolloutFunc", "make_grpo_trainer", "token_logps"]


# --------------------------------------------------------------------------------------------------
# rollout_func


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


class TRLRolloutFunc:
    """A TRL ``rollout_func`` that samples with ``FastRollout``.

    Args:
        static_cache, compile, cache_bucket, check_every: passed to ``FastRollout``. ``compile=None`` means "on CUDA,
            without DeepSpeed or FSDP".
    """

    def __init__(self, *, static_cache: bool = True, compile: bool | None = None, cache_bucket: int = 256,
                 check_every: int | None = None) -> None:
        self.static_cache = static_cache
        self.compile = compile
        self.cache_bucket = cache_bucket
        self.check_every = check_every
        self._rollout: FastRollout | None = None
        self._rollout_model_id: int | None = None
        self.calls = 0
        self.fallbacks = 0
        self.last_stats: list[dict] = []

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
        return None

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
            # compiled CUDA graphs want parameters at fixed addresses: not under DeepSpeed (ZeRO-3 gathers them
            # anew for every rollout) or FSDP
            sharded = getattr(trainer, "is_deepspeed_enabled", False) or getattr(trainer, "is_fsdp_enabled", False)
            compile_ = self.compile if self.compile is not None else (torch.cuda.is_available() and not sharded)
            self._rollout = FastRollout(
                model, proc, max_new_tokens=trainer.max_completion_length, temperature=trainer.temperature,
                top_p=trainer.top_p, top_k=trainer.top_k or 0, min_p=trainer.min_p, static_cache=self.static_cache,
                compile=compile_, eos_token_id=trainer.eos_token_ids, pad_token_id=trainer._tokenizer.pad_token_id,
                suppress_tokens=suppress, cache_bucket=self.cache_bucket, check_every=self.check_every,
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

        groups = consecutive_groups([prompt_key(p) for p in prompts])
        by_size: dict[int, list[int]] = {}
        for start, size in groups:
            by_size.setdefault(size, []).append(start)
        out_prompt: list[list[int] | None] = [None] * len(prompts)
        out_comp: list[list[int] | None] = [None] * len(prompts)
        out_logp: list[list[float] | None] = [None] * len(prompts)
        args = trainer.args
        self.last_stats = []
        with (
            unwrap_model_for_generation(
                trainer.model_wrapped, trainer.accelerator, gather_deepspeed3_params=args.ds3_gather_for_generation,
                gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs,
            ) as unwrapped,
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
        return {"prompt_ids": out_prompt, "completion_ids": out_comp, "logprobs": out_logp}


# --------------------------------------------------------------------------------------------------
# trainer


@contextlib.contextmanager
def _no_checkpointing(model: torch.nn.Module) -> Iterator[None]:
    layers = [m for m in model.modules() if getattr(m, "gradient_checkpointing", False) is True]
    for m in layers:
        m.gradient_checkpointing = False
    try:
        yield
    finally:
        for m in layers:
            m.gradient_checkpointing = True


def token_logps(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, labels: torch.Tensor,
                 temperature: float, chunk: int = 1024, want_entropy: bool = True, fp32_head: bool = False):
    """log softmax(h W^T / T)[label] and the entropy, for [M, H] hidden states, in chunks whose logits are
    recomputed in the backward pass (never holding the full [M, V] logits)."""

    def one(h: torch.Tensor, y: torch.Tensor):
        if fp32_head:
            logits = F.linear(h.float(), weight.float(), None if bias is None else bias.float())
        else:
            logits = F.linear(h, weight, bias).float()
        logits = logits / temperature
        logp_all = torch.log_softmax(logits, dim=-1)
        lp = logp_all.gather(-1, y[:, None]).squeeze(-1)
        ent = -(logp_all.exp() * logp_all).sum(-1) if want_entropy else torch.zeros_like(lp)
        return lp, ent

    if hidden.shape[0] == 0:  # no completion token to score (e.g. every completion truncated and masked): empty,
        return one(hidden, labels)  # still attached to the graph so the (zero) loss can be backpropagated
    lps, ents = [], []
    for i in range(0, hidden.shape[0], chunk):
        h, y = hidden[i:i + chunk], labels[i:i + chunk]
        if torch.is_grad_enabled() and h.requires_grad:
            lp, ent = checkpoint(one, h, y, use_reentrant=False)
        else:
            lp, ent = one(h, y)
        lps.append(lp)
        ents.append(ent)
    return torch.cat(lps), torch.cat(ents)


def _make_fast_trainer_class():
    from trl import GRPOTrainer

    class FastGRPOTrainer(GRPOTrainer):
        """``GRPOTrainer`` whose log-prob pass runs each distinct prompt once for all the completions sharing it.

        Extra keyword ``shared_prefix``: ``"auto"`` (default) uses the shared pass unless the model has gradient
        checkpointing on (the shared pass cannot checkpoint, so it would hold every layer's activations), ``True``
        uses it regardless (checkpointing is then off for that pass), ``False`` never. See the module docstring."""

        def __init__(self, *args: Any, shared_prefix: bool | str = "auto", **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if shared_prefix not in (True, False, "auto"):
                raise ValueError(f"shared_prefix must be True, False or 'auto', got {shared_prefix!r}")
            self.shared_prefix = shared_prefix
            self.shared_prefix_calls = 0

        def _shared_prefix_ok(self, model, kw: dict) -> bool:
            if not self.shared_prefix or kw.get("compute_aux_loss"):
                return False
            if self.shared_prefix == "auto" and torch.is_grad_enabled() and any(
                getattr(m, "gradient_checkpointing", False) is True for m in model.modules()
            ):
                return False
            if self.accelerator.num_processes != 1 or self.is_deepspeed_enabled or self.is_fsdp_enabled:
                return False
            for k in ("pixel_attention_mask", "spatial_shapes", "num_tiles", "image_sizes", "token_type_ids", "image_position_ids"):
                if kw.get(k) is not None:
                    return False
            # Qwen-style image inputs only: with them TRL's forward computes padding-aware M-RoPE positions, which
            # this pass reproduces exactly (text-only batches have short prompts and keep TRL's own pass)
            if any(kw.get(k) is None for k in ("pixel_values", "image_grid_thw", "mm_token_type_ids", "num_images")):
                return False
            base = _unwrap(self.accelerator.unwrap_model(model))
            inner = getattr(base, "model", None)
            return inner is not None and hasattr(base, "get_output_embeddings")

        def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                                               compute_entropy=False, compute_aux_loss=False, **kw):
            kw_all = dict(kw, compute_aux_loss=compute_aux_loss)
            if self._shared_prefix_ok(model, kw_all):
                out = self._shared_prefix_logps(model, input_ids, attention_mask, logits_to_keep, compute_entropy, **kw)
                if out is not None:
                    self.shared_prefix_calls += 1
                    return out
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size, compute_entropy=compute_entropy,
                compute_aux_loss=compute_aux_loss, **kw)

        def _shared_prefix_logps(self, model, input_ids, attention_mask, logits_to_keep, compute_entropy,
                                 pixel_values=None, image_grid_thw=None, num_images=None, mm_token_type_ids=None, **_):
            from transformers import DynamicCache

            c = int(logits_to_keep)
            n, total = input_ids.shape
            p = total - c
            if p < 1 or c < 1:
                return None
            prompt_ids, prompt_mask = input_ids[:, :p], attention_mask[:, :p]
            comp_ids, comp_mask = input_ids[:, p:], attention_mask[:, p:]

            # per-row pixel slices (Qwen layout: rows of pixel_values per image = prod(grid_thw))
            per_image = image_grid_thw.prod(-1).tolist()
            pix_rows: list[slice] = []
            img_rows: list[slice] = []
            r = i = 0
            for k in num_images:
                rows = int(sum(per_image[i:i + k]))
                pix_rows.append(slice(r, r + rows))
                img_rows.append(slice(i, i + k))
                r, i = r + rows, i + k

            # group identical prompts (ids, mask and pixels)
            reps: list[int] = []
            inv: list[int] = []
            for row in range(n):
                found = next((u for u, rep in enumerate(reps)
                              if torch.equal(prompt_mask[row], prompt_mask[rep]) and torch.equal(prompt_ids[row], prompt_ids[rep])
                              and torch.equal(pixel_values[pix_rows[row]], pixel_values[pix_rows[rep]])), None)
                if found is None:
                    reps.append(row)
                    found = len(reps) - 1
                inv.append(found)
            if len(reps) == n:
                return None  # nothing shared: TRL's own pass is as good
            dev = input_ids.device
            inv_t = torch.tensor(inv, device=dev)
            reps_t = torch.tensor(reps, device=dev)

            base = _unwrap(self.accelerator.unwrap_model(model))
            inner = base.model
            if not hasattr(inner, "get_rope_index"):
                return None
            u_ids, u_mask = prompt_ids[reps_t], prompt_mask[reps_t]
            extra = {"pixel_values": torch.cat([pixel_values[pix_rows[r]] for r in reps]),
                     "image_grid_thw": torch.cat([image_grid_thw[img_rows[r]] for r in reps]),
                     "mm_token_type_ids": mm_token_type_ids[reps_t, :p]}
            # positions exactly as TRL's full forward computes them (get_rope_index over the padded rows; a prefix's
            # positions do not depend on what follows it, and each completion token continues from the last prompt
            # position in all three M-RoPE rows)
            pos_p, _ = inner.get_rope_index(u_ids, mm_token_type_ids=extra["mm_token_type_ids"],
                                            image_grid_thw=extra["image_grid_thw"], attention_mask=u_mask)
            steps = torch.arange(1, c + 1, device=dev)
            pos_c = pos_p[..., -1:].index_select(-2, inv_t) + steps  # [3, N, C]

            cache_kw = _cache_keyword(base)
            cache = DynamicCache()
            head = base.get_output_embeddings()
            with self.accelerator.autocast(), _no_checkpointing(base):
                out_p = inner(input_ids=u_ids, attention_mask=u_mask, position_ids=pos_p, use_cache=True,
                              **{cache_kw: cache}, **extra)
                h_last = out_p.last_hidden_state[:, -1:]
                for layer in cache.layers:
                    layer.keys = layer.keys.index_select(0, inv_t)
                    layer.values = layer.values.index_select(0, inv_t)
                out_c = inner(input_ids=comp_ids, attention_mask=torch.cat([prompt_mask, comp_mask], 1), position_ids=pos_c,
                              use_cache=True, **{cache_kw: cache})
                hidden = torch.cat([h_last.index_select(0, inv_t), out_c.last_hidden_state[:, :-1]], dim=1)  # [N, C, H]
                valid = comp_mask.bool()
                lp, ent = token_logps(hidden[valid], head.weight, head.bias, comp_ids[valid], self.temperature,
                                       want_entropy=compute_entropy,
                                       fp32_head=bool(getattr(self.args, "cast_lm_head_to_fp32", False)))
            logps = lp.new_zeros(valid.shape).masked_scatter(valid, lp)
            entropies = ent.new_zeros(valid.shape).masked_scatter(valid, ent) if compute_entropy else None
            return logps, entropies, None

    return FastGRPOTrainer


_FAST_CLASS = None


def fast_trainer_class():
    """``FastGRPOTrainer`` (built on first use so that importing this module does not import TRL)."""
    global _FAST_CLASS
    if _FAST_CLASS is None:
        _FAST_CLASS = _make_fast_trainer_class()
    return _FAST_CLASS


def __getattr__(name: str):  # lazy `from preferthinker.train.fast_grpo import FastGRPOTrainer`
    if name == "FastGRPOTrainer":
        return fast_trainer_class()
    raise AttributeError(name)


def make_grpo_trainer(fast: bool = True, *, rollout: Mapping[str, Any] | None = None, shared_prefix: bool | str = "auto",
                      **trainer_kwargs: Any):
    """Build the GRPO trainer: TRL's own (``fast=False``) or ``FastGRPOTrainer`` with ``FastRollout``.

    Args:
        fast: use the project's rollout and shared-prompt log-prob pass.
        rollout: options for ``TRLRolloutFunc`` (``static_cache``, ``compile``, ``cache_bucket``, ``check_every``).
        shared_prefix: run each distinct prompt once in the loss pass: ``"auto"`` (unless gradient checkpointing
            is on), ``True`` or ``False`` (see ``FastGRPOTrainer``).
        **trainer_kwargs: everything ``GRPOTrainer`` takes (model, reward_funcs, args, train_dataset,
            processing_class, peft_config, callbacks, ...). A ``rollout_func`` given here wins over the fast one.
    """
    if not fast:
        from trl import GRPOTrainer

        return GRPOTrainer(**trainer_kwargs)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is marked experimental in TRL 1.16
    trainer_kwargs.setdefault("rollout_func", TRLRolloutFunc(**dict(rollout or {})))
    return fast_trainer_class()(shared_prefix=shared_prefix, **trainer_kwargs)
