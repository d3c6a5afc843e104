"""The main job's runner: data -> SFT (train_sft.py running its curriculum; tests/test_curriculum.py runs the phases)
-> GRPO with and without the prediction reward, both from the curriculum's final/ -> eval -> the ablation table.

Quick tests run ``pipeline.run`` in process with each stage's command recorded; the ``slow`` ones launch the
script (and, end to end, every training stage) as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from preferthinker.runtime import ConfigError
from tests.conftest import REPO


def _pipeline(*overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "run_pipeline.py"), *overrides],
                          capture_output=True, text=True, timeout=120)


def _run_in_process(tmp_path, *overrides: str):
    """pipeline.run on the composed pipeline config, as the script calls it (without the process)."""
    from preferthinker.pipeline import run
    from tests.conftest import compose

    return run(compose("pipeline", [f"run_dir={tmp_path / 'pipe'}", f"data_dir={tmp_path / 'data'}", *overrides]))


@pytest.mark.slow
def test_pipeline_script_reports_a_bad_override_and_exits_2(tmp_path):
    out = _pipeline(f"run_dir={tmp_path / 'pipe'}", f"data_dir={tmp_path / 'data'}", "image_size=50", "stages=[sft]")
    assert out.returncode == 2
    assert "image_size" in out.stderr and "multiple of 28" in out.stderr, out.stderr[-2000:]
    assert not (tmp_path / "pipe" / "sft").exists()  # Hydra makes the run dir itself; no stage ran


@pytest.mark.parametrize("size", ["50", "0", "2048", "big"])
def test_pipeline_rejects_a_bad_image_size(size, tmp_path):
    from preferthinker.runtime import ConfigError

    with pytest.raises(ConfigError, match="image_size.*multiple of 28"):
        _run_in_process(tmp_path, f"image_size={size}", "stages=[sft]")
    assert not (tmp_path / "pipe").exists()


@pytest.mark.parametrize("overrides, message", [
    (["stages=[align_detail,sft]"], "stage 'align_detail' is now a phase of the SFT curriculum"),
    (["stages=[data,align_first,align,checks,sft,sft2]"], "stage 'align_first' is now a phase of the SFT curriculum"),
    (["stages=[sft,train]"], "unknown stage 'train'"),
    (["sft_curriculum=tiny999"], "choose one of ['none', 'tiny112', 'tiny112_plain', 'tiny56']"),
])
def test_pipeline_rejects_bad_stages_and_curricula(overrides, message, tmp_path):
    from preferthinker.runtime import ConfigError

    with pytest.raises(ConfigError) as err:
        _run_in_process(tmp_path, *overrides)
    assert message in str(err.value)
    assert not (tmp_path / "pipe").exists()


def test_pipeline_refuses_data_rendered_at_another_size(tmp_path):
    from preferthinker.runtime import ConfigError

    data = tmp_path / "data"
    data.mkdir()
    (data / "manifest.json").write_text(json.dumps({"image_size": 56}))
    with pytest.raises(ConfigError, match="rendered at 56"):
        _run_in_process(tmp_path, "image_size=112", "stages=[data,sft]")
    assert not (tmp_path / "pipe").exists()


class _Recorder:
    """Stands in for pipeline._call: records each stage's command and writes what the real script would
    leave behind (a final/ checkpoint and results.json for training, the results of the eval stage)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str]]] = []

    def __call__(self, script: str, overrides: list[str]) -> None:
        args = dict(o.split("=", 1) for o in overrides if "=" in o and not o.startswith("+"))
        args["+"] = ",".join(o for o in overrides if o.startswith("+"))
        self.calls.append((script, args))
        if script == "make_data.py":
            out = Path(args["out_dir"])
            out.mkdir(parents=True, exist_ok=True)
            (out / "manifest.json").write_text(json.dumps({"image_size": int(args.get("image_size", 56))}))
            return
        run_dir = Path(args["run_dir"])
        if script == "eval.py":
            rows = [("Random", 0.5, None), ("Base model", 0.49, 1.0), ("SFT", 0.875, 62.0), ("SFT_RL", 0.9, 63.5)]
            systems = {name: {"subsets": {"SP_ID": {"accuracy": acc, "ci95": [acc - 0.05, acc + 0.05], "pred_similarity": pred}}}
                       for name, acc, pred in rows if name != "Base model" or "base" in args.get("systems", "")}
            results = {"system": "SFT+RL+PR", "subsets": {"SP_ID": {"accuracy": 0.92, "ci95": [0.88, 0.95], "pred_similarity": 64.0}},
                       "systems": systems,
                       # stored in one order per pair of systems, as eval.py writes them; the table reads either order
                       "average_comparisons": {
                           "SFT+RL+PR - SFT": {"accuracy": {"diff": 0.045, "ci95": [0.01, 0.08]}},
                           "SFT+RL+PR - SFT_RL": {"accuracy": {"diff": 0.02, "ci95": [-0.01, 0.05]},
                                                  "pred": {"diff": 0.5, "ci95": [0.1, 0.9]}},
                           "SFT - SFT_RL": {"accuracy": {"diff": -0.025, "ci95": [-0.04, -0.01]}}}}
            (run_dir / "results.json").parent.mkdir(parents=True, exist_ok=True)
            (run_dir / "results.json").write_text(json.dumps(results))
            return
        (run_dir / "final").mkdir(parents=True, exist_ok=True)
        (run_dir / "final" / "config.json").write_text("{}")
        (run_dir / "results.json").write_text("{}")

    def starts(self) -> list[tuple[str, str]]:
        """(stage run dir relative name, the model.path it starts from) per training call."""
        return [(args["run_dir"], args.get("model.path", "")) for script, args in self.calls if script != "make_data.py"]


