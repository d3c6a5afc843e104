"""Dynamic sampling for GRPO (DAPO's "dynamic sampling"): groups whose completions all got the same reward are
replaced by groups of freshly drawn prompts before the step trains on them.

A group whose G rewards are equal has advantage 0 on every row (up to float rounding: ~1e-3 after TRL's scaling), so
it adds nothing to the policy gradient but noise; with
the loss normalised over all completion tokens of the batch (``loss_type=dapo``) it only dilutes the groups that do
carry a signal. A sharp SFT policy makes most groups flat: its G samples write the same answer. With
``max_rounds = N > 0``, after TRL has generated and scored a generation batch, each flat group is set aside and up
to N more rounds of generation run on prompts drawn at random from the training set (the same number of prompts
as the batch holds), until the batch has as many non-flat groups as it had prompts; when the rounds run out, flat
groups fill the remaining places. The rows keep TRL's layout, so TRL's own splitting into micro-batches,
``steps_per_generation``, ``num_iterations`` and the loss normalisation (``num_items_in_batch``, recomputed over the
kept rows) work as before. Every round samples from the current policy, so the step stays on-policy.

Requirements: each process's generation batch holds whole groups (``per_device_train_batch_size *
steps_per_generation`` a multiple of ``num_generations``); every process runs the same number of rounds (the
decision is reduced across processes, since generation under ZeRO-3 or with the shared-prompt pass is collective).

A group is flat when every reward function gave its rows the same value up to a relative 1e-6 (``flat_groups``): not
"advantages exactly 0" and not TRL's ``frac_reward_zero_std``, which float rounding in the group mean defeats.

Logged per generation: ``frac_reward_flat`` (share of flat groups in what TRL sampled first; logged with dynamic
sampling off too, on the fast trainer), ``dynamic_sampling/rounds`` (extra generation rounds run) and
``dynamic_sampling/frac_flat_kept`` (share of the kept groups that are still flat). TRL's own reward means are logged
for every round, discarded groups included: they describe what was sampled, not what was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

# keys of TRL 1.16's generation output, by how their second dimension is laid out
_PROMPT_KEYS = ("prompt_ids", "prompt_mask")
_COMPLETION_KEYS = ("completion_ids", "completion_mask", "old_per_token_logps", "sampling_per_token_logps",
                    "ref_per_token_logps", "importance_sampling_ratio", "tool_mask")
_PROMPT_COMPLETION_KEYS = ("mm_token_type_ids", "token_type_ids")  # prompt columns, then one column per completion token
_ROW_KEYS = ("advantages",)
_IMAGE_KEYS = ("pixel_values", "image_grid_thw", "num_images")
_KNOWN = {*_PROMPT_KEYS, *_COMPLETION_KEYS, *_PROMPT_COMPLETION_KEYS, *_ROW_KEYS, *_IMAGE_KEYS, "num_items_in_batch"}


def split_groups(out: dict[str, Any], num_generations: int) -> list[dict[str, Any]]:
    """One dict per group of ``num_generations`` consecutive rows of a TRL generation output (pixel values split
    per image grid, so that each group carries its own images). Unknown keys are an error: merging them back could
    silently misalign rows."""
    unknown = sorted(k for k in out if k not in _KNOWN)
    if unknown:
        raise ValueError(f"dynamic sampling: the generation output holds keys it does not know how to regroup: {unknown} "
                         f"(known: {sorted(_KNOWN)}); set dynamic_sampling.max_rounds=0")
    rows = int(out["prompt_ids"].shape[0])
    if rows % num_generations:
        raise ValueError(f"dynamic sampling: {rows} rows on this process is not a whole number of groups of {num_generations}")
    if out.get("pixel_values") is not None:
        if out.get("image_grid_thw") is None or out.get("num_images") is None:
            raise ValueError("dynamic sampling: pixel_values without image_grid_thw/num_images (only Qwen-style image inputs are regrouped)")
        from trl.trainer.utils import split_pixel_values_by_grid

        out = split_pixel_values_by_grid(out)  # pixel_values and image_grid_thw: one tensor per row
    groups = []
    for g in range(rows // num_generations):
        sl = slice(g * num_generations, (g + 1) * num_generations)
        grp: dict[str, Any] = {k: v[sl] for k, v in out.items() if k != "num_items_in_batch" and v is not None}
        grp["_prompt_len"] = int(out["prompt_ids"].shape[1])
        groups.append(grp)
    return groups


def flat_groups(rewards_per_func: torch.Tensor, num_generations: int, rel_tol: float = 1e-6) -> torch.Tensor:
    """[rows, n_funcs] rewards -> one bool per group of ``num_generations`` rows: True when every reward function gave
    the group's rows the same value (NaN = not scored, ignored). Compared with a tolerance, not through the
    advantages: TRL's group mean of eight equal float32 sums such as 1.0 + 0.3 is off in the last bit, so a flat
    group gets a reward std of ~1e-7 and advantages of ~1e-3 instead of 0 (and its ``frac_reward_zero_std``, an
    ``isclose`` against atol 1e-8, counts none of them)."""
    r = rewards_per_func.view(-1, num_generations, rewards_per_func.shape[-1])
    nan = torch.isnan(r)
    hi = torch.where(nan, torch.full_like(r, float("-inf")), r).amax(1)
    lo = torch.where(nan, torch.full_like(r, float("inf")), r).amin(1)
    spread = torch.where(torch.isfinite(hi) & torch.isfinite(lo), hi - lo, torch.zeros_like(hi))
    scale = 1.0 + torch.where(torch.isfinite(hi), hi.abs(), torch.zeros_like(hi))
    return (spread <= rel_tol * scale).all(-1)


def _pad(t: torch.Tensor, width: int, left: bool, value: float | int) -> torch.Tensor:
    short = width - t.shape[1]
    if short <= 0:
        return t
    fill = t.new_full((t.shape[0], short, *t.shape[2:]), value)
    return torch.cat([fill, t] if left else [t, fill], dim=1)


def merge_groups(groups: Sequence[dict[str, Any]], pad_token_id: int) -> dict[str, Any]:
    """The inverse of ``split_groups`` over groups that may come from different generation calls (different prompt
    and completion widths): prompts are left-padded and completions right-padded to the widest, as TRL pads them."""
    if not groups:
        raise ValueError("dynamic sampling: no groups to merge")
    keys = [k for k in groups[0] if not k.startswith("_")]
    for g in groups[1:]:
        if [k for k in g if not k.startswith("_")] != keys:
            raise ValueError("dynamic sampling: groups from different generation calls carry different keys")
    p_max = max(int(g["prompt_ids"].shape[1]) for g in groups)
    c_max = max(int(g["completion_ids"].shape[1]) for g in groups)
    out: dict[str, Any] = {}
    for k in keys:
        vals = [g[k] for g in groups]
        if k in _PROMPT_KEYS:
            out[k] = torch.cat([_pad(v, p_max, True, pad_token_id if k == "prompt_ids" else 0) for v in vals])
        elif k in _COMPLETION_KEYS:
            fill = pad_token_id if k == "completion_ids" else (1.0 if k == "importance_sampling_ratio" else 0)
            # per-token tensors are as wide as their group's completions; sequence-level ones ([rows, 1]) stay
            out[k] = torch.cat([_pad(v, c_max, False, fill) if v.dim() > 1 and v.shape[1] == g["completion_ids"].shape[1] else v
                                for g, v in zip(groups, vals, strict=True)])
        elif k in _PROMPT_COMPLETION_KEYS:
            parts = []
            for g, v in zip(groups, vals, strict=True):
                p = g["_prompt_len"]
                parts.append(torch.cat([_pad(v[:, :p], p_max, True, 0), _pad(v[:, p:], c_max, False, 0)], dim=1))
            out[k] = torch.cat(parts)
        elif k in _ROW_KEYS:
            out[k] = torch.cat(vals)
        elif k in _IMAGE_KEYS:  # per-row lists (split_groups); TRL's unsplit concatenates the tensors below
            out[k] = [t for v in vals for t in v]
        else:  # pragma: no cover - split_groups refuses unknown keys
            raise ValueError(f"dynamic sampling: cannot merge key {k}")
    from trl.trainer.utils import unsplit_pixel_values_by_grid

    return unsplit_pixel_values_by_grid(out)


class DynamicSamplingMixin:
    """Put before ``GRPOTrainer`` in the bases: ``class T(DynamicSamplingMixin, GRPOTrainer)``. Extra keyword
    ``dynamic_sampling_rounds`` (0 = off, TRL's behaviour). See the module docstring."""

    def __init__(self, *args: Any, dynamic_sampling_rounds: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        rounds = int(dynamic_sampling_rounds)
        if rounds < 0:
            raise ValueError(f"dynamic_sampling_rounds must be >= 0, got {rounds}")
        self.dynamic_sampling_rounds = rounds
        if rounds:
            per_process = self.args.per_device_train_batch_size * self.args.steps_per_generation
            if per_process % self.num_generations:
                raise ValueError(
                    f"dynamic sampling needs whole groups on each process: per_device_train_batch_size * steps_per_generation "
                    f"= {per_process} is not a multiple of num_generations = {self.num_generations}")
        self.dynamic_sampling_stats = {"generations": 0, "extra_rounds": 0, "groups_kept": 0, "flat_groups_kept": 0}

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        if self.model.training:  # gathered over processes, as TRL computes the group statistics
            self._last_flat = flat_groups(rewards_per_func.detach().float().cpu(), self.num_generations)
        return rewards_per_func

    def _local_flat(self, n_local_groups: int) -> list[bool]:
        flags = self._last_flat.tolist()
        start = int(self.accelerator.process_index) * n_local_groups
        return flags[start:start + n_local_groups]

    def _draw_rows(self, n_prompts: int, round_: int) -> list[dict[str, Any]]:
        # a generator of their own, seeded by (seed, optimizer step, round, process): TRL's sampler and the global RNG
        # see the same draws with and without dynamic sampling, and a resumed run draws what the uninterrupted one did
        key = ((int(self.args.seed) * 1_000_003 + int(self.state.global_step)) * 1_009 + round_) * 257 + int(self.accelerator.process_index)
        rng = torch.Generator().manual_seed(key % (2**63 - 1))
        idx = torch.randint(len(self.train_dataset), (n_prompts,), generator=rng).tolist()
        return [self.train_dataset[i] for i in idx for _ in range(self.num_generations)]

    def _any_process(self, flag: bool) -> bool:
        t = torch.tensor([1.0 if flag else 0.0], device=self.accelerator.device)
        return bool(self.accelerator.reduce(t, reduction="sum").item() > 0)

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        self._last_flat = None
        out = super()._generate_and_score_completions(inputs)
        if not self.model.training or self._last_flat is None:
            return out
        g = self.num_generations
        need = len(inputs) // g
        first = self._local_flat(need) if len(inputs) % g == 0 else []
        if first:  # what TRL sampled, before any replacement (the tolerance-based count; see flat_groups)
            self._metrics["train"]["frac_reward_flat"].append(sum(first) / len(first))
        if self.dynamic_sampling_rounds <= 0:
            return out
        kept, flat = [], []
        for grp, is_flat in zip(split_groups(out, g), first, strict=True):
            grp["_flat"] = is_flat
            (flat if is_flat else kept).append(grp)
        rounds = 0
        while rounds < self.dynamic_sampling_rounds and self._any_process(len(kept) < need):
            rounds += 1
            more = super()._generate_and_score_completions(self._draw_rows(need, rounds))
            for grp, is_flat in zip(split_groups(more, g), self._local_flat(need), strict=True):
                grp["_flat"] = is_flat
                (flat if is_flat else kept).append(grp)
        chosen = (kept + flat)[:need]
        n_flat = sum(c["_flat"] for c in chosen)
        merged = merge_groups(chosen, self._tokenizer.pad_token_id)
        loss_mask = merged["completion_mask"] if merged.get("tool_mask") is None else merged["completion_mask"] * merged["tool_mask"]
        merged["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()
        st = self.dynamic_sampling_stats
        st["generations"] += 1
        st["extra_rounds"] += rounds
        st["groups_kept"] += len(chosen)
        st["flat_groups_kept"] += n_flat
        self._metrics["train"]["dynamic_sampling/rounds"].append(float(rounds))
        self._metrics["train"]["dynamic_sampling/frac_flat_kept"].append(n_flat / max(1, len(chosen)))
        return merged
