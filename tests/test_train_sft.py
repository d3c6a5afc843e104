"""The SFT recipe on the tiny model: loss masking, a real run, resume after a kill, ZeRO-2/3 on 2 processes."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch

from preferthinker.runtime import ConfigError
from tests.conftest import REPO, compose, sft_overrides


def _rows(mini_data, tiny_model, n=2):
    from preferthinker.data.loading import PromptSpec, build_examples
    from preferthinker.data.schema import load_train_jsonl
    from preferthinker.modeling import load_model_and_processor

    _, processor = load_model_and_processor(tiny_model, padding_side="right")
    recs = load_train_jsonl(mini_data / "train" / "sft.jsonl")[:n]
    spec = PromptSpec(style="compact", system="compact", min_pixels=3136, max_pixels=3136)
    return recs, processor, build_examples(recs, mini_data / "train" / "images", spec, kind="sft", processor=processor, max_length=4096)


def test_tiny_model_is_built_with_whole_word_profile_terms(mini_data, tmp_path):
    """First use builds the tiny backbone; with model.build.term_tokens (the default) every profile term of the
    training data is one token, the same id after a quote (profile block) and after a space (rationale)."""
    from transformers import AutoTokenizer

    from preferthinker.data.loading import PromptSpec, corpus_for_tokenizer, profile_terms
    from preferthinker.data.schema import load_train_jsonl
    from preferthinker.train.common import ensure_model

    recs = load_train_jsonl(mini_data / "train" / "sft.jsonl")
    terms = profile_terms(recs)
    assert terms and all(t in terms for t in recs[0].prefer_attributes.values() if "," not in t)
    cfg = compose("sft", sft_overrides(mini_data, tmp_path / "tiny", tmp_path / "run", **{"model.build.vocab_size": 1024}))
    tok = AutoTokenizer.from_pretrained(ensure_model(cfg, corpus_for_tokenizer(recs, PromptSpec(style="compact", system="compact")), terms))
    for term in terms:
        tid = tok.convert_tokens_to_ids(term)
        assert tok.encode(f'"{term}"', add_special_tokens=False)[1] == tid
        assert tok.encode(f"A shows {term}.", add_special_tokens=False)[-2] == tid
    assert tok.decode(tok.encode(recs[0].response, add_special_tokens=False)) == recs[0].response


def test_loss_on_assistant_response_only(mini_data, tiny_model):
    """With the recipe's settings (prompt/completion rows, completion_only_loss), no prompt, system or
    image token carries a label; every response token does."""
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    recs, processor, rows = _rows(mini_data, tiny_model)
    batch = DataCollatorForVisionLanguageModeling(processor, completion_only_loss=True)([dict(r) for r in rows])
    tok = processor.tokenizer
    image_id = tok.convert_tokens_to_ids("<|image_pad|>")
    assert (batch["input_ids"] == image_id).sum() == 2 * 8 * 4  # (3+3 refs + 2 candidates) x 4 tokens, 2 samples
    labels = batch["labels"]
    assert not ((labels == image_id).any())
    for i, rec in enumerate(recs):
        trained = tok.decode(labels[i][labels[i] != -100])
        assert trained.startswith(rec.response) and trained[len(rec.response):].strip() in ("<|im_end|>", "")
        assert "Preferred images:" not in trained and "<|vision_start|>" not in trained


def test_too_long_sample_is_an_error_not_a_truncation(mini_data, tiny_model):
    from preferthinker.data.loading import PromptSpec, build_examples
    from preferthinker.data.schema import SchemaError, load_train_jsonl
    from preferthinker.modeling import load_model_and_processor

    _, processor = load_model_and_processor(tiny_model)
    recs = load_train_jsonl(mini_data / "train" / "sft.jsonl")[:1]
    with pytest.raises(SchemaError, match=r"record 0: sample is \d+ tokens, more than max_length=50"):
        build_examples(recs, mini_data / "train" / "images", PromptSpec(style="compact", system="compact", min_pixels=3136, max_pixels=3136),
                       kind="sft", processor=processor, max_length=50, source="sft.jsonl")


@pytest.mark.slow
def test_sft_run_trains_saves_and_reloads(mini_data, tiny_model, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from preferthinker.train.sft import run

    cfg = compose("sft", sft_overrides(mini_data, tiny_model, tmp_path / "run", **{"trainer.max_steps": 3, "trainer.save_steps": 2}))
    res = run(cfg)
    assert res["global_step"] == 3 and res["train_samples"] == 24
    final = tmp_path / "run" / "final"
    model = AutoModelForImageTextToText.from_pretrained(final)
    AutoProcessor.from_pretrained(final)
    base = AutoModelForImageTextToText.from_pretrained(tiny_model)
    changed = [n for (n, p), (_, q) in zip(model.named_parameters(), base.named_parameters()) if not torch.equal(p, q)]
    assert len(changed) > 0.9 * len(list(model.parameters()))
    args = torch.load(final / "training_args.bin", weights_only=False)
    assert args.completion_only_loss is True and args.max_length is None
    for f in ("results.json", "learning_curve.png", "sft.log", "sft_config.yaml", "log_history.json"):
        assert (tmp_path / "run" / f).is_file(), f


@pytest.mark.slow
def test_vision_learning_rate_trains_the_vision_tower_at_its_own_rate(mini_data, tiny_model, tmp_path):
    """vision_learning_rate puts patch embedding, ViT blocks and merger in optimizer groups of their own: at 1e-9
    against 1e-2 for the rest, three Adam steps leave the vision tower where it was and move the language model."""
    from transformers import AutoModelForImageTextToText

    from preferthinker.train.sft import is_vision_parameter, run

    over = {"trainer.max_steps": 3, "trainer.save_strategy": "no", "trainer.learning_rate": 1e-2, "trainer.warmup_steps": 0,
            "trainer.lr_scheduler_type": "constant", "vision_learning_rate": 1e-9}
    run(compose("sft", sft_overrides(mini_data, tiny_model, tmp_path / "run", **over)))
    trained = dict(AutoModelForImageTextToText.from_pretrained(tmp_path / "run" / "final").named_parameters())
    base = dict(AutoModelForImageTextToText.from_pretrained(tiny_model).named_parameters())
    shift = {n: (trained[n] - base[n]).abs().max().item() for n in base}
    vision = [n for n in shift if is_vision_parameter(n)]
    assert len(vision) > 10 and {n.split(".visual.")[-1].split(".")[0] for n in vision} >= {"patch_embed", "blocks", "merger"}
    assert max(shift[n] for n in vision) < 1e-7
    assert max(shift[n] for n in shift if n not in vision) > 1e-3
    with pytest.raises(ConfigError, match="vision_learning_rate"):
        run(compose("sft", sft_overrides(mini_data, tiny_model, tmp_path / "bad", vision_learning_rate=-1)))
    with pytest.raises(ConfigError, match="vision_learning_rate"):
        run(compose("sft", sft_overrides(mini_data, tiny_model, tmp_path / "bad2", vision_learning_rate=1e-3, **{"model.freeze_vision": True})))


def test_alignment_rows_can_name_chosen_elements_only(mini_data):
    """data.align_elements=[Detail]: each single-image row asks for the Detail alone and its target is that image's
    Detail term; the default rows name all five terms; an unknown element is refused."""
    from preferthinker.data.loading import ALIGN_PROMPT, PromptSpec, build_alignment_examples
    from preferthinker.data.schema import load_train_jsonl
    from preferthinker.profile import ELEMENTS

    recs = load_train_jsonl(mini_data / "train" / "sft.jsonl")[:3]
    spec = PromptSpec(style="compact", system="compact", min_pixels=3136, max_pixels=3136)
    root = mini_data / "train" / "images"
    five = build_alignment_examples(recs, root, spec, per_record=2, seed=0)
    one = build_alignment_examples(recs, root, spec, per_record=2, seed=0, elements=["Detail"])
    assert len(one) == len(five) == 6
    for a, b, rec in zip(five, one, [r for r in recs for _ in range(2)], strict=True):
        assert a["prompt"][-1]["content"][1]["text"] == ALIGN_PROMPT
        assert b["prompt"][-1]["content"][1]["text"] == "Describe the Detail of this image."
        truth = a["completion"][0]["content"][0]["text"].removeprefix("This image shows: ").removesuffix(".").split(", ")
        assert len(truth) == len(ELEMENTS)
        assert b["completion"][0]["content"][0]["text"] == f"This image shows: {truth[ELEMENTS.index('Detail')]}."
        assert truth[ELEMENTS.index("Detail")] in {p["Detail"] for p in (rec.extra["true_profile_a"], rec.extra["true_profile_b"],
                                                                      *rec.extra["reference_profiles"]["preferred"],
                                                                      *rec.extra["reference_profiles"]["non_preferred"])}
    with pytest.raises(ValueError, match="Brushwork"):
        build_alignment_examples(recs, root, spec, elements=["Brushwork"])


def test_check_rows_with_profile_context(mini_data):
    """data.check_context=profile: a check row's prompt holds the record's two profile blocks (as its response
    writes them) and the section's own heading, and its completion is the same section as the plain row's, so
    the note's liked/disliked terms are a copy of what the prompt shows; the default rows stay the instruction alone."""
    from preferthinker.data.loading import CHECK_PROMPT, PromptSpec, build_check_examples
    from preferthinker.data.schema import load_train_jsonl

    recs = load_train_jsonl(mini_data / "train" / "sft.jsonl")[:4]
    spec = PromptSpec(style="compact", system="compact")
    plain = build_check_examples(recs, spec, per_record=2, seed=0)
    ctx = build_check_examples(recs, spec, per_record=2, seed=0, context="profile")
    assert len(plain) == len(ctx) == 4  # one noted section (Color) per mini response
    for a, b, rec in zip(plain, ctx, recs, strict=True):
        assert a["completion"] == b["completion"] and a["prompt"][0] == b["prompt"][0]  # same section, same system message
        assert a["prompt"][-1]["content"][0]["text"] == CHECK_PROMPT
        text = b["prompt"][-1]["content"][0]["text"]
        assert text == f"{CHECK_PROMPT}\n{rec.response.split('<think>')[0].strip()}\n2. Color:"
        body = b["completion"][0]["content"][0]["text"]
        liked = rec.prefer_attributes["Color"]
        assert f'"Color": "{liked}"' in text and f"liked {liked} " in body  # the copied term is in the prompt
    uniform = build_check_examples(recs, spec, per_record=3, seed=0, candidates="uniform", context="profile")
    assert len(uniform) == 12
    for row in uniform:  # the drawn section's heading names the element whose liked term the note copies
        text, body = row["prompt"][-1]["content"][0]["text"], row["completion"][0]["content"][0]["text"]
        assert text.rsplit("\n", 1)[-1] in {"1. Artistic style:", "2. Color:", "3. Artistic Medium:", "4. Saturation:", "5. Detail:"}
    with pytest.raises(ValueError, match="context"):
        build_check_examples(recs, spec, context="sections")


