"""The fast GRPO path on the tiny model: TRL's rollout_func hook with FastRollout, the shared-prompt log-prob pass
(equal log-probs, entropies and gradients to TRL's own), and two real training steps."""

from __future__ import annotations

import math
import os

import pytest
import torch

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def _rows(mini_data, processor, n=4):
    from preferthinker.data.loading import PromptSpec, build_examples
    from preferthinker.data.schema import load_train_jsonl

    recs = load_train_jsonl(mini_data / "train" / "grpo.jsonl")[:n]
    root = mini_data / "train" / "images"
    spec = PromptSpec(style="compact", system="compact", min_pixels=3136, max_pixels=3136)
    rows = build_examples(recs, root, spec, kind="grpo", processor=processor)
    # a second prompt shape (6 images instead of 8): batches mix prompt lengths, so left padding is exercised
    rows[1] = build_examples(recs[1:2], root, PromptSpec(**{**spec.__dict__, "max_refs": 2}), kind="grpo", processor=processor)[0]
    return rows


def _length_reward(completions, **kw):
    return [len(c[0]["content"]) / 40 for c in completions]


def _trainer(tiny_model, mini_data, tmp_path, *, fast=True, peft=False, **cfg_kw):
    from datasets import Dataset
    from peft import LoraConfig
    from trl import GRPOConfig

    from preferthinker.modeling import load_model_and_processor
    from preferthinker.train.fast_grpo import make_grpo_trainer

    model, proc = load_model_and_processor(tiny_model, padding_side="left", for_training=True)
    cfg = dict(output_dir=str(tmp_path / "grpo"), use_cpu=True, bf16=False, num_generations=2, per_device_train_batch_size=2,
               max_completion_length=16, report_to="none", max_steps=2, logging_steps=1, save_strategy="no",
               gradient_checkpointing=False, learning_rate=1e-3, seed=0)
    cfg.update(cfg_kw)
    return make_grpo_trainer(
        fast=fast, model=model, reward_funcs=[_length_reward], args=GRPOConfig(**cfg),
        train_dataset=Dataset.from_list(_rows(mini_data, proc)), processing_class=proc,
        peft_config=LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]) if peft else None,
    )


@pytest.mark.slow
def test_two_grpo_steps_with_the_fast_path(tiny_model, mini_data, tmp_path):
    tr = _trainer(tiny_model, mini_data, tmp_path)
    before = {n: p.detach().clone() for n, p in tr.model.named_parameters() if p.requires_grad}
    tr.train()
    rf = tr.rollout_func
    assert rf.calls == 2 and rf.fallbacks == 0  # every rollout went through FastRollout
    assert rf.last_stats and rf.last_stats[0]["prompts"] == 1 and rf.last_stats[0]["num_generations"] == 2
    assert tr.shared_prefix_calls >= 2  # the loss pass ran each prompt once for its 2 completions
    logs = [h for h in tr.state.log_history if "completions/mean_length" in h]
    assert len(logs) == 2
    for h in logs:
        assert 1 <= h["completions/mean_length"] <= 16
        assert h["completions/max_length"] <= 16
        assert math.isfinite(h["reward"]) and h["reward"] >= 0
        assert math.isfinite(h["loss"]) and math.isfinite(h["entropy"]) and h["entropy"] > 0
    changed = [n for n, p in tr.model.named_parameters() if p.requires_grad and not torch.equal(p.detach(), before[n])]
    assert changed  # the optimizer stepped


def test_rollout_func_returns_trl_contract(tiny_model, mini_data, tmp_path):
    from trl.data_utils import prepare_multimodal_messages

    tr = _trainer(tiny_model, mini_data, tmp_path, max_completion_length=12)
    rows = _rows(mini_data, tr.processing_class)[:2]
    prompts = [prepare_multimodal_messages(r["prompt"], images=r["images"]) for r in rows for _ in range(3)]
    out = tr.rollout_func(prompts, tr)
    assert set(out) == {"prompt_ids", "completion_ids", "logprobs"}
    trl_ids, _, _ = tr._tokenize_prompts(prompts)  # what TRL itself would have fed generate
    assert [list(x) for x in trl_ids] == out["prompt_ids"]
    assert [s["num_generations"] for s in tr.rollout_func.last_stats] == [3]  # 2 prompts x 3, one batched call
    for ids, lps in zip(out["completion_ids"], out["logprobs"]):
        assert 1 <= len(ids) <= 12 and len(lps) == len(ids)
        assert all(lp <= 0 for lp in lps)
        eos = [i for i, t in enumerate(ids) if t in tr.eos_token_ids]
        assert eos in ([], [len(ids) - 1])  # ends at its first EOS, or runs to the budget
        assert tr.model.config.image_token_id not in ids  # suppressed, as TRL does for VLMs


