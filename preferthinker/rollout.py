"""Fast GRPO rollouts for Qwen2.5-VL: one prefill per prompt, a static KV cache, an optionally compiled decode step.

Why: a PreferThinker prompt is ~3.3k tokens (12 images), and GRPO samples G completions of it. Plain
``model.generate(num_return_sequences=G)`` runs the vision tower and the prefill G times and then decodes with a
growing cache and dozens of small kernel launches per layer per token, so it is bound by per-step overhead (135 new
tokens/s at G=8 on an H200 where the memory-bandwidth floor allows above 2,000). ``FastRollout`` instead

* runs the vision tower and the prefill **once per prompt** and copies the prompt's KV cache into the G rows;
* decodes over a **preallocated static KV cache** (``transformers.StaticCache``, sized to the prompt plus
  ``max_new_tokens``, rounded up to a bucket so that prompts of similar length reuse one compiled graph);
* on CUDA, optionally ``torch.compile``s the whole per-token step (forward + sampling + EOS bookkeeping) with
  ``mode="reduce-overhead"``, i.e. one CUDA-graph replay per token;
* during decoding, computes grouped-query attention without materialising the repeated K/V heads (the query heads
  of one KV head are folded into the query-length axis of one SDPA call);
* samples with temperature / top-k / top-p / min-p from a seeded ``torch.Generator`` (exponential-race sampling:
  ``argmax(p / E)`` with ``E ~ Exp(1)`` draws from ``p`` exactly) and returns, per sampled token,
  ``log_softmax(logits / temperature)`` -- the log-prob that GRPO's loss recomputes from the same logits.

Positions follow transformers' own ``generate`` for Qwen2.5-VL exactly: the prefill uses the 3-D M-RoPE positions of
``model.model.get_rope_index`` (text tokens of a left-padded row count from its first real token), and every decode
step advances all three rows by one from the last prompt position (``position_ids[..., -1:] + 1``), which is what
``rope_deltas`` encodes. ``static_cache=False`` keeps the one shared prefill but decodes with a growing
``DynamicCache`` and the model's own attention masks (the path closest to ``generate``).

    >>> from preferthinker.rollout import FastRollout
    >>> fr = FastRollout(model, processor, max_new_tokens=256, temperature=1.0, top_p=1.0, static_cache=True, compile=True)
    >>> enc = processor.apply_chat_template(messages, tokenize=True, return_dict=True, return_tensors="pt",
    ...                                     add_generation_prompt=True)
    >>> ids, logps, mask = fr.generate(enc, num_generations=8, seed=0)   # [8, T] each; rows grouped per prompt

Tested with transformers 5.17 and 5.24 (5.17 names the forward's cache argument ``past_key_values``, 5.24 ``cache``;
it is looked up from the forward's signature).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

__all__ = ["DECODE_ATTENTION", "FastRollout", "RolloutResult"]

# Name under which the decode-time attention is registered in transformers' AttentionInterface.
DECODE_ATTENTION = "preferthinker_decode"


class RolloutResult(NamedTuple):
    """``completion_ids`` [B*G, T] (pad after EOS), ``logprobs`` [B*G, T] float32 (0 where masked),
    ``mask`` [B*G, T] int (1 up to and including the first EOS). Rows ``i*G .. i*G+G-1`` belong to prompt ``i``."""

    completion_ids: torch.Tensor
    logprobs: torch.Tensor
    mask: torch.Tensor


# --------------------------------------------------------------------------------------------------
# decode-time attention: GQA without repeat_kv


def _decode_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Attention for one new token per row against a static cache.

    ``query`` [B, H, 1, D], ``key``/``value`` [B, Hkv, L, D], ``attention_mask`` a boolean [B, 1, 1, L] (True =
    attend). The H query heads of KV head j are heads j*g .. j*g+g-1 (transformers' ``repeat_kv`` layout), so
    viewing the query as [B, Hkv, g, D] lets one SDPA call treat them as g query positions that share the mask:
    the same arithmetic as repeating K/V g times, without writing the repeated copies. Anything else (a prefill,
    a float mask) goes to transformers' own SDPA path.
    """
    bsz, n_heads, q_len, head_dim = query.shape
    n_kv = key.shape[1]
    if q_len != 1 or attention_mask is None or attention_mask.dtype != torch.bool or n_heads % n_kv:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    q = query.reshape(bsz, n_kv, n_heads // n_kv, head_dim)
    out = F.scaled_dot_product_attention(q, key, value, attn_mask=attention_mask, dropout_p=0.0, scale=scaling)
    return out.reshape(bsz, n_heads, 1, head_dim).transpose(1, 2).contiguous(), None


def _register_decode_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(DECODE_ATTENTION, _decode_attention)


# --------------------------------------------------------------------------------------------------
# helpers


def _unwrap(model: Any) -> Any:
    """The Hugging Face model under a PEFT wrapper (LoRA layers are injected in place, so calling it applies them)."""
    if hasattr(model, "get_base_model"):
        return model.get_base_model()
    return model


def _as_list(x: Any) -> list[int]:
    if x is None:
        return []
    if isinstance(x, torch.Tensor):
        return [int(v) for v in x.flatten().tolist()]
    if isinstance(x, Iterable) and not isinstance(x, (str, bytes)):
        return [int(v) for v in x]
    return [int(x)]


def _cache_keyword(model: Any) -> str:
    params = inspect.signature(type(model).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _round_up(n: int, m: int) -> int:
    return n if m <= 1 else ((n + m - 1) // m) * m


class FastRollout:
    """One-prefill, static-cache, optionally CUDA-graph-compiled sampler for (Qwen2.5-VL) causal LMs.

    Args:
        model: a ``Qwen2_5_VLForConditionalGeneration`` (or any HF causal LM), optionally PEFT-wrapped.
        processor: its processor or tokenizer; supplies the EOS and pad ids when not given.
        max_new_tokens: completion budget per sample.
        temperature, top_p, top_k, min_p: sampling settings (``top_k=0`` / ``top_p=1`` / ``min_p=None`` = off).
        static_cache: decode over a preallocated ``StaticCache`` (else a ``DynamicCache``, closest to ``generate``).
        compile: ``torch.compile`` the decode step (``mode="reduce-overhead"``: CUDA graphs). CUDA only; ignored on
            CPU. If compiling fails the call is redone uncompiled and compiling stays off (``self.compile_error``).
        eos_token_id: id or ids that end a completion (default: the model's generation config plus the tokenizer's).
        pad_token_id: filler after EOS (default: tokenizer's, else generation config's, else the first EOS).
        suppress_tokens: ids never sampled (TRL suppresses the image-pad token for VLMs).
        min_new_tokens: EOS is blocked before this many tokens (benchmarks use it to force full lengths).
        repetition_penalty: ``transformers``' repetition penalty (the official PreferThinker eval uses 1.15): the logit
            of every token already in the row (prompt included) is divided by it when positive, multiplied when
            negative, before anything else; 1.0 = off.
        cache_bucket: static cache length is rounded up to a multiple of this (fewer recompiles across prompts).
        check_every: check "all rows finished" every this many steps (each check is a device sync); default 1 on
            CPU, 16 on CUDA.
        compile_mode: ``torch.compile`` mode for the Inductor backend.
        compile_backend: ``"inductor"`` (fused kernels + CUDA graphs) or ``"cudagraphs"`` (CUDA graphs over eager
            kernels: compiles in seconds, somewhat slower per step).
    """

    def __init__(
        self,
        model: Any,
        processor: Any = None,
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        min_p: float | None = None,
        static_cache: bool = True,
        compile: bool = False,
        eos_token_id: int | Iterable[int] | None = None,
        pad_token_id: int | None = None,
        suppress_tokens: Iterable[int] | None = None,
        min_new_tokens: int = 0,
        repetition_penalty: float = 1.0,
        cache_bucket: int = 256,
        check_every: int | None = None,
        compile_mode: str = "reduce-overhead",
        compile_backend: str = "inductor",
    ) -> None:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0 (use greedy=True for argmax decoding), got {temperature}")
        if repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0 (1.0 = off), got {repetition_penalty}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        self.model = model
        self.base = _unwrap(model)
        self.processor = processor
        self.max_new_tokens = int(max_new_tokens)
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.top_k = int(top_k or 0)
        self.min_p = float(min_p) if min_p else None
        self.static_cache = bool(static_cache)
        self.compile = bool(compile)
        self.compile_mode = compile_mode
        if compile_backend not in ("inductor", "cudagraphs"):
            raise ValueError(f"compile_backend must be 'inductor' or 'cudagraphs', got {compile_backend!r}")
        self.compile_backend = compile_backend
        self.min_new_tokens = int(min_new_tokens)
        self.repetition_penalty = float(repetition_penalty)
        self.cache_bucket = int(cache_bucket)
        self.check_every = check_every
        self.compile_error: str | None = None
        self.last_stats: dict[str, Any] = {}

        tok = getattr(processor, "tokenizer", processor)
        gen_cfg = getattr(self.base, "generation_config", None)
        eos = _as_list(eos_token_id) if eos_token_id is not None else _as_list(getattr(gen_cfg, "eos_token_id", None))
        tok_eos = getattr(tok, "eos_token_id", None) if tok is not None else None
        if eos_token_id is None and tok_eos is not None and tok_eos not in eos:
            eos = [int(tok_eos), *eos]
        if not eos:
            raise ValueError("no EOS id: pass eos_token_id or a processor/tokenizer with one")
        self.eos_ids = eos
        pad = pad_token_id
        if pad is None and tok is not None:
            pad = getattr(tok, "pad_token_id", None)
        if pad is None:
            pad = getattr(gen_cfg, "pad_token_id", None)
        self.pad_id = int(pad if pad is not None else eos[0])
        self.suppress_ids = _as_list(suppress_tokens)

        self._cache_kw = _cache_keyword(self.base)
        self._static: Any = None  # reused StaticCache (stable addresses for CUDA graphs)
        self._static_key: tuple | None = None
        self._compiled: Any = None
        self._lm_configs: list[Any] | None = None
        _register_decode_attention()

    # ------------------------------------------------------------------------------------------ public

    @torch.no_grad()
    def generate(self, prompt_inputs: Mapping[str, Any], num_generations: int = 1, greedy: bool = False,
                 seed: int | None = None) -> RolloutResult:
        """Sample ``num_generations`` completions for each prompt of ``prompt_inputs`` (the processor's output for
        B prompts, left-padded when B > 1). Returns ``(completion_ids, logprobs, mask)``, each [B*G, T] with T the
        longest completion (EOS included), rows grouped per prompt.

        A failure of the compiled step (compiler, CUDA graphs) never costs the rollout: the call is redone with the
        next backend (Inductor + CUDA graphs, then CUDA graphs over eager kernels, then uncompiled) and the error is
        kept in ``compile_error``."""
        while True:
            use_compile = self._use_compile()
            try:
                return self._generate(prompt_inputs, num_generations, greedy, seed, use_compile=use_compile)
            except Exception as err:
                if not use_compile:
                    raise
                self.compile_error = f"{self.compile_backend}: {type(err).__name__}: {str(err)[:400]}"
                self._compiled = None
                self._static = None
                self._static_key = None
                if self.compile_backend == "inductor":
                    self.compile_backend = "cudagraphs"
                else:
                    self.compile = False
                log.warning("compiled decode failed (%s); retrying with %s", self.compile_error,
                            self.compile_backend if self.compile else "no compilation")

    # ------------------------------------------------------------------------------------------ internals

    def _device(self) -> torch.device:
        return next(self.base.parameters()).device

    def _use_compile(self) -> bool:
        return self.compile and self.static_cache and self._device().type == "cuda"

    def _positions(self, ids: torch.Tensor, am: torch.Tensor, extra: dict) -> torch.Tensor:
        """Prefill position ids: [3, B, P] M-RoPE positions for Qwen2/2.5-VL, else [B, P] (as ``generate``)."""
        text = am.long().cumsum(-1) - 1
        text = text.masked_fill(am == 0, 0)
        inner = getattr(self.base, "model", None)
        if inner is not None and hasattr(inner, "get_rope_index"):
            mm = extra.get("mm_token_type_ids")
            if mm is None:
                cfg = self.base.config
                mm = torch.zeros_like(ids)
                for tid, kind in ((getattr(cfg, "image_token_id", None), 1), (getattr(cfg, "video_token_id", None), 2)):
                    if tid is not None:
                        mm = mm.masked_fill(ids == tid, kind)
                extra["mm_token_type_ids"] = mm
            if extra.get("image_grid_thw") is not None or extra.get("video_grid_thw") is not None:
                kw = {k: extra[k] for k in ("image_grid_thw", "video_grid_thw", "second_per_grid_ts") if extra.get(k) is not None}
                pos, _ = inner.get_rope_index(ids, mm_token_type_ids=mm, attention_mask=am, **kw)
                return pos
            return text.unsqueeze(0).expand(3, -1, -1).contiguous()
        return text

    def _language_model_configs(self) -> list[Any]:
        """The config objects the decoder's attention layers read ``_attn_implementation`` from."""
        if self._lm_configs is None:
            inner = getattr(self.base, "model", self.base)
            lm = getattr(inner, "language_model", inner)
            seen: dict[int, Any] = {}
            for m in lm.modules():
                cfg = getattr(m, "config", None)
                if cfg is not None and hasattr(cfg, "_attn_implementation"):
                    seen.setdefault(id(cfg), cfg)
            self._lm_configs = list(seen.values())
        return self._lm_configs

    def _layer_types(self) -> list[str]:
        cfg = self.base.config.get_text_config() if hasattr(self.base.config, "get_text_config") else self.base.config
        types = getattr(cfg, "layer_types", None) or ["full_attention"]
        return sorted(set(types))

    def _static_cache_for(self, n: int, length: int) -> Any:
        from transformers import StaticCache

        key = (n, length)
        if self._static is None or self._static_key != key:
            self._static = StaticCache(config=self.base.config, max_cache_len=length)
            self._static_key = key
        return self._static

    def _fill_static(self, static: Any, dyn: Any, groups: int, n: int, prompt_len: int, length: int) -> None:
        """Copy the prefill's [B, H, P, D] keys/values into the static cache's [B*G, H, L, D] rows 0..P-1."""
        for layer, src in zip(static.layers, dyn.layers, strict=True):
            k, v = src.keys, src.values
            b = k.shape[0]
            if not layer.is_initialized:
                shape_k = (n, k.shape[1], 1, k.shape[3])
                shape_v = (n, v.shape[1], 1, v.shape[3])
                layer.lazy_initialization(k.new_empty(shape_k), v.new_empty(shape_v))
            layer.keys.view(b, groups, *layer.keys.shape[1:])[:, :, :, :prompt_len].copy_(k.unsqueeze(1))
            layer.values.view(b, groups, *layer.values.shape[1:])[:, :, :, :prompt_len].copy_(v.unsqueeze(1))
            layer.cumulative_length.fill_(prompt_len)

    def _select(self, logits: torch.Tensor, noise: torch.Tensor | None, step: torch.Tensor,
                finished: torch.Tensor, eos: torch.Tensor, suppress: torch.Tensor | None, seen: torch.Tensor | None = None):
        """Pick the next token per row and its log-prob; rows already finished get the pad id and log-prob 0.

        ``logits`` [N, V] float32. ``noise`` [N, V] ~ Exp(1) for sampling, None for greedy. ``seen`` [N, V] bool: tokens
        already in each row, for the repetition penalty (None = off)."""
        if seen is not None:
            pen = self.repetition_penalty
            logits = torch.where(seen, torch.where(logits < 0, logits * pen, logits / pen), logits)
        scores = logits if noise is None else logits / self.temperature
        neg_inf = torch.finfo(scores.dtype).min
        if suppress is not None:
            scores = scores.index_fill(-1, suppress, neg_inf)
        if self.min_new_tokens > 0:
            block = (step < self.min_new_tokens).reshape(1, 1)
            eos_scores = scores.index_select(-1, eos)
            scores = scores.index_copy(-1, eos, torch.where(block, torch.full_like(eos_scores, neg_inf), eos_scores))
        if noise is None:
            token = scores.argmax(-1)
        else:
            if self.top_k > 0:
                kth = torch.topk(scores, min(self.top_k, scores.shape[-1]), dim=-1).values[:, -1:]
                scores = scores.masked_fill(scores < kth, neg_inf)
            if self.top_p < 1.0:
                sorted_scores, order = torch.sort(scores, dim=-1, descending=False)
                cum = sorted_scores.softmax(-1).cumsum(-1)
                drop_sorted = cum <= (1 - self.top_p)
                drop_sorted[:, -1:] = False
                drop = drop_sorted.scatter(-1, order, drop_sorted)
                scores = scores.masked_fill(drop, neg_inf)
            if self.min_p is not None:
                probs = scores.softmax(-1)
                scores = scores.masked_fill(probs < self.min_p * probs.amax(-1, keepdim=True), neg_inf)
            # exponential race: argmax(p_i / E_i) with E_i ~ Exp(1) is a draw from p
            token = (scores.softmax(-1) / noise.clamp_min(1e-20)).argmax(-1)
        logp = torch.log_softmax(logits / self.temperature, dim=-1).gather(-1, token[:, None]).squeeze(-1)
        token = torch.where(finished, torch.full_like(token, self.pad_id), token)
        logp = torch.where(finished, torch.zeros_like(logp), logp)
        now_done = finished | (token[:, None] == eos[None, :]).any(-1)
        return token, logp, now_done

    def _static_step(self, tok, step, pos_last, valid, kv_start, cache, noise, finished, eos, suppress, arange_l, seen=None):
        """One decode step over the static cache: forward one token per row, then select."""
        pos = pos_last + step
        keep = valid & (arange_l <= (kv_start + step - 1))
        mask = keep[:, None, None, :]
        masks = {t: mask for t in self._layer_types()}
        out = self.base(input_ids=tok, attention_mask=masks, position_ids=pos, use_cache=True, logits_to_keep=1,
                        **{self._cache_kw: cache})
        return self._select(out.logits[:, -1].float(), noise, step, finished, eos, suppress, seen)

    def _generate(self, prompt_inputs, num_generations, greedy, seed, use_compile) -> RolloutResult:
        from transformers import DynamicCache

        g = int(num_generations)
        if g < 1:
            raise ValueError(f"num_generations must be >= 1, got {num_generations}")
        dev = self._device()
        inputs = {k: (v.to(dev) if isinstance(v, torch.Tensor) else v) for k, v in dict(prompt_inputs).items()}
        ids = inputs.pop("input_ids")
        am = inputs.pop("attention_mask", None)
        if am is None:
            am = torch.ones_like(ids)
        extra = {k: v for k, v in inputs.items() if v is not None}
        b, plen = ids.shape
        n = b * g
        t_max = self.max_new_tokens
        check_every = self.check_every or (16 if dev.type == "cuda" else 1)
        eos = torch.tensor(self.eos_ids, device=dev, dtype=torch.long)
        suppress = torch.tensor(self.suppress_ids, device=dev, dtype=torch.long) if self.suppress_ids else None
        gen = None
        if not greedy:
            gen = torch.Generator(device=dev)
            if seed is None:
                gen.seed()
            else:
                gen.manual_seed(int(seed))

        was_training = self.base.training
        self.base.eval()
        sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
        stats: dict[str, Any] = {"prompts": b, "num_generations": g, "prompt_len": plen, "static_cache": self.static_cache,
                                 "compiled": self.compile_backend if use_compile else False}
        try:
            t0 = time.perf_counter()
            # 1. one prefill per prompt (vision tower included)
            pos = self._positions(ids, am, extra)
            dyn = DynamicCache()
            out = self.base(input_ids=ids, attention_mask=am, position_ids=pos, use_cache=True, logits_to_keep=1,
                            **{self._cache_kw: dyn}, **extra)
            logits0 = out.logits[:, -1].float().repeat_interleave(g, dim=0)
            del out
            pos_last = pos[..., -1:].repeat_interleave(g, dim=-2)  # [3, N, 1] or [N, 1]
            am_rep = am.repeat_interleave(g, dim=0)
            sync()
            stats["prefill_s"] = time.perf_counter() - t0

            # 2. decode state
            tokens = torch.full((n, t_max), self.pad_id, dtype=torch.long, device=dev)
            logps = torch.zeros((n, t_max), dtype=torch.float32, device=dev)
            finished = torch.zeros(n, dtype=torch.bool, device=dev)
            steps = torch.arange(t_max, device=dev, dtype=torch.long)
            vocab = logits0.shape[-1]

            def draw():
                if gen is None:
                    return None
                return torch.empty((n, vocab), dtype=torch.float32, device=dev).exponential_(generator=gen)

            seen = None
            if self.repetition_penalty != 1.0:  # as transformers: every id of the row so far, padding included
                seen = torch.zeros((n, vocab), dtype=torch.bool, device=dev)
                seen.scatter_(1, ids.repeat_interleave(g, dim=0), True)
            tok, lp, finished = self._select(logits0, draw(), steps[0], finished, eos, suppress, seen)
            if seen is not None:
                seen.scatter_(1, tok[:, None], True)
            tokens[:, 0] = tok
            logps[:, 0] = lp

            if self.static_cache:
                length = _round_up(plen + t_max, self.cache_bucket)
                static = self._static_cache_for(n, length)
                self._fill_static(static, dyn, g, n, plen, length)
                del dyn
                valid = torch.ones((n, length), dtype=torch.bool, device=dev)
                valid[:, :plen] = am_rep.bool()
                kv_start = torch.tensor(plen, device=dev, dtype=torch.long)
                arange_l = torch.arange(length, device=dev, dtype=torch.long)
                step_fn = self._static_step
                if use_compile:
                    if self._compiled is None:
                        if self.compile_backend == "inductor":
                            self._compiled = torch.compile(self._static_step, mode=self.compile_mode, dynamic=False)
                        else:
                            self._compiled = torch.compile(self._static_step, backend="cudagraphs", dynamic=False)
                    step_fn = self._compiled
                configs = self._language_model_configs()
                saved = [c._attn_implementation for c in configs]
                for c in configs:
                    c._attn_implementation = DECODE_ATTENTION
                try:
                    # fixed-address, contiguous step inputs, updated in place between replays
                    cur = tokens[:, :1].clone()
                    step_t = torch.ones((), dtype=torch.long, device=dev)
                    s = 1
                    while s < t_max:
                        if check_every and s % check_every == 0 and bool(finished.all()):
                            break
                        if use_compile:
                            torch.compiler.cudagraph_mark_step_begin()
                        tok, lp, done = step_fn(cur, step_t, pos_last, valid, kv_start, static, draw(), finished, eos,
                                                suppress, arange_l, seen)
                        if seen is not None:
                            seen.scatter_(1, tok[:, None], True)
                        tokens[:, s].copy_(tok)
                        logps[:, s].copy_(lp)
                        finished.copy_(done)
                        cur.copy_(tok.unsqueeze(1))
                        step_t.add_(1)
                        s += 1
                finally:
                    for c, name in zip(configs, saved, strict=True):
                        c._attn_implementation = name
            else:
                dyn.batch_repeat_interleave(g)
                full_am = torch.cat([am_rep, am_rep.new_ones((n, t_max))], dim=1)
                s = 1
                while s < t_max:
                    if check_every and s % check_every == 0 and bool(finished.all()):
                        break
                    out = self.base(input_ids=tokens[:, s - 1:s], attention_mask=full_am[:, : plen + s],
                                    position_ids=pos_last + s, use_cache=True, logits_to_keep=1,
                                    **{self._cache_kw: dyn})
                    tok, lp, finished = self._select(out.logits[:, -1].float(), draw(), steps[s], finished, eos, suppress, seen)
                    if seen is not None:
                        seen.scatter_(1, tok[:, None], True)
                    tokens[:, s] = tok
                    logps[:, s] = lp
                    s += 1
                del dyn
            sync()
            stats["decode_s"] = time.perf_counter() - t0 - stats["prefill_s"]
            stats["steps"] = s
        finally:
            self.base.train(was_training)

        # 3. mask up to and including the first EOS; trim to the longest completion
        is_eos = (tokens[:, :, None] == eos[None, None, :]).any(-1)
        has_eos = is_eos.any(-1)
        first = torch.where(has_eos, is_eos.int().argmax(-1), torch.full_like(has_eos, t_max, dtype=torch.long))
        mask = (torch.arange(t_max, device=dev)[None, :] <= first[:, None]).int()
        mask = mask * (torch.arange(t_max, device=dev)[None, :] < s).int()
        width = int(mask.sum(-1).max().item()) if n else 0
        width = max(width, 1)
        tokens, logps, mask = tokens[:, :width], logps[:, :width] * mask[:, :width], mask[:, :width]
        stats["new_tokens"] = int(mask.sum().item())
        stats["total_s"] = stats["prefill_s"] + stats["decode_s"]
        self.last_stats = stats
        return RolloutResult(tokens, logps, mask)

