"""The main job's runner: the align_first stage trains on single-image rows naming only the hard elements and the align stage
from it on single-image rows, the checks stage on text-only section rows
from it, the CoT SFT starts from the checks stage and the second CoT schedule (sft2) from the SFT.

Quick tests run ``pipeline.run`` in process with each stage's command recorded; the ``slow`` ones launch the
script (and, end to end, every training stage) as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO


@pytest.mark.slow
def test_pipeline_runs_align_checks_then_sft(mini_data, tiny_model, tmp_path):
    run_dir = tmp_path / "pipe"
    common = ["logger=none", "data.val_samples=0", "trainer.max_steps=2", "trainer.save_strategy=no", "trainer.per_device_train_batch_size=4"]

    def as_list(items):  # Hydra list of quoted key=value strings
        return "[" + ",".join(f"'{x}'" for x in items) + "]"

    cmd = [sys.executable, str(REPO / "scripts" / "run_pipeline.py"), f"run_dir={run_dir}", f"data_dir={mini_data}",
           f"tiny_model={tiny_model}", "image_size=56", "stages=[align_first,align,checks,sft,sft2]",
           "align_first=[{elements:[Detail],overrides:" + as_list(common + ["data.align_per_record=2"]) + "},"
           "{elements:[Art Styles,Detail],overrides:" + as_list(common + ["data.align_per_record=1"]) + "}]", "align=" + as_list(common + ["data.align_per_record=2"]), "checks=" + as_list(common + ["data.check_per_record=1"]),
           "sft=" + as_list(common + ["data.align_per_record=0"]),
           "sft2=" + as_list(common + ["data.align_per_record=0", "data.total_rows=true", "trainer.learning_rate=1e-3"])]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    # align_first: phase 1 (Detail alone) from the tiny model, phase 2 (Art Styles + Detail) from phase 1, align from phase 2
    for k, (elements, rows, start) in enumerate([(["Detail"], 48, tiny_model), (["Art Styles", "Detail"], 24, run_dir / "align_first" / "phase1" / "final")]):
        phase = run_dir / "align_first" / f"phase{k + 1}"
        res = json.loads((phase / "results.json").read_text())
        assert res["align_schedule"] == "only" and res["alignment_rows"] == res["train_samples"] == rows
        phase_cfg = yaml.safe_load((phase / "sft_config.yaml").read_text())
        assert phase_cfg["data"]["align_elements"] == elements and phase_cfg["model"]["path"] == str(start)
    align_cfg = yaml.safe_load((run_dir / "align" / "sft_config.yaml").read_text())
    assert align_cfg["model"]["path"] == str(run_dir / "align_first" / "phase2" / "final") and align_cfg["data"]["align_elements"] is None
    align = json.loads((run_dir / "align" / "results.json").read_text())
    assert align["align_schedule"] == "only" and align["alignment_rows"] == align["train_samples"] == 48
    checks = json.loads((run_dir / "checks" / "results.json").read_text())
    assert checks["check_rows"] == checks["train_samples"] == 24 and checks["alignment_rows"] == 0
    checks_cfg = yaml.safe_load((run_dir / "checks" / "sft_config.yaml").read_text())
    assert checks_cfg["model"]["path"] == str(run_dir / "align" / "final")
    sft_cfg = yaml.safe_load((run_dir / "sft" / "sft_config.yaml").read_text())
    assert sft_cfg["model"]["path"] == str(run_dir / "checks" / "final")
    assert sft_cfg["model"]["min_pixels"] == sft_cfg["model"]["max_pixels"] == 56 * 56  # image_size=56 reaches every stage
    assert (run_dir / "sft" / "final" / "config.json").is_file()
    # sft2: a second schedule from sft/final with its own overrides (here the add-up rows)
    sft2_cfg = yaml.safe_load((run_dir / "sft2" / "sft_config.yaml").read_text())
    assert sft2_cfg["model"]["path"] == str(run_dir / "sft" / "final") and sft2_cfg["trainer"]["learning_rate"] == 1e-3
    sft2 = json.loads((run_dir / "sft2" / "results.json").read_text())
    assert sft2["total_rows"] == 24 and sft2["final_model"] == str(run_dir / "sft2" / "final")
    assert set(json.loads((run_dir / "pipeline.json").read_text())["stage_seconds"]) == {"align_first", "align", "checks", "sft", "sft2"}


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
    out = _pipeline(f"run_dir={tmp_path / 'pipe'}", f"data_dir={tmp_path / 'data'}", "image_size=50", "stages=[align]")
    assert out.returncode == 2
    assert "image_size" in out.stderr and "multiple of 28" in out.stderr, out.stderr[-2000:]
    assert not (tmp_path / "pipe" / "align").exists()  # Hydra makes the run dir itself; no stage ran


@pytest.mark.parametrize("size", ["50", "0", "2048", "big"])
def test_pipeline_rejects_a_bad_image_size(size, tmp_path):
    from preferthinker.runtime import ConfigError

    with pytest.raises(ConfigError, match="image_size.*multiple of 28"):
        _run_in_process(tmp_path, f"image_size={size}", "stages=[align]")
    assert not (tmp_path / "pipe").exists()


@pytest.mark.parametrize("overrides, message", [
    (["stages=[align_detail,align]"], "now align_first"),
    (["stages=[align_first,align]", "align_first=[{elements:[Brushwork]}]"], "align_first[0].elements"),
    (["stages=[align_first,align]", "align_first=[{elements:[Detail]},{elements:[]}]"], "align_first[1].elements"),
    (["stages=[align_first,align]", "align_first=[{elements:[Detail],overrides:[epochs]}]"], "align_first[0].overrides"),
    (["stages=[align_first,align]", "align_first=[]"], "list of phases"),
    (["stages=[align_first,align]", "align_first=[Detail]"], "align_first[0].elements"),
    (["stages=[align,train]"], "unknown stage 'train'"),
])
def test_pipeline_rejects_bad_stages_and_phases(overrides, message, tmp_path):
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
        _run_in_process(tmp_path, "image_size=112", "stages=[data,align]")
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
            (out / "manifest.json").write_text(json.dumps({"image_size": 112}))
            return
        run_dir = Path(args["run_dir"])
        if script == "eval.py":
            systems = {name: {"subsets": {"SP_ID": {"accuracy": acc, "ci95": [acc - 0.05, acc + 0.05], "pred_similarity": pred}}}
                       for name, acc, pred in [("Random", 0.5, None), ("Base model", 0.49, 1.0), ("SFT", 0.875, 62.0),
                                               ("SFT_RL", 0.9, 63.5)]}
            results = {"system": "SFT+RL+PR", "subsets": {"SP_ID": {"accuracy": 0.92, "ci95": [0.88, 0.95], "pred_similarity": 64.0}},
                       "systems": systems}
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
    """The default config, with each stage's process recorded: the two-phase vision curriculum (Detail, then
    Art Styles with Detail) before align, each stage from the previous one's final/, GRPO from sft2, the eval
    comparing every trained stage; then the ablation table; a re-run skips what is finished."""
    from preferthinker import pipeline

    rec = _Recorder()
    monkeypatch.setattr(pipeline, "_call", rec)
    summary = _run_in_process(tmp_path, "tiny_model=/models/tiny")
    pipe = tmp_path / "pipe"
    assert [script for script, _ in rec.calls] == ["make_data.py"] + ["train_sft.py"] * 6 + ["train_grpo.py"] * 2 + ["eval.py"]
    assert rec.calls[0][1]["image_size"] == "112"
    expected = [
        (pipe / "align_first" / "phase1", "/models/tiny"),
        (pipe / "align_first" / "phase2", pipe / "align_first" / "phase1" / "final"),
        (pipe / "align", pipe / "align_first" / "phase2" / "final"),
        (pipe / "checks", pipe / "align" / "final"),
        (pipe / "sft", pipe / "checks" / "final"),
        (pipe / "sft2", pipe / "sft" / "final"),
        (pipe / "grpo_rl", pipe / "sft2" / "final"),
        (pipe / "grpo_pr", pipe / "sft2" / "final"),
        (pipe / "eval", pipe / "grpo_pr" / "final"),
    ]
    assert rec.starts() == [(str(d), str(m)) for d, m in expected]
    phases = [args for _, args in rec.calls[1:3]]
    assert [a["data.align_elements"] for a in phases] == ["[Detail]", "[Art Styles,Detail]"]
    assert all(a["data.align_schedule"] == "only" and a["model.min_pixels"] == a["model.max_pixels"] == str(112 * 112)
               for a in phases)
    grpo = {Path(a["run_dir"]).name: a["reward"] for s, a in rec.calls if s == "train_grpo.py"}
    assert grpo == {"grpo_rl": "acc_format", "grpo_pr": "paper"}
    eval_args = rec.calls[-1][1]
    assert f"+extra_models.SFT={pipe / 'sft2' / 'final'}" in eval_args["+"]
    assert f"+extra_models.SFT_RL={pipe / 'grpo_rl' / 'final'}" in eval_args["+"]
    # the ablation table: paper row order, SFT_RL shown as SFT+RL, accuracy [CI] and Pred per subset
    table = (pipe / "ablation.md").read_text().splitlines()
    assert summary["ablation_table"] == str(pipe / "ablation.md")
    assert table[0] == "| System | SP_ID | Pred | Avg. |"
    assert [line.split(" | ")[0] for line in table[2:]] == ["| Random", "| Base model", "| SFT", "| SFT+RL", "| SFT+RL+PR"]
    assert table[2] == "| Random | 50.0 [45.0, 55.0] | – | 50.0 |"
    assert table[5] == "| SFT+RL | 90.0 [85.0, 95.0] | 63.5 | 90.0 |"
    assert set(summary["stage_seconds"]) == {"data", "align_first", "align", "checks", "sft", "sft2", "grpo_rl", "grpo_pr", "eval"}
    # resume: every stage left its results, so the same command runs nothing
    again = _Recorder()
    monkeypatch.setattr(pipeline, "_call", again)
    _run_in_process(tmp_path, "tiny_model=/models/tiny")
    assert again.calls == []