def test_unsupported_settings_fall_back_to_trl(tiny_model, mini_data, tmp_path):
    from trl.data_utils import prepare_multimodal_messages

    tr = _trainer(tiny_model, mini_data, tmp_path, repetition_penalty=1.2, max_completion_length=8)
    rows = _rows(mini_data, tr.processing_class)[:1]
    prompts = [prepare_multimodal_messages(r["prompt"], images=r["images"]) for r in rows for _ in range(2)]
    out = tr.rollout_func(prompts, tr)
    assert tr.rollout_func.fallbacks == 1 and len(out["completion_ids"]) == 2


def test_plain_trainer_when_not_fast(tiny_model, mini_data, tmp_path):
    from trl import GRPOTrainer

    tr = _trainer(tiny_model, mini_data, tmp_path, fast=False)
    assert type(tr) is GRPOTrainer and tr.rollout_func is None


def _batch(tr, mini_data, n_prompts, comp, cmask):
    """n_prompts prompts x 2 completions (comp, cmask: [2 * n_prompts, C]) as the trainer's log-prob pass gets them."""
    from trl.data_utils import apply_chat_template, prepare_multimodal_messages

    proc = tr.processing_class
    rows = _rows(mini_data, proc)[:n_prompts]
    prompts = [prepare_multimodal_messages(r["prompt"], images=r["images"]) for r in rows for _ in range(2)]
    images = [r["images"] for r in rows for _ in range(2)]
    texts = [apply_chat_template({"prompt": p}, proc)["prompt"] for p in prompts]
    enc = proc(images=images, text=texts, padding=True, return_tensors="pt")
    ids = torch.cat([enc["input_ids"], comp], 1)
    am = torch.cat([enc["attention_mask"], cmask], 1)
    kw = dict(pixel_values=enc["pixel_values"], image_grid_thw=enc["image_grid_thw"], num_images=[len(i) for i in images],
              mm_token_type_ids=torch.cat([enc["mm_token_type_ids"], torch.zeros_like(comp)], 1))
    return ids, am, kw


@pytest.mark.parametrize("checkpointing", [False, True])
def test_shared_prompt_logps_entropies_and_grads_equal_trl(tiny_model, mini_data, tmp_path, checkpointing):
    """Same batch through FastGRPOTrainer's shared-prompt pass and through TRL's per-row pass (LoRA, two prompts of
    different lengths x 2 completions, right-padded completions)."""
    tr = _trainer(tiny_model, mini_data, tmp_path, peft=True, gradient_checkpointing=checkpointing)
    g = torch.Generator().manual_seed(0)
    comp = torch.randint(0, 500, (4, 7), generator=g)
    cmask = torch.ones_like(comp)
    cmask[1, 5:] = 0
    cmask[2, 3:] = 0
    ids, am, kw = _batch(tr, mini_data, 2, comp, cmask)
    tr.model.train()
    if checkpointing:  # the Trainer turns it on only in train(); do it here as it will be then
        tr.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        assert any(getattr(m, "gradient_checkpointing", False) is True for m in tr.model.modules())
    res = {}
    for shared in (True, False):
        tr.shared_prefix = shared
        tr.model.zero_grad(set_to_none=True)
        calls = tr.shared_prefix_calls
        lp, ent, _ = tr._get_per_token_logps_and_entropies(tr.model, ids, am, comp.shape[1], compute_entropy=True, **kw)
        assert tr.shared_prefix_calls == calls + int(shared)
        ((lp * cmask).sum() + 0.1 * (ent * cmask).sum()).backward()
        res[shared] = (lp.detach(), ent.detach(), {n: p.grad.clone() for n, p in tr.model.named_parameters() if p.grad is not None})
    # "auto" (the default) takes the shared pass only without gradient checkpointing
    tr.shared_prefix = "auto"
    calls = tr.shared_prefix_calls
    tr._get_per_token_logps_and_entropies(tr.model, ids, am, comp.shape[1], compute_entropy=True, **kw)
    assert tr.shared_prefix_calls == calls + (0 if checkpointing else 1)
    tr.model.zero_grad(set_to_none=True)
    (lp1, ent1, g1), (lp0, ent0, g0) = res[True], res[False]
    m = cmask.bool()
    torch.testing.assert_close(lp1[m], lp0[m], atol=1e-5, rtol=0)
    torch.testing.assert_close(ent1[m], ent0[m], atol=1e-4, rtol=0)
    assert (lp1[~m] == 0).all()
    assert g1.keys() == g0.keys() and len(g0) > 0 and all("lora" in n for n in g0)
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], atol=1e-5, rtol=1e-4)


