"""The official presets (configs/experiment/official_*.yaml) compose with the released hyper-parameters, their
trainer blocks are valid TRL configs, and the prompt group's three members say what they are."""

from __future__ import annotations

import pytest

from tests.conftest import compose


def test_official_grpo_preset_has_the_released_hyper_parameters(tmp_path):
    from trl import GRPOConfig

    from preferthinker.train.grpo import validate
    from preferthinker.train.common import make_args, trainer_kwargs

    cfg = compose("grpo", ["+experiment=official_grpo_7b", "model.path=/ckpt/sft", "deepspeed=none", "logger=none"])
    t = cfg.trainer
    assert (t.num_generations, t.beta, t.temperature, t.epsilon, t.epsilon_high, t.num_train_epochs, t.max_completion_length) == \
        (2, 0.04, 1.0, 0.2, 0.28, 2, 2048)
    assert t.max_steps == -1 and t.learning_rate == 1e-6 and t.loss_type == "dapo"
    assert (cfg.prompt.style, cfg.prompt.system, cfg.prompt.vision_ids) == ("official", "official", False)
    assert list(cfg.reward.names) == ["accuracy", "format"] and cfg.max_length is None
    assert cfg.model.max_pixels == 12845056 and compose("grpo", ["+experiment=official_grpo_7b", "model.path=x"]).deepspeed.config.zero_optimization.stage == 3
    validate(cfg)
    kw = trainer_kwargs(cfg, tmp_path)
    kw["reward_weights"] = [1.0, 0.3]
    args = make_args(GRPOConfig, kw)
    assert args.num_generations == 2 and args.beta == 0.04 and args.epsilon_high == 0.28


def test_official_sft_preset_is_a_valid_sft_config(tmp_path):
    from trl import SFTConfig

    from preferthinker.train.common import make_args, trainer_kwargs

    cfg = compose("sft", ["+experiment=official_sft_7b", "model.path=/ckpt/qwen", "deepspeed=none", "logger=none"])
    assert (cfg.prompt.style, cfg.prompt.system) == ("official", "official") and cfg.max_length is None
    assert make_args(SFTConfig, trainer_kwargs(cfg, tmp_path)).learning_rate == 1e-5


def test_official_eval_preset_is_the_official_protocol():
    cfg = compose("eval", ["+experiment=official_eval_7b", "model.path=/ckpt/PreferThinker_model", "bench.root=/data/bench"])
    assert (cfg.prompt.style, cfg.prompt.system, cfg.prompt.max_refs, cfg.prompt.vision_ids) == ("official_eval", "official_eval", 5, True)
    g = cfg.generation
    assert (g.max_new_tokens, g.repetition_penalty) == (4096, 1.15) and list(cfg.systems) == ["model"] and cfg.bench.swap is False
    assert list(cfg.bench.subsets) == ["SP_ID", "SP_OD", "MP_ID", "MP_OD", "PICKAPIC"]


def test_required_official_paths_are_named_when_missing():
    from omegaconf.errors import MissingMandatoryValue

    cfg = compose("sft", ["data=official"])
    with pytest.raises(MissingMandatoryValue, match="train_sft"):
        _ = cfg.data.train_sft


@pytest.mark.parametrize("name, style, vision_ids", [("compact", "compact", False), ("official", "official", False),
                                                     ("official_eval", "official_eval", True)])
def test_prompt_group(name, style, vision_ids):
    for entry in ("sft", "grpo", "eval"):
        p = compose(entry, [f"prompt={name}"]).prompt
        assert (p.style, p.system, p.vision_ids) == (style, style, vision_ids)
    assert compose("eval", ["prompt.style=official", "prompt.system=official"]).prompt.style == "official"  # the old keys still work