def _sft_cmd(mini_data, tiny_model, run_dir, *extra, launcher=None):
    over = sft_overrides(mini_data, tiny_model, run_dir, **{"trainer.max_steps": 6, "trainer.save_steps": 2, "trainer.save_total_limit": 5})
    return (launcher or [sys.executable]) + [str(REPO / "scripts" / "train_sft.py"), *over, *extra]


@pytest.mark.slow
def test_alignment_stage_and_curriculum(mini_data, tiny_model, tmp_path):
    """data.align_schedule=only trains on single-image rows alone (the pipeline's vision-alignment stage) or on
    text-only check rows alone (its check drill); first puts every alignment row before the CoT rows; mixed batches
    hold CoT, alignment and check rows side by side; only without auxiliary rows is a config error."""
    from preferthinker.train.sft import run

    only = run(compose("sft", sft_overrides(mini_data, tiny_model, tmp_path / "only", **{
        "data.align_per_record": 2, "data.align_schedule": "only", "trainer.max_steps": 2, "trainer.save_strategy": "no"})))
    assert only["alignment_rows"] == 2 * 24 and only["train_samples"] == 2 * 24 and only["align_schedule"] == "only"
    first = run(compose("sft", sft_overrides(mini_data, tiny_model, tmp_path / "first", **{
        "data.align_per_record": 2, "data.align_schedule": "first", "trainer.max_steps": 2, "trainer.save_strategy": "no"})))
    assert first["train_samples"] == 24 + 2 * 24 and first["align_schedule"] == "first"
    drill = run(compose("sft", sft_overrides(mini_data, tiny_model, tmp_path / "drill", **{
        "data.check_per_record": 2, "data.align_schedule": "only", "trainer.max_steps": 2, "trainer.save_strategy": "no"})))
    assert drill["check_rows"] == drill["train_samples"] == 24 and drill["alignment_rows"] == 0  # one noted section per mini response
    uniform = run(compose("sft", sft_overrides(mini_data, tiny_model, tmp_path / "uniform", **{
        "data.check_per_record": 2, "data.check_candidates": "uniform", "data.align_schedule": "only", "trainer.max_steps": 1,
        "trainer.save_strategy": "no"})))
    assert uniform["check_rows"] == 2 * 24
    context = run(compose("sft", sft_overrides(mini_data, tiny_model, tmp_path / "context", **{
        "data.check_per_record": 1, "data.check_context": "profile", "data.align_schedule": "only", "trainer.max_steps": 1,
        "trainer.save_strategy": "no"})))
    assert context["check_rows"] == context["train_samples"] == 24
    # text-only check rows, single-image rows and 12-image CoT rows in the same batches
    mixed = run(compose("sft", sft_overrides(mini_data, tiny_model, tmp_path / "mixed", **{
        "data.check_per_record": 1, "data.align_per_record": 1, "trainer.per_device_train_batch_size": 12, "trainer.max_steps": 2,
        "trainer.save_strategy": "no"})))
    assert mixed["train_samples"] == 3 * 24 and mixed["check_rows"] == 24 and mixed["alignment_rows"] == 24
    read = run(compose("sft", sft_overrides(mini_data, tiny_model, tmp_path / "read", **{
        "data.read_per_record": 2, "trainer.per_device_train_batch_size": 6, "trainer.max_steps": 2, "trainer.save_strategy": "no"})))
    assert read["read_rows"] == 2 * 24 and read["train_samples"] == 24 + 2 * 24
    totals = run(compose("sft", sft_overrides(mini_data, tiny_model, tmp_path / "totals", **{
        "data.total_rows": True, "data.align_schedule": "only", "trainer.max_steps": 1, "trainer.save_strategy": "no"})))
    assert totals["total_rows"] == totals["train_samples"] == 24 and totals["alignment_rows"] == 0
    with pytest.raises(ConfigError, match="data.read_per_record"):
        run(compose("sft", sft_overrides(mini_data, tiny_model, tmp_path / "bad5", **{"data.read_per_record": 3})))
    with pytest.raises(ConfigError, match="data.align_per_record"):
        run(compose("sft", sft_overrides(mini_data, tiny_model, tmp_path / "bad", **{"data.align_per_record": 0, "data.align_schedule": "only"})))
    with pytest.raises(ConfigError, match="data.check_per_record"):
        run(compose("sft", sft_overrides(mini_data, tiny_model, tmp_path / "bad3", **{"data.check_per_record": -1})))
    with pytest.raises(ConfigError, match="data.check_candidates"):
        run(compose("sft", sft_overrides(mini_data, tiny_model, tmp_path / "bad4", **{"data.check_candidates": "random"})))
    with pytest.raises(ConfigError, match="data.check_context"):
        run(compose("sft", sft_overrides(mini_data, tiny_model, tmp_path / "bad6", **{"data.check_context": "notes"})))
    with pytest.raises(ConfigError, match="data.align_elements"):
        run(compose("sft", sft_overrides(mini_data, tiny_model, tmp_path / "bad", **{"data.align_elements": "[Brushwork]"})))
    with pytest.raises(ConfigError, match="data.align_schedule"):
        run(compose("sft", sft_overrides(mini_data, tiny_model, tmp_path / "bad2", **{"data.align_schedule": "later"})))