def test_token_logps_with_no_completion_token_is_empty_and_differentiable():
    """Every completion of a batch truncated and masked leaves no token to score: empty results, no torch.cat error,
    and a (zero) loss that still backpropagates into the head."""
    from preferthinker.train.fast_grpo import token_logps

    w = torch.randn(11, 6, requires_grad=True)
    h = torch.randn(0, 6, requires_grad=True)
    lp, ent = token_logps(h, w, None, torch.zeros(0, dtype=torch.long), 1.0, chunk=4)
    assert lp.shape == ent.shape == (0,)
    (lp.sum() + ent.sum()).backward()
    assert w.grad is not None and torch.count_nonzero(w.grad) == 0
    # and the non-empty path is unchanged by the early return: chunked equals one chunk
    h = torch.randn(9, 6)
    y = torch.randint(0, 11, (9,))
    a, b = token_logps(h, w, None, y, 0.7, chunk=4), token_logps(h, w, None, y, 0.7, chunk=1024)
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])


def test_shared_prompt_pass_with_every_completion_masked(tiny_model, mini_data, tmp_path):
    tr = _trainer(tiny_model, mini_data, tmp_path)
    comp = torch.randint(0, 500, (2, 5), generator=torch.Generator().manual_seed(0))
    cmask = torch.zeros_like(comp)
    ids, am, kw = _batch(tr, mini_data, 1, comp, cmask)
    tr.model.train()
    tr.shared_prefix = True
    lp, ent, _ = tr._get_per_token_logps_and_entropies(tr.model, ids, am, comp.shape[1], compute_entropy=True, **kw)
    assert lp.shape == ent.shape == comp.shape and (lp == 0).all() and (ent == 0).all()
    (lp.sum() + ent.sum()).backward()


def test_stable_weights_keep_addresses_and_follow_the_weights():
    """ZeRO-3 decodes from buffers allocated once: inside ``pinned`` the parameters live at the same addresses on every
    call and hold the current values; outside, the parameters get their own tensors back (DeepSpeed re-partitions
    what it gathered)."""
    from preferthinker.train.grpo_rollout import StableWeights

    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    stable = StableWeights()
    seen = []
    for step in range(3):
        own = [p.data for p in model.parameters()]
        with stable.pinned(model):
            seen.append([p.data_ptr() for p in model.parameters()])
            for p, data in zip(model.parameters(), own):
                assert p.data_ptr() != data.data_ptr() and torch.equal(p.data, data)
            x = torch.randn(5, 4)
            assert torch.equal(model(x), torch.nn.functional.linear(torch.nn.functional.linear(x, own[0], own[1]), own[2], own[3]))
        assert [p.data_ptr() for p in model.parameters()] == [d.data_ptr() for d in own]
        with torch.no_grad():  # an optimizer step between rollouts
            for p in model.parameters():
                p.add_(0.5 * (step + 1))
    assert seen[0] == seen[1] == seen[2] == stable.addresses() and stable.copies == 3


def test_rollout_policy_per_sharding():
    """Compiled decode where parameters stay put (one process, DDP, ZeRO-2), from stable buffers under ZeRO-3, never
    under FSDP; ZeRO-3 without the per-rollout gather keeps TRL's (rank-synchronised) generation."""
    from types import SimpleNamespace

    from preferthinker.train.grpo_rollout import TRLRolloutFunc

    def trainer(sharding, gather=True):
        stage = int(sharding[-1]) if sharding.startswith("zero") else 0
        acc = SimpleNamespace(num_processes=1 if sharding == "none" else 2,
                              state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(zero_stage=stage) if stage else None))
        return SimpleNamespace(accelerator=acc, is_deepspeed_enabled=bool(stage), is_fsdp_enabled=sharding == "fsdp",
                               args=SimpleNamespace(ds3_gather_for_generation=gather, generation_kwargs=None))

    on = TRLRolloutFunc(compile=True)
    assert on.decide(trainer("none")) == {"sharding": "none", "compile": True, "stable_weights": False}
    assert on.decide(trainer("ddp")) == {"sharding": "ddp", "compile": True, "stable_weights": False}
    assert on.decide(trainer("zero2")) == {"sharding": "zero2", "compile": True, "stable_weights": False}
    assert on.decide(trainer("zero3")) == {"sharding": "zero3", "compile": True, "stable_weights": True}
    assert on.decide(trainer("fsdp"))["compile"] is False
    assert TRLRolloutFunc(compile=True, stable_weights=False).decide(trainer("zero3"))["compile"] is False
    assert TRLRolloutFunc(compile=False).decide(trainer("zero3")) == {"sharding": "zero3", "compile": False, "stable_weights": False}
    assert on.unsupported(trainer("zero3", gather=False)).startswith("ZeRO-3 without ds3_gather_for_generation")
    assert on.unsupported(trainer("zero2", gather=False)) is None
