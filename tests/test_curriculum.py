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
    assert cfg.curriculum.name == "tiny56" and [p.name for p in phases] == ["align", "checks", "cot_full", "cot"]
    assert phases[0].settings == {"data.align_schedule": "only", "data.val_samples": 0,
                                  "trainer.per_device_train_batch_size": 32, "trainer.num_train_epochs": 2}
    assert phases[1].settings["data.check_per_record"] == 4 and phases[2].settings == {"data.align_per_record": 1,
                                                                                       "data.refs_per_side": None, "trainer.num_train_epochs": 2}
    assert phases[3].settings == {"data.align_per_record": 1, "trainer.num_train_epochs": 1}
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
    from preferthinker.runtime import resolve_checkpoint
    from preferthinker.train.sft import run

    run_dir = tmp_path / "outputs" / "sft" / "cur"
    over = sft_overrides(mini_data, tiny_model, run_dir, **{"curriculum": "tiny56", "trainer.max_steps": 2, "trainer.save_strategy": "no",
                                                                    "data.align_per_record": 4,  # the synthetic default
                                                                    "data.refs_per_side": "[1,2,3,4,5]"})  # the synthetic default
    res = run(compose("sft", over))
    phases = [run_dir / "phases" / name for name in ("1-align", "2-checks", "3-cot_full", "4-cot")]
    starts = [str(tiny_model), str(phases[0] / "final"), str(phases[1] / "final"), str(phases[2] / "final")]
    for phase, start in zip(phases, starts, strict=True):
        cfg = yaml.safe_load((phase / "sft_config.yaml").read_text())
        assert cfg["model"]["path"] == start and cfg["curriculum"]["phases"] == []
        assert json.loads((phase / "results.json").read_text())["global_step"] == 2
    align, checks, cot_full, cot = (json.loads((p / "results.json").read_text()) for p in phases)
    assert yaml.safe_load((phases[2] / "sft_config.yaml").read_text())["data"]["refs_per_side"] is None
    assert yaml.safe_load((phases[3] / "sft_config.yaml").read_text())["data"]["refs_per_side"] == [1, 2, 3, 4, 5]
    assert align["align_schedule"] == "only" and align["alignment_rows"] == align["train_samples"] > 0
    assert checks["check_rows"] > 0 and checks["check_rows"] + checks["alignment_rows"] == checks["train_samples"]
    assert cot["align_schedule"] == "mixed" and cot["train_samples"] > cot["alignment_rows"] > 0
    assert yaml.safe_load((phases[0] / "sft_config.yaml").read_text())["trainer"]["per_device_train_batch_size"] == 32
    # <run_dir>/final is the last phase's; results.json = the last phase's + the curriculum table
    final = run_dir / "final"
    assert final.is_symlink() and final.resolve() == (phases[3] / "final").resolve() and (final / "config.json").is_file()
    top = json.loads((run_dir / "results.json").read_text())
    assert top["final_model"] == res["final_model"] == str(final) and top["train_loss"] == cot["train_loss"]
    assert [r["phase"] for r in top["curriculum"]] == ["align", "checks", "cot_full", "cot"] and not any(r["skipped"] for r in top["curriculum"])
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
