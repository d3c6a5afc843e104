"""Opt-in fast paths for TRL's ``GRPOTrainer`` (TRL 1.16): the project's rollout and a shared-prompt loss pass.

Two levers, each exact (the same sampling distribution, the same log-probs and gradients up to float rounding):

1. **Rollout** through ``preferthinker.rollout.FastRollout`` (one prefill per prompt shared by its G samples, a
   static KV cache, a CUDA-graph-compiled decode step on CUDA), plugged into TRL's own ``rollout_func`` argument by
   ``preferthinker.train.grpo_rollout.TRLRolloutFunc`` (which also says how it runs under DDP and ZeRO-2/3).

2. **Shared-prompt log-probs** (``FastGRPOTrainer``). TRL scores each of the G completions of a prompt with a full
   forward over prompt + completion, so a 3.3k-token, 12-image prompt goes through the vision tower and the decoder
   G times, forward and backward. ``FastGRPOTrainer._get_per_token_logps_and_entropies`` (the smallest method that
   computes them; TRL has no hook for it) groups the rows of a batch that share a prompt (same ids, same pixels),
   runs the prompt once into a ``DynamicCache``, repeats the cache rows (a differentiable ``index_select``) and runs
   only the completion tokens against it. Gradients flow back through the cache into the single prompt pass, so
   the result equals the per-row computation. It applies to Qwen-style inputs (``image_grid_thw`` +
   ``mm_token_type_ids``); anything else uses TRL's method. Its forward cannot be checkpointed (transformers drops a
   KV cache under checkpointing), so by default (``shared_prefix="auto"``) it is used only when gradient
   checkpointing is off; ``shared_prefix=True`` uses it anyway, without checkpointing (activations of P + G*C tokens
   instead of G*(P+C) checkpointed: ~5.3k tokens for a 7B model with G=8, a 3.3k prompt and 256-token completions,
   ~30 GB).

   Under DDP and DeepSpeed the pass runs *inside the wrapper's forward* (``_through_wrapper``): the wrapped module's
   ``forward`` is swapped for the pass for one call, so DDP prepares its gradient all-reduce and ZeRO-3 runs its
   start/end-of-forward hooks exactly as for TRL's own forward; ZeRO-3 gathers each layer in its own module hooks
   (the prompt pass and the completion pass each call the decoder once), and the LM head is called as a module so
   that its partitioned weight is gathered too. What each process sees: TRL's ``RepeatSampler`` yields each prompt
   G times in a row and accelerate hands each process consecutive ``per_device_train_batch_size`` slices, and TRL
   shuffles the generation batch before cutting micro-batches when ``steps_per_generation > 1``; so a micro-batch
   may hold whole groups, parts of groups, or one row per prompt. The pass groups whatever rows are identical, so
   a split group is just shared by fewer rows; a micro-batch with no repeated prompt goes to TRL's pass
   (``shared_prefix/fallbacks``), except under ZeRO-3, where every rank must call each layer the same number of
   times (a per-rank choice between one decoder call and two would deadlock the layer all-gathers): there the
   shared pass always runs, which stays exact with one row per prompt. The logged ``shared_prefix/rows_per_pass``
   says how much was shared.

    trainer = make_grpo_trainer(fast=True, model=model, reward_funcs=rewards, args=grpo_config,
                                train_dataset=ds, processing_class=processor, peft_config=lora)
    trainer.train()

``make_grpo_trainer(fast=False, ...)`` returns a plain ``GRPOTrainer``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from preferthinker.rollout import _cache_keyword, _unwrap
from preferthinker.train.grpo_rollout import TRLRolloutFunc, sharding_of

log = logging.getLogger(__name__)

__all__ = ["FastGRPOTrainer", "TRLRolloutFunc", "group_prompts", "make_grpo_trainer", "token_logps"]


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


def token_logps(hidden: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, labels: torch.Tensor,
                temperature: float, chunk: int = 1024, want_entropy: bool = True, fp32_head: bool = False,
                head: Callable[[torch.Tensor], torch.Tensor] | None = None):
    """log softmax(h W^T / T)[label] and the entropy, for [M, H] hidden states, in chunks whose logits are
    recomputed in the backward pass (never holding the full [M, V] logits).

    ``head``: call this module instead of ``F.linear(h, weight, bias)``: under ZeRO-3 the head's weight is a
    partitioned placeholder outside the module's own forward hooks, which gather it."""

    def one(h: torch.Tensor, y: torch.Tensor):
        if head is not None:
            logits = head(h.to(head.weight.dtype) if hasattr(head, "weight") else h).float()
        elif fp32_head:
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