def test_default_pipeline_chains_every_stage_from_the_previous_one(tmp_path, monkeypatch):
    """The default config, with each stage's process recorded: the data at 56 pixels, one train_sft.py call running
    the tiny56 curriculum (train_sft.py's own default) from the tiny model, both GRPO stages from its final/, the eval comparing every trained
    stage; then the ablation table and the timing table; a re-run skips what is finished."""
    from preferthinker import pipeline

    rec = _Recorder()
    monkeypatch.setattr(pipeline, "_call", rec)
    summary = _run_in_process(tmp_path, "tiny_model=/models/tiny", "sft=['trainer.logging_steps=5']")
    pipe = tmp_path / "pipe"
    assert [script for script, _ in rec.calls] == ["make_data.py", "train_sft.py", "train_grpo.py", "train_grpo.py", "eval.py"]
    assert rec.calls[0][1]["image_size"] == "56"
    expected = [(pipe / "sft", "/models/tiny"), (pipe / "grpo_rl", pipe / "sft" / "final"), (pipe / "grpo_pr", pipe / "sft" / "final"),
                (pipe / "eval", pipe / "grpo_pr" / "final")]
    assert rec.starts() == [(str(d), str(m)) for d, m in expected]
    sft = rec.calls[1][1]
    assert sft["curriculum"] == "tiny56" and sft["trainer.logging_steps"] == "5"
    assert sft["model.min_pixels"] == sft["model.max_pixels"] == str(56 * 56) and sft["data.root"] == str(tmp_path / "data")
    grpo = {Path(a["run_dir"]).name: a["reward"] for s, a in rec.calls if s == "train_grpo.py"}
    assert grpo == {"grpo_rl": "acc_format", "grpo_pr": "paper"}
    eval_args = rec.calls[-1][1]
    assert eval_args["bench.max_samples"] == "100"   # the default eval: 100 users per split, both orders
    assert f"+extra_models.SFT={pipe / 'sft' / 'final'}" in eval_args["+"]
    assert f"+extra_models.SFT_RL={pipe / 'grpo_rl' / 'final'}" in eval_args["+"]
    # the ablation table: paper row order, SFT_RL shown as SFT+RL, accuracy [CI] and Pred per subset
    table = (pipe / "ablation.md").read_text().split("\n\n")[0].splitlines()
    assert summary["ablation_table"] == str(pipe / "ablation.md")
    assert table[0] == "| System | SP_ID | Pred | Avg. |"
    assert [line.split(" | ")[0] for line in table[2:]] == ["| Random", "| SFT", "| SFT+RL", "| SFT+RL+PR"]
    assert table[2] == "| Random | 50.0 [45.0, 55.0] | – | 50.0 |"
    assert table[4] == "| SFT+RL | 90.0 [85.0, 95.0] | 63.5 | 90.0 |"
    # the untrained Base row is not scored by default (0 by construction), and the table says so
    assert "systems" not in eval_args and "base_model" not in eval_args
    assert "Base model: not scored (eval_base=false)" in (pipe / "ablation.md").read_text()
    # what each stage adds to the four-split average, with the paired interval's verdict
    steps = (pipe / "ablation.md").read_text().split("What each stage adds")[1].splitlines()
    assert "| SFT+RL - SFT | accuracy | +2.5 | [+1.0, +4.0] | above 0 |" in steps
    assert "| SFT+RL+PR - SFT+RL | Pred | +0.5 | [+0.1, +0.9] | above 0 |" in steps
    assert "| SFT+RL+PR - SFT+RL | accuracy | +2.0 | [-1.0, +5.0] | includes 0 |" in steps
    assert "| SFT+RL+PR - SFT | accuracy | +4.5 | [+1.0, +8.0] | above 0 |" in steps
    assert set(summary["stage_seconds"]) == {"data", "sft", "grpo_rl", "grpo_pr", "eval"}
    timing = (pipe / "timing.md").read_text().splitlines()
    assert timing[0] == "| stage | minutes |" and [t.split(" | ")[0] for t in timing[2:]] == [
        "| data", "| sft", "| grpo_rl", "| grpo_pr", "| eval", "| total"]
    # resume: every stage left its results, so the same command runs nothing and keeps the first run's timings
    again = _Recorder()
    monkeypatch.setattr(pipeline, "_call", again)
    resumed = _run_in_process(tmp_path, "tiny_model=/models/tiny")
    assert again.calls == [] and resumed["stage_seconds"] == summary["stage_seconds"]


