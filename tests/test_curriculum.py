"""train_sft.py runs its curriculum (configs/curriculum/): the default tiny56 phases in order inside one run directory,
each from the previous phase's final/, resumable phase by phase; <run_dir>/final is what GRPO, eval and the assessor
find. Malformed phases and a tiny-only curriculum with real weights are refused before anything loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from preferthinker.runtime import ConfigError
from tests.conftest import compose, sft_overrides


def test_default_sft_config_runs_the_tiny56_curriculum():
    from preferthinker.train.curriculum import phases_of

    cfg = compose("sft", [])
    phases = phases_of(cfg)
    assert cfg.curriculum.name == "tiny56" and [p.name for p in phases] == ["vit", "align", "checks", "cot"]
    assert [p.kind for p in phases] == ["vision_heads", "sft", "sft", "sft"] and phases[0].settings == {}
    assert cfg.vision_heads.first_elements == ["Art Styles", "Detail"] and cfg.vision_heads.steps == 1500
    assert phases[1].settings == {"model.freeze_vision": True, "data.align_schedule": "only", "data.val_samples": 0,
                                  "trainer.per_device_train_batch_size": 32, "trainer.num_train_epochs": 2}
    assert phases[2].settings["data.check_per_record"] == 4
    assert phases[3].settings == {"model.freeze_vision": True, "data.align_per_record": 0, "data.total_rows": True,
                                  "trainer.num_train_epochs": 3}
    # the ViT the vit phase trained stays frozen through every later phase
    assert all(p.settings["model.freeze_vision"] is True for p in phases[1:])
    assert phases_of(compose("sft", ["curriculum=none"])) == []
    assert [p.name for p in phases_of(compose("sft", ["curriculum=tiny112"]))] == ["detail", "styles_detail", "align", "checks",
                                                                                  "cot", "cot2"]
    assert phases_of(compose("sft", ["curriculum=tiny112"]))[1].settings["data.align_elements"] == ["Art Styles", "Detail"]


@pytest.mark.parametrize("override, message", [
    ("curriculum.phases=[{name:a,set:{data:{no_such_key:1}}}]", "sets data.no_such_key, which the SFT config does not have"),
    ("curriculum.phases=[{name:a},{name:a}]", "curriculum.phases[1].name='a'"),
    ("curriculum.phases=[{name:'bad name'}]", "curriculum.phases[0].name='bad name'"),
    ("curriculum.phases=[{name:a,set:{model:{path:x}}}]", "the curriculum chooses it"),
    ("curriculum.phases=[{name:a,set:3}]", "curriculum.phases[0] (a).set=3"),
    ("curriculum.phases=7", "curriculum.phases=7"),
])
def test_malformed_phases_are_refused_naming_them(override, message, tmp_path):
    from preferthinker.train.sft import run

    with pytest.raises(ConfigError) as err:
        run(compose("sft", [f"run_dir={tmp_path / 'run'}", override]))
    assert message in str(err.value)
    assert not (tmp_path / "run").exists()


def test_a_setting_a_later_phase_contradicts_fails_before_the_first_phase_trains(tmp_path):
    """tiny56 freezes the tower after its vit phase: vision_learning_rate on the command line is refused at once, naming
    the phase and its keys, not after the vit phase has trained (and no run folder is left behind)."""
    from preferthinker.train.sft import run

    with pytest.raises(ConfigError) as err:
        run(compose("sft", [f"run_dir={tmp_path / 'run'}", "vision_learning_rate=1e-4"]))
    assert "curriculum tiny56 phase 2 (align), which sets model.freeze_vision" in str(err.value)
    assert "model.freeze_vision=true leaves the vision tower untrained" in str(err.value)
    assert not (tmp_path / "run").exists()


def test_tiny_curriculum_with_real_weights_and_a_resume_path_are_refused(tmp_path):
    from preferthinker.train.sft import run

    with pytest.raises(ConfigError, match="tuned for the tiny embedded default.*curriculum=none"):
        run(compose("sft", ["model=qwen2_5_vl_3b", "model.path=/ckpt/qwen", f"run_dir={tmp_path / 'a'}"]))
    with pytest.raises(ConfigError, match="resumes phase by phase"):
        run(compose("sft", [f"run_dir={tmp_path / 'b'}", "resume=/some/checkpoint-4"]))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    # the official SFT preset trains one phase
    assert compose("sft", ["+experiment=official_sft_7b", "model.path=/ckpt/qwen", "deepspeed=none"]).curriculum.name == "none"


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.mark.slow
def test_curriculum_phases_chain_resume_and_are_found_as_the_sft_checkpoint(mini_data, tiny_model, tmp_path, monkeypatch):
    import torch

    from preferthinker.runtime import resolve_checkpoint
    from preferthinker.train.sft import run

    run_dir = tmp_path / "outputs" / "sft" / "cur"
    over = sft_overrides(mini_data, tiny_model, run_dir, **{"curriculum": "tiny56", "trainer.max_steps": 2, "trainer.save_strategy": "no",
                                                                    "vision_heads.steps": 2, "vision_heads.first_steps": 1,
                                                                    "vision_heads.batch_size": 4, "vision_heads.eval_images": 8,
                                                                    "data.align_per_record": 4,  # the synthetic default
                                                                    "data.refs_per_side": "[1,2,3,4,5]"})  # the synthetic default
    res = run(compose("sft", over))
    phases = [run_dir / "phases" / name for name in ("1-vit", "2-align", "3-checks", "4-cot")]
    starts = [str(tiny_model), str(phases[0] / "final"), str(phases[1] / "final"), str(phases[2] / "final")]
    for phase, start in zip(phases, starts, strict=True):
        cfg = yaml.safe_load((phase / "sft_config.yaml").read_text())
        assert cfg["model"]["path"] == start and cfg["curriculum"]["phases"] == []
        assert json.loads((phase / "results.json").read_text())["global_step"] == 2
    vit, align, checks, cot = (json.loads((p / "results.json").read_text()) for p in phases)
    assert vit["kind"] == "vision_heads" and set(vit["heldout_accuracy"]) == set(vit["chance"])
    assert yaml.safe_load((phases[3] / "sft_config.yaml").read_text())["data"]["refs_per_side"] == [1, 2, 3, 4, 5]
    assert align["align_schedule"] == "only" and align["alignment_rows"] == align["train_samples"] > 0
    assert checks["check_rows"] > 0 and checks["check_rows"] + checks["alignment_rows"] == checks["train_samples"]
    assert cot["align_schedule"] == "mixed" and cot["alignment_rows"] == 0 and cot["train_samples"] > cot["total_rows"] > 0
    assert yaml.safe_load((phases[1] / "sft_config.yaml").read_text())["trainer"]["per_device_train_batch_size"] == 32
    # the vision tower leaves the vit phase and is not trained again (model.freeze_vision in align, checks, cot); the LM is
    w_vit, w_cot = _weights(phases[0] / "final"), _weights(phases[3] / "final")
    visual = [k for k in w_vit if ".visual." in k or k.startswith("visual.")]
    assert visual and all(torch.equal(w_vit[k], w_cot[k]) for k in visual)
    assert any(not torch.equal(w_vit[k], w_cot[k]) for k in w_vit if k not in visual)
    # <run_dir>/final is the last phase's; results.json = the last phase's + the curriculum table
    final = run_dir / "final"
    assert final.is_symlink() and final.resolve() == (phases[3] / "final").resolve() and (final / "config.json").is_file()
    top = json.loads((run_dir / "results.json").read_text())
    assert top["final_model"] == res["final_model"] == str(final) and top["train_loss"] == cot["train_loss"]
    assert [r["phase"] for r in top["curriculum"]] == ["vit", "align", "checks", "cot"] and not any(r["skipped"] for r in top["curriculum"])
    assert (run_dir / "curriculum.md").read_text().startswith("| phase | minutes |")
    monkeypatch.chdir(tmp_path)  # train_grpo / eval / the assessor resolve `latest_sft` to it
    assert Path(resolve_checkpoint("latest_sft")).resolve() == final.resolve()
    # interrupted during the last phase: a re-run skips the finished phases and retrains the last to the same weights
    before = _weights(phases[3] / "final")
    stamp = (phases[0] / "results.json").stat().st_mtime_ns
    for f in sorted(phases[3].rglob("*"), reverse=True):
        f.unlink() if f.is_file() or f.is_symlink() else f.rmdir()
    again = run(compose("sft", over))
    assert [r["skipped"] for r in again["curriculum"]] == [True, True, True, False]
    assert (phases[0] / "results.json").stat().st_mtime_ns == stamp
    after = _weights(phases[3] / "final")
    assert before.keys() == after.keys() and all((before[k] == after[k]).all() for k in before)


@pytest.mark.parametrize("override, message", [
    ("vision_heads.steps=0", "vision_heads.steps"),
    ("vision_heads.learning_rate=-1", "vision_heads.learning_rate"),
    ("vision_heads.batch_size=2.5", "vision_heads.batch_size"),
    ("vision_heads.first_steps=1600", "vision_heads.first_steps"),  # more than steps (1500)
    ("vision_heads.elements=[Texture]", "vision_heads.elements"),
    ("vision_heads.first_elements=[Detail]", "vision_heads.first_elements"),  # not among elements=[Color]
])
def test_vision_heads_settings_are_checked_naming_the_key(override, message):
    from preferthinker.train.vision_heads import settings

    cfg = compose("sft", ["vision_heads.elements=[Color]", override] if "first_elements" in override else [override])
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        settings(cfg)
    assert settings(compose("sft", []))["elements"] == ["Art Styles", "Color", "Artistic Medium", "Saturation", "Detail"]


def test_phase_kind_is_parsed_and_an_unknown_kind_is_refused(tmp_path):
    from preferthinker.train.curriculum import phases_of
    from preferthinker.train.sft import run

    phases = phases_of(compose("sft", ["curriculum.phases=[{name:v,kind:vision_heads,set:{vision_heads:{steps:5}}},{name:a}]"]))
    assert [(p.name, p.kind, p.settings) for p in phases] == [("v", "vision_heads", {"vision_heads.steps": 5}), ("a", "sft", {})]
    with pytest.raises(ConfigError, match=r"curriculum.phases\[0\] \(v\).kind='vit'"):
        run(compose("sft", [f"run_dir={tmp_path / 'run'}", "curriculum.phases=[{name:v,kind:vit}]"]))
    assert not (tmp_path / "run").exists()


def test_vision_heads_phase_trains_the_tower_alone_and_the_next_phase_starts_from_it(mini_data, tiny_model, tmp_path):
    """A vision_heads phase then an SFT phase: the first changes only model.visual.* (the LM is bit-identical to the start), reports
    held-out accuracy per element next to chance, and its final/ is a loadable checkpoint the next phase starts from."""
    from preferthinker.train.sft import run

    run_dir = tmp_path / "run"
    phases = ("curriculum.phases=[{name:see,kind:vision_heads,set:{vision_heads:{steps:6,batch_size:4,eval_images:8,"
              "first_elements:[Detail],first_steps:3}}},{name:talk,set:{trainer:{max_steps:1}}}]")
    res = run(compose("sft", sft_overrides(mini_data, tiny_model, run_dir, **{"curriculum": "tiny56", "trainer.save_strategy": "no"}) + [phases]))
    see, talk = run_dir / "phases" / "1-see", run_dir / "phases" / "2-talk"
    start, after = _weights(tiny_model), _weights(see / "final")
    assert start.keys() == after.keys()
    changed = {k for k in start if not (start[k] == after[k]).all()}
    assert changed and all(".visual." in f".{k}" for k in changed)
    assert any("merger" in k for k in changed) and any("patch_embed" in k for k in changed)
    out = json.loads((see / "results.json").read_text())
    assert out["kind"] == "vision_heads" and out["global_step"] == 6 and out["heldout_images"] == 8
    assert set(out["heldout_accuracy"]) == set(out["chance"]) == {"Art Styles", "Color", "Artistic Medium", "Saturation", "Detail"}
    assert all(0.0 <= v <= 1.0 for v in out["heldout_accuracy"].values())
    assert json.loads((see / "final" / "preferthinker.json").read_text())["prompt"]["style"] == "compact"
    assert yaml.safe_load((talk / "sft_config.yaml").read_text())["model"]["path"] == str(see / "final")
    assert [r["phase"] for r in res["curriculum"]] == ["see", "talk"] and res["curriculum"][0]["global_step"] == 6
    assert (run_dir / "final").resolve() == (talk / "final").resolve()


def test_vision_heads_without_per_image_truth_says_what_it_needs(mini_data, tiny_model, tmp_path):
    from preferthinker.train.vision_heads import run_phase

    cfg = compose("sft", sft_overrides(mini_data, tiny_model, tmp_path / "run", **{"vision_heads.batch_size": 4096}))
    with pytest.raises(ConfigError, match="training images with a known profile.*vision_heads.batch_size=4096"):
        run_phase(cfg)


def test_vision_heads_as_the_first_phase_builds_the_tiny_model_on_a_fresh_machine(mini_data, tmp_path):
    """On a fresh clone no backbone exists yet: the vit phase (tiny56's first) builds it at model.path, as an SFT phase would."""
    from preferthinker.train.vision_heads import run_phase

    backbone = tmp_path / "models" / "tiny"
    over = sft_overrides(mini_data, backbone, tmp_path / "run", **{"vision_heads.steps": 2, "vision_heads.first_steps": 0,
                                                                    "vision_heads.batch_size": 4, "vision_heads.eval_images": 0})
    out = run_phase(compose("sft", over))
    assert (backbone / "config.json").is_file() and (Path(out["final_model"]) / "config.json").is_file()
    assert out["heldout_images"] == 0 and out["heldout_accuracy"] == {}