@pytest.mark.slow
def test_resume_after_kill_continues_with_same_data_order(mini_data, tiny_model, tmp_path):
    from safetensors.torch import load_file

    env = dict(os.environ)
    ref = subprocess.run(_sft_cmd(mini_data, tiny_model, tmp_path / "ref"), env=env, capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr[-2000:]
    killed = subprocess.run(_sft_cmd(mini_data, tiny_model, tmp_path / "run"), env={**env, "PT_FAULT_AT_STEP": "5"}, capture_output=True, text=True)
    assert killed.returncode == -9  # SIGKILL mid-run: after checkpoint-4, before checkpoint-6
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-4").is_dir() and not (tmp_path / "run" / "final").exists()
    resumed = subprocess.run(_sft_cmd(mini_data, tiny_model, tmp_path / "run"), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["resumed_from"].endswith("checkpoint-4") and res["global_step"] == 6
    a, b = load_file(tmp_path / "ref" / "final" / "model.safetensors"), load_file(tmp_path / "run" / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_deepspeed_two_processes_train_one_model(mini_data, tiny_model, tmp_path, stage):
    """torchrun + DeepSpeed (gloo on CPU): the process group forms with 2 ranks and both end with
    bit-identical parameters."""
    run_dir = tmp_path / stage
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(29500 + (stage == "zero3"))]
    cmd = _sft_cmd(mini_data, tiny_model, run_dir, f"deepspeed={stage}", "trainer.max_steps=2", "trainer.per_device_train_batch_size=2", launcher=launcher)
    out = subprocess.run(cmd, env={**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads((run_dir / "results.json").read_text())
    dist = res["distributed"]
    assert dist["world_size"] == 2 and dist["backend"] == "gloo" and dist["ranks_agree"], dist
    assert res["deepspeed_stage"] == int(stage[-1]) and res["global_step"] == 2
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(run_dir / "final")
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in AutoModelForImageTextToText.from_pretrained(tiny_model).parameters())


def test_total_rows_hold_the_sections_and_complete_with_the_totals(mini_data):
    """An "add up" drill row: the response's per-element sections in the prompt, the Total lines and the answer as
    the completion; a record without a Total section gives no row."""
    from preferthinker.data.loading import TOTAL_PROMPT, PromptSpec, build_total_examples
    from preferthinker.data.schema import load_train_jsonl

    recs = load_train_jsonl(mini_data / "train" / "sft.jsonl")
    rows = build_total_examples(recs, PromptSpec(style="compact", system="compact"))
    assert len(rows) == len(recs) and all(r["images"] == [] for r in rows)
    user = rows[0]["prompt"][-1]["content"][0]["text"]
    done = rows[0]["completion"][0]["content"][0]["text"]
    assert user.startswith(TOTAL_PROMPT) and "Image A(" in user and "Total:" not in user and "<think>" not in user
    assert done.startswith("Total:") and "total_score=" in done and "<answer>" in done
    assert recs[0].response.endswith(done) and user.split("\n", 1)[1] in recs[0].response
    no_total = dataclasses.replace(recs[0], response="<answer>Image A</answer>")
    assert build_total_examples([no_total], PromptSpec(style="compact", system="compact")) == []


def test_speed_switches_are_checked_and_reported(mini_data, tiny_model, tmp_path, monkeypatch):
    """The SFT throughput switches: the settings a run trained with land in results.json "speed" (attention of the
    language model and of the vision tower, checkpointing, micro-batch, TRL's fused LM head); a switch that cannot
    work here is a ConfigError naming its key before any model loads; liger maps to SFTConfig.use_liger_kernel."""
    from preferthinker.train import speed as speed_mod
    from preferthinker.train.sft import run

    res = run(compose("sft", sft_overrides(mini_data, tiny_model, tmp_path / "run", **{
        "trainer.max_steps": 1, "trainer.save_strategy": "no", "trainer.gradient_checkpointing": True,
        "trainer.per_device_train_batch_size": 2})))
    assert res["speed"] == {"padding_free": False, "liger_kernel": False, "length_split": 1, "fused_lm_head": "trl", "attn_implementation": "sdpa",
                            "vision_attn_implementation": "sdpa", "gradient_checkpointing": True, "per_device_train_batch_size": 2,
                            "gradient_accumulation_steps": 1, "bf16": False}
    with pytest.raises(ConfigError, match=r"speed\.padding_free=true: TRL 1\.16's SFTTrainer refuses"):
        run(compose("sft", sft_overrides(mini_data, tiny_model, tmp_path / "bad1", **{"speed.padding_free": True})))
    monkeypatch.setattr(speed_mod, "_installed", lambda module: False)
    with pytest.raises(ConfigError, match=r"speed\.liger_kernel=true: liger-kernel is not installed"):
        run(compose("sft", sft_overrides(mini_data, tiny_model, tmp_path / "bad2", **{"speed.liger_kernel": True})))
    with pytest.raises(ConfigError, match=r"model\.attn_implementation=flash_attention_2: the flash_attn package"):
        run(compose("sft", sft_overrides(mini_data, tiny_model, tmp_path / "bad3", **{"model.attn_implementation": "flash_attention_2"})))
    with pytest.raises(ConfigError, match=r"model\.attn_implementation"):
        run(compose("sft", sft_overrides(mini_data, tiny_model, tmp_path / "bad4", **{"model.attn_implementation": "fast"})))
    monkeypatch.setattr(speed_mod, "_installed", lambda module: True)
    cfg = compose("sft", sft_overrides(mini_data, tiny_model, tmp_path / "x", **{"speed.liger_kernel": True,
                                                                                  "model.attn_implementation": "flash_attention_2"}))
    assert speed_mod.speed_settings(cfg, cuda=True)["sft_args"] == {"use_liger_kernel": True}
    with pytest.raises(ConfigError, match="CUDA only"):
        speed_mod.speed_settings(cfg, cuda=False)


def test_step_sorted_sampler_keeps_each_steps_rows_and_sorts_them_by_length():
    """Each optimizer step holds the rows of a seeded random draw (every row once per epoch), sorted longest first so
    the step's micro-batches hold rows of like length; the order is fixed by (seed, epoch) for a resumed run."""
    from preferthinker.train.speed import StepSortedSampler

    lengths = [440 if i % 2 else 30 for i in range(203)]
    s = StepSortedSampler(lengths, rows_per_step=8, seed=3)
    steps = s.steps()
    assert sorted(i for st in steps for i in st) == list(range(203)) and list(iter(s)) == [i for st in steps for i in st]
    assert [len(st) for st in steps] == [8] * 25 + [3]
    assert all([lengths[i] for i in st] == sorted((lengths[i] for i in st), reverse=True) for st in steps)
    assert any(len({lengths[i] for i in st}) > 1 for st in steps)   # steps stay mixed: only the micro-batches are sorted
    again = StepSortedSampler(lengths, rows_per_step=8, seed=3)
    assert again.steps() == steps
    s.set_epoch(1)
    again.set_epoch(1)
    assert s.steps() == again.steps() != steps


def test_row_length_counts_text_and_image_tokens():
    from preferthinker.train.speed import row_length

    row = {"prompt": [{"role": "system", "content": "x" * 40},
                      {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "y" * 20}]}],
           "completion": [{"role": "assistant", "content": [{"type": "text", "text": "z" * 400}]}]}
    assert row_length(row, tokens_per_image=4) == (40 + 20 + 400) // 4 + 2 * 4


def test_length_split_gives_the_unsplit_update_with_less_padding(mini_data, tiny_model, tmp_path, monkeypatch):
    """speed.length_split: a step of 4 rows trained as 2 micro-batches of 2 or 4 of 1 (the same sampled rows, sorted by
    length) reaches the same weights as the unsplit batch of those 4 rows (the stock trainer with the split's sampler
    swapped in): the loss is the token mean over the whole step, not a mean of micro-batch means. Reported in
    results.json; a value that does not divide the batch is a ConfigError."""
    from safetensors.torch import load_file

    import preferthinker.train.sft as sft_module
    from preferthinker.train.speed import StepSortedSampler
    from preferthinker.train.sft import run

    stock = sft_module.with_vision_learning_rate

    def same_rows(cls, lr):  # the unsplit trainer (stock loss handling), fed the steps a split run draws (seed 42)
        base = stock(cls, lr)

        class SameRows(base):
            def _get_train_sampler(self, train_dataset=None):
                return StepSortedSampler([0] * len(self.train_dataset), 4, seed=42)
        return SameRows

    monkeypatch.setattr(sft_module, "with_vision_learning_rate", same_rows)
    run(compose("sft", sft_overrides(mini_data, tiny_model, tmp_path / "s1", **{
        "trainer.max_steps": 2, "trainer.save_strategy": "no", "trainer.per_device_train_batch_size": 4, "data.align_per_record": 1})))
    monkeypatch.undo()
    finals = [load_file(tmp_path / "s1" / "final" / "model.safetensors")]
    for split in (2, 4):
        res = run(compose("sft", sft_overrides(mini_data, tiny_model, tmp_path / f"s{split}", **{
            "trainer.max_steps": 2, "trainer.save_strategy": "no", "trainer.per_device_train_batch_size": 4,
            "data.align_per_record": 1, "speed.length_split": split})))
        assert res["speed"]["length_split"] == split and res["global_step"] == 2
        assert res["speed"]["per_device_train_batch_size"] == 4 // split and res["speed"]["gradient_accumulation_steps"] == split
        finals.append(load_file(tmp_path / f"s{split}" / "final" / "model.safetensors"))
    base = load_file(tiny_model / "model.safetensors")
    assert any(not torch.equal(finals[0][k], base[k]) for k in base)
    for other in finals[1:]:
        for k in finals[0]:
            torch.testing.assert_close(finals[0][k], other[k], rtol=0, atol=2e-4, msg=k)  # Adam steps of lr=2e-3: float order only
    for bad in (3, 0, "yes"):
        with pytest.raises(ConfigError, match=r"speed\.length_split"):
            run(compose("sft", sft_overrides(mini_data, tiny_model, tmp_path / "bad", **{
                "trainer.per_device_train_batch_size": 4, "speed.length_split": bad})))