def test_tiny112_preset_sets_the_longer_chain(tmp_path, monkeypatch):
    """+pipeline_preset=tiny112: 112-pixel data in its own folder, the tiny112 curriculum, eval on all users."""
    from preferthinker import pipeline

    rec = _Recorder()
    monkeypatch.setattr(pipeline, "_call", rec)
    from preferthinker.pipeline import run
    from tests.conftest import compose

    cfg = compose("pipeline", [f"run_dir={tmp_path / 'pipe'}", "+pipeline_preset=tiny112", "stages=[data,sft,eval]"])
    assert cfg.data_dir == "data/synthetic112" and cfg.image_size == 112 and list(cfg.eval) == []
    cfg.data_dir = str(tmp_path / "data112")
    run(cfg)
    assert rec.calls[0][1]["image_size"] == "112"
    assert rec.calls[1][1]["curriculum"] == "tiny112" and rec.calls[1][1]["model.max_pixels"] == str(112 * 112)
    assert "bench.max_samples" not in rec.calls[2][1]


def test_eta_scales_the_expected_minutes_by_the_finished_stages():
    from preferthinker.pipeline import eta_seconds

    expected = {"data": 1, "sft": 35, "eval": 15}
    assert eta_seconds({}, ["data", "sft", "eval"], expected) == 51 * 60
    # the SFT stage took twice its expectation: the rest is expected to take twice as long too
    assert eta_seconds({"data": 60.0, "sft": 2 * 35 * 60}, ["eval"], expected) == pytest.approx(15 * 60 * (60 + 70 * 60) / (36 * 60))
    # a short stage alone says nothing about the machine: the expectation stands
    assert eta_seconds({"data": 120.0}, ["sft", "eval"], expected) == 50 * 60
    assert eta_seconds({"data": 120.0}, ["unknown"], expected) == 0


def test_eval_base_scores_the_untrained_backbone(tmp_path, monkeypatch):
    """eval_base=true adds the Base row (the tiny backbone) to the eval stage and the table; a non-boolean is refused."""
    from preferthinker import pipeline

    rec = _Recorder()
    monkeypatch.setattr(pipeline, "_call", rec)
    _run_in_process(tmp_path, "tiny_model=/models/tiny", "eval_base=true")
    eval_args = rec.calls[-1][1]
    assert eval_args["systems"] == "[model,base,pixel,random]" and eval_args["base_model"] == "/models/tiny"
    text = (tmp_path / "pipe" / "ablation.md").read_text()
    assert "| Base model | 49.0 [44.0, 54.0] | 1.0 | 49.0 |" in text and "not scored" not in text
    with pytest.raises(ConfigError, match="eval_base"):
        _run_in_process(tmp_path, "tiny_model=/models/tiny", "eval_base=maybe")