def group_prompts(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, pixel_values: torch.Tensor,
                  image_grid_thw: torch.Tensor, num_images: list[int]) -> tuple[list[int], list[int], list[slice], list[slice]]:
    """Rows of a batch that share a prompt (same ids, mask and pixels, in any order).

    Returns ``(reps, inv, pix_rows, img_rows)``: the first row of each distinct prompt, each row's index into
    ``reps``, and each row's slice of ``pixel_values`` / ``image_grid_thw`` (Qwen layout: ``prod(grid_thw)`` pixel
    rows per image, ``num_images[i]`` images in row i)."""
    per_image = image_grid_thw.prod(-1).tolist()
    pix_rows: list[slice] = []
    img_rows: list[slice] = []
    r = i = 0
    for k in num_images:
        rows = int(sum(per_image[i:i + k]))
        pix_rows.append(slice(r, r + rows))
        img_rows.append(slice(i, i + k))
        r, i = r + rows, i + k
    reps: list[int] = []
    inv: list[int] = []
    for row in range(prompt_ids.shape[0]):
        found = next((u for u, rep in enumerate(reps)
                      if torch.equal(prompt_mask[row], prompt_mask[rep]) and torch.equal(prompt_ids[row], prompt_ids[rep])
                      and torch.equal(pixel_values[pix_rows[row]], pixel_values[pix_rows[rep]])), None)
        if found is None:
            reps.append(row)
            found = len(reps) - 1
        inv.append(found)
    return reps, inv, pix_rows, img_rows


def _through_wrapper(model: Any, fn: Callable[[], Any]) -> Any:
    """Run ``fn()`` as the forward of ``model``'s wrapped module, called through the wrapper.

    DDP's forward is what arms its gradient all-reduce for the next backward (``prepare_for_backward``: a backward
    after an unwrapped forward leaves the gradients unsynchronised), and DeepSpeed's forward runs ZeRO-3's
    start/end-of-forward hooks; so the shared pass, which calls the decoder directly, is made the wrapped module's
    forward for one call. Without a wrapper (one process) ``fn`` is just called."""
    target = getattr(model, "module", None)
    if not isinstance(target, torch.nn.Module):
        return fn()
    had = "forward" in target.__dict__  # accelerate may have put an autocast/fp32 forward on the instance
    saved = target.__dict__.get("forward")
    target.forward = lambda *a, **k: fn()
    try:
        return model()
    finally:
        if had:
            target.forward = saved
        else:
            del target.forward


