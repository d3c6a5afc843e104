"""Dynamic sampling (train/flat_groups.py): groups whose rewards are all equal are replaced by freshly drawn ones,
the regrouped batch keeps TRL's layout, and the rounds are bounded."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def _trainer(tiny_model, mini_data, tmp_path, reward, rounds, **cfg_kw):
    from datasets import Dataset
    from trl import GRPOConfig

    from preferthinker.modeling import load_model_and_processor
    from tests.test_fast_grpo import _rows
    from preferthinker.train.fast_grpo import make_grpo_trainer

    model, proc = load_model_and_processor(tiny_model, padding_side="left", for_training=True)
    cfg = dict(output_dir=str(tmp_path / "grpo"), use_cpu=True, bf16=False, num_generations=2, per_device_train_batch_size=2,
               max_completion_length=8, report_to="none", max_steps=1, logging_steps=1, save_strategy="no",
               gradient_checkpointing=False, learning_rate=1e-3, seed=0)
    cfg.update(cfg_kw)
    return make_grpo_trainer(fast=cfg.pop("fast", True), dynamic_sampling_rounds=rounds, model=model, reward_funcs=[reward],
                             args=GRPOConfig(**cfg), train_dataset=Dataset.from_list(_rows(mini_data, proc)), processing_class=proc)


def _length(completions, **kw):
    return [len(c[0]["content"]) + 0.01 * i for i, c in enumerate(completions)]  # never flat


def _constant(completions, **kw):
    return [1.0] * len(completions)


def _generate(tr, n_prompts, start=0):
    tr.model.train()
    rows = [tr.train_dataset[i] for i in range(start, start + n_prompts) for _ in range(tr.num_generations)]
    return tr._generate_and_score_completions(rows)


def test_split_then_merge_gives_back_the_generation_output(tiny_model, mini_data, tmp_path):
    """Three prompts of two lengths, split into groups and merged again (same order, then reversed): every row keeps
    its own prompt, completion, images and advantage; widths are re-padded the way TRL pads them."""
    from preferthinker.train.flat_groups import merge_groups, split_groups

    tr = _trainer(tiny_model, mini_data, tmp_path, _length, 0, per_device_train_batch_size=6)
    out = _generate(tr, 3)
    groups = split_groups(out, 2)
    assert len(groups) == 3 and all(g["prompt_ids"].shape[0] == 2 for g in groups)
    pad = tr._tokenizer.pad_token_id
    same = merge_groups(groups, pad)
    for k, v in out.items():
        if k == "num_items_in_batch":
            continue
        if isinstance(v, torch.Tensor):
            assert torch.equal(same[k], v), k
        else:
            assert same[k] == v, k
    # another call's group (another prompt width) in front: prompts left-padded, completions right-padded
    other = split_groups(_generate(tr, 1, start=1), 2)[0]
    mixed = merge_groups([other, groups[0]], pad)
    p, c = mixed["prompt_ids"].shape[1], mixed["completion_ids"].shape[1]
    for rows, g in ((slice(0, 2), other), (slice(2, 4), groups[0])):
        gp, gc = g["prompt_ids"].shape[1], g["completion_ids"].shape[1]
        assert torch.equal(mixed["prompt_ids"][rows, p - gp:], g["prompt_ids"])
        assert (mixed["prompt_mask"][rows, : p - gp] == 0).all()
        assert torch.equal(mixed["completion_ids"][rows, :gc], g["completion_ids"])
        assert (mixed["completion_mask"][rows, gc:] == 0).all()
        mm = mixed["mm_token_type_ids"][rows]
        assert torch.equal(mm[:, p - gp: p], g["mm_token_type_ids"][:, :gp]) and (mm[:, p + gc:] == 0).all()
    assert mixed["num_images"] == other["num_images"] + groups[0]["num_images"]
    assert torch.equal(mixed["pixel_values"], torch.cat([*other["pixel_values"], *groups[0]["pixel_values"]]))
    assert mixed["image_grid_thw"].shape[0] == sum(mixed["num_images"])


def test_flat_groups_despite_float_rounding_and_unscored_rows():
    """Eight equal float32 sums 1.0 + 0.3 are flat although TRL's group std of them is ~1e-7 (its isclose against 1e-8
    counts them as not flat); a group where one row differs by 0.3 is not; NaN (unscored) rows are ignored."""
    from trl.trainer.utils import nanstd

    from preferthinker.train.flat_groups import flat_groups

    acc = torch.tensor([1.0] * 8 + [1.0] * 7 + [0.0] + [float("nan")] * 2 + [0.5] * 6)
    fmt = torch.full((24,), 1.0)
    rpf = torch.stack([acc, fmt], 1)
    total = (rpf * torch.tensor([1.0, 0.3])).nansum(1)
    assert not torch.isclose(nanstd(total[:8]), torch.tensor(0.0))  # what TRL's frac_reward_zero_std would test
    assert flat_groups(rpf, 8).tolist() == [True, False, True]
    assert flat_groups(torch.tensor([[0.2], [0.2000001], [0.9], [0.9]]), 2).tolist() == [True, True]
    assert flat_groups(torch.tensor([[0.2], [0.21]]), 2).tolist() == [False]


def test_unknown_output_keys_are_refused():
    from preferthinker.train.flat_groups import split_groups

    out = {"prompt_ids": torch.zeros(2, 3, dtype=torch.long), "advantages": torch.zeros(2), "new_field": torch.zeros(2)}
    with pytest.raises(ValueError, match="new_field"):
        split_groups(out, 2)
    with pytest.raises(ValueError, match="whole number of groups"):
        split_groups({"prompt_ids": torch.zeros(3, 3), "advantages": torch.zeros(3)}, 2)


@pytest.mark.parametrize("fast", [True, False])
def test_flat_groups_are_replaced_until_the_rounds_run_out(tiny_model, mini_data, tmp_path, fast):
    """A constant reward makes every group flat: both extra rounds run, and the step trains on a flat group (nothing
    else was found). A reward that is flat only on its first call: one extra round, and the kept group is not flat."""
    tr = _trainer(tiny_model, mini_data, tmp_path / "const", _constant, 2, fast=fast)
    tr.train()
    st = tr.dynamic_sampling_stats
    assert st == {"generations": 1, "extra_rounds": 2, "groups_kept": 1, "flat_groups_kept": 1}
    if fast:
        assert tr.rollout_func.calls == 3  # the first generation and two extra rounds
    calls = []

    def flat_once(completions, **kw):
        calls.append(1)
        return _constant(completions) if len(calls) == 1 else _length(completions)

    flat_once.__name__ = "flat_once"
    tr = _trainer(tiny_model, mini_data, tmp_path / "once", flat_once, 3, fast=fast)
    seen = []
    orig = type(tr)._generate_and_score_completions

    def spy(self, inputs):
        out = orig(self, inputs)
        seen.append(out["advantages"].clone())
        return out

    tr._generate_and_score_completions = spy.__get__(tr)
    tr.train()
    assert tr.dynamic_sampling_stats == {"generations": 1, "extra_rounds": 1, "groups_kept": 1, "flat_groups_kept": 0}
    assert len(seen) == 1 and (seen[0] != 0).any()  # the batch the step trained on carries a signal
    logs = [h for h in tr.state.log_history if "dynamic_sampling/rounds" in h]
    assert logs and logs[0]["dynamic_sampling/rounds"] == 1.0 and logs[0]["dynamic_sampling/frac_flat_kept"] == 0.0


def test_off_by_default_is_trl(tiny_model, mini_data, tmp_path):
    from trl import GRPOTrainer

    tr = _trainer(tiny_model, mini_data, tmp_path, _constant, 0, fast=False)
    assert type(tr) is GRPOTrainer
    tr = _trainer(tiny_model, mini_data, tmp_path, _constant, 0)
    tr.train()
    assert tr.dynamic_sampling_stats["generations"] == 0 and tr.rollout_func.calls == 1
    # the fast trainer still counts flat groups, with the tolerance (TRL's own metric says 0 or 1 by float luck)
    assert [h["frac_reward_flat"] for h in tr.state.log_history if "frac_reward_flat" in h] == [1.0]