def _make_fast_trainer_class():
    from trl import GRPOTrainer

    from preferthinker.train.flat_groups import DynamicSamplingMixin

    class FastGRPOTrainer(DynamicSamplingMixin, GRPOTrainer):
        """``GRPOTrainer`` whose log-prob pass runs each distinct prompt once for all the completions sharing it.

        Extra keyword ``shared_prefix``: ``"auto"`` (default) uses the shared pass unless the model has gradient
        checkpointing on (the shared pass cannot checkpoint, so it would hold every layer's activations), ``True``
        uses it regardless (checkpointing is then off for that pass), ``False`` never. See the module docstring.
        ``dynamic_sampling_rounds`` (default 0, off): see ``preferthinker.train.flat_groups``."""

        def __init__(self, *args: Any, shared_prefix: bool | str = "auto", **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if shared_prefix not in (True, False, "auto"):
                raise ValueError(f"shared_prefix must be True, False or 'auto', got {shared_prefix!r}")
            self.shared_prefix = shared_prefix
            self.shared_prefix_calls = 0
            # why TRL's own pass ran instead, per call: "nothing_shared" (no prompt repeated in the micro-batch,
            # e.g. a group split across processes down to one row each), "checkpointing", "inputs" (not Qwen-style)
            self.shared_prefix_fallbacks: dict[str, int] = {}

        def _fallback_reason(self, model, kw: dict) -> str | None:
            """None when the shared pass applies, else why not (counted in ``shared_prefix_fallbacks``)."""
            if not self.shared_prefix:
                return "off"
            if kw.get("compute_aux_loss"):
                return "aux_loss"
            if self.shared_prefix == "auto" and torch.is_grad_enabled() and any(
                getattr(m, "gradient_checkpointing", False) is True for m in model.modules()
            ):
                return "checkpointing"
            if self.is_fsdp_enabled:
                return "fsdp"  # FSDP re-shards after each forward; its wrapped units expect one forward per step
            for k in ("pixel_attention_mask", "spatial_shapes", "num_tiles", "image_sizes", "token_type_ids", "image_position_ids"):
                if kw.get(k) is not None:
                    return "inputs"
            # Qwen-style image inputs only: with them TRL's forward computes padding-aware M-RoPE positions, which
            # this pass reproduces exactly (text-only batches have short prompts and keep TRL's own pass)
            if any(kw.get(k) is None for k in ("pixel_values", "image_grid_thw", "mm_token_type_ids", "num_images")):
                return "inputs"
            base = _unwrap(self.accelerator.unwrap_model(model))
            inner = getattr(base, "model", None)
            if inner is None or not hasattr(base, "get_output_embeddings") or not hasattr(inner, "get_rope_index"):
                return "inputs"
            return None

        def _shared_prefix_ok(self, model, kw: dict) -> bool:
            return self._fallback_reason(model, kw) is None

        def _count_fallback(self, reason: str) -> None:
            if reason != "off":
                self.shared_prefix_fallbacks[reason] = self.shared_prefix_fallbacks.get(reason, 0) + 1

        def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                                               compute_entropy=False, compute_aux_loss=False, **kw):
            reason = self._fallback_reason(model, dict(kw, compute_aux_loss=compute_aux_loss))
            if reason is None:
                c = int(logits_to_keep)
                p = input_ids.shape[1] - c
                if p < 1 or c < 1:
                    raise ValueError(f"shared-prompt pass: need prompt and completion columns, got {p} and {c} in a batch "
                                     f"of shape {tuple(input_ids.shape)}")
                groups = group_prompts(input_ids[:, :p], attention_mask[:, :p], kw["pixel_values"], kw["image_grid_thw"],
                                       kw["num_images"])
                # ZeRO-3: every rank must take the same path (see the module docstring)
                if len(groups[0]) < input_ids.shape[0] or sharding_of(self) == "zero3":
                    out = _through_wrapper(model, lambda: self._shared_prefix_logps(
                        model, input_ids, attention_mask, logits_to_keep, compute_entropy, groups, **kw))
                    self.shared_prefix_calls += 1
                    self._log_shared(out["rows_per_pass"])
                    return out["logps"], out.get("entropies"), None
                reason = "nothing_shared"
            self._count_fallback(reason)
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size, compute_entropy=compute_entropy,
                compute_aux_loss=compute_aux_loss, **kw)

        def _log_shared(self, rows_per_pass: float) -> None:
            metrics = getattr(self, "_metrics", None)
            if isinstance(metrics, dict) and torch.is_grad_enabled():  # the loss pass (not the old-log-prob pass)
                mode = "train" if self.model.training else "eval"
                if mode in metrics:
                    metrics[mode]["shared_prefix/rows_per_pass"].append(float(rows_per_pass))

        def _shared_prefix_logps(self, model, input_ids, attention_mask, logits_to_keep, compute_entropy,
                                 groups, pixel_values=None, image_grid_thw=None, num_images=None,
                                 mm_token_type_ids=None, **_) -> dict:
            from transformers import DynamicCache

            c = int(logits_to_keep)
            n, total = input_ids.shape
            p = total - c
            prompt_ids, prompt_mask = input_ids[:, :p], attention_mask[:, :p]
            comp_ids, comp_mask = input_ids[:, p:], attention_mask[:, p:]

            reps, inv, pix_rows, img_rows = groups
            dev = input_ids.device
            inv_t = torch.tensor(inv, device=dev)
            reps_t = torch.tensor(reps, device=dev)

            base = _unwrap(self.accelerator.unwrap_model(model))
            inner = base.model
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
                partitioned = hasattr(head.weight, "ds_id")  # ZeRO-3: only the module's hooks gather the weight
                lp, ent = token_logps(hidden[valid], head.weight, head.bias, comp_ids[valid], self.temperature,
                                      want_entropy=compute_entropy,
                                      fp32_head=bool(getattr(self.args, "cast_lm_head_to_fp32", False)),
                                      head=head if partitioned else None)
            out = {"logps": lp.new_zeros(valid.shape).masked_scatter(valid, lp), "rows_per_pass": n / len(reps)}
            if compute_entropy:
                out["entropies"] = ent.new_zeros(valid.shape).masked_scatter(valid, ent)
            return out

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
                      dynamic_sampling_rounds: int = 0, **trainer_kwargs: Any):
    """Build the GRPO trainer: TRL's own (``fast=False``) or ``FastGRPOTrainer`` with ``FastRollout``.

    Args:
        fast: use the project's rollout and shared-prompt log-prob pass.
        rollout: options for ``TRLRolloutFunc`` (``static_cache``, ``compile``, ``cache_bucket``, ``check_every``,
            ``stable_weights``).
        shared_prefix: run each distinct prompt once in the loss pass: ``"auto"`` (unless gradient checkpointing
            is on), ``True`` or ``False`` (see ``FastGRPOTrainer``).
        dynamic_sampling_rounds: at most this many extra generation rounds per generation batch to replace groups
            whose rewards are all equal (``preferthinker.train.flat_groups``); 0 = TRL's behaviour.
        **trainer_kwargs: everything ``GRPOTrainer`` takes (model, reward_funcs, args, train_dataset,
            processing_class, peft_config, callbacks, ...). A ``rollout_func`` given here wins over the fast one.
    """
    if not fast:
        from trl import GRPOTrainer

        if not dynamic_sampling_rounds:
            return GRPOTrainer(**trainer_kwargs)
        from preferthinker.train.flat_groups import DynamicSamplingMixin

        cls = type("DynamicSamplingGRPOTrainer", (DynamicSamplingMixin, GRPOTrainer), {})
        return cls(dynamic_sampling_rounds=dynamic_sampling_rounds, **trainer_kwargs)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is marked experimental in TRL 1.16
    trainer_kwargs.setdefault("rollout_func", TRLRolloutFunc(**dict(rollout or {})))
    return fast_trainer_class()(shared_prefix=shared_prefix, dynamic_sampling_rounds=dynamic_sampling_rounds, **trainer_kwargs)
