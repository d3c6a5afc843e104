"""One checkpoint resolver (runtime.resolve_checkpoint) for GRPO's starting point, eval's model.path and the Assessor's
--model: which finished run `latest`, `latest_sft` and `latest_grpo` pick, and what they refuse."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from preferthinker.runtime import ConfigError, finished_checkpoints, resolve_checkpoint


def _final(root: Path, rel: str, mtime: float) -> Path:
    d = root / rel
    d.mkdir(parents=True)
    (d / "config.json").write_text("{}")
    os.utime(d / "config.json", (mtime, mtime))
    return d


@pytest.fixture
def outputs(tmp_path):
    root = tmp_path / "outputs"
    made = {
        "sft_old": _final(root, "sft/r1/final", 1_000),
        "pipe_align": _final(root, "pipeline/p1/align/final", 1_500),      # auxiliary stages are never candidates
        "pipe_checks": _final(root, "pipeline/p1/checks/final", 1_600),
        "pipe_sft": _final(root, "pipeline/p1/sft/final", 1_700),
        "pipe_sft2": _final(root, "pipeline/p1/sft2/final", 1_800),
        "grpo": _final(root, "grpo/g1/final", 2_000),
        "pipe_phase": _final(root, "pipeline/p1/align_first/phase1/final", 3_000),
    }
    (root / "sft" / "unfinished" / "checkpoints" / "checkpoint-2").mkdir(parents=True)  # no final/: not a candidate
    return root, made


def test_latest_kinds_pick_the_newest_finished_final(outputs):
    root, made = outputs
    assert resolve_checkpoint("latest_sft", root) == str(made["pipe_sft2"])     # a pipeline's sft2 counts as SFT
    assert resolve_checkpoint("latest_grpo", root) == str(made["grpo"])
    assert resolve_checkpoint("latest", root) == str(made["grpo"])              # newest of both kinds
    assert resolve_checkpoint(None, root) == str(made["grpo"])
    sft = _final(root, "sft/r2/final", 2_500)                                   # a newer SFT run wins `latest`
    assert resolve_checkpoint("latest", root) == resolve_checkpoint("latest_sft", root) == str(sft)
    assert made["pipe_align"] not in finished_checkpoints(None, root)
    assert made["pipe_phase"] not in finished_checkpoints(None, root)
    assert [p.name for p in finished_checkpoints("grpo", root)] == ["final"]


def test_explicit_path_is_returned_as_given(outputs):
    root, _ = outputs
    assert resolve_checkpoint("some/folder", root) == "some/folder"
    assert resolve_checkpoint(Path("x/final"), root) == "x/final"


def test_nothing_finished_names_what_was_searched(tmp_path):
    with pytest.raises(ConfigError, match=r"model.path=latest_grpo: no finished GRPO checkpoint under .*grpo/\*/final"):
        resolve_checkpoint("latest_grpo", tmp_path)
    _final(tmp_path, "grpo/g/final", 10)
    with pytest.raises(ConfigError, match="latest_sft: no finished SFT checkpoint"):
        resolve_checkpoint("latest_sft", tmp_path)


def test_grpo_eval_and_assessor_share_the_rule(outputs, monkeypatch):
    """The three consumers resolve `latest*` identically (they used to have three rules: GRPO never found a
    pipeline's SFT, eval preferred any GRPO run over a newer SFT run)."""
    from preferthinker.assess import resolve_checkpoint as assess_resolve
    from preferthinker.evaluation.run import resolve_model_path

    root, made = outputs
    monkeypatch.chdir(root.parent)
    for spec in ("latest", "latest_sft", "latest_grpo"):
        want = resolve_checkpoint(spec, "outputs")
        assert resolve_model_path(spec) == assess_resolve(spec) == want
    assert Path(resolve_checkpoint("latest_sft", "outputs")).resolve() == made["pipe_sft2"].resolve()


def test_plain_train_grpo_starts_from_the_pipelines_sft(outputs, mini_data, tmp_path, monkeypatch):
    """`train_grpo.py` with its default model.path (latest_sft) loads the newest finished SFT checkpoint, a
    pipeline's included; with none it stops before loading anything, naming where it looked."""
    import preferthinker.modeling as modeling
    from preferthinker.train.grpo import run
    from tests.conftest import compose

    class Loaded(Exception):
        pass

    def fake_load(path, *args, **kwargs):
        raise Loaded(str(path))

    monkeypatch.setattr(modeling, "load_model_and_processor", fake_load)
    over = [f"data.root={mini_data}", f"run_dir={tmp_path / 'run'}", "logger=none"]
    root, made = outputs
    monkeypatch.chdir(root.parent)
    with pytest.raises(Loaded) as got:
        run(compose("grpo", over))
    assert Path(str(got.value)).resolve() == made["pipe_sft2"].resolve()
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    with pytest.raises(ConfigError, match=r"model.path=latest_sft: no finished SFT checkpoint under outputs"):
        run(compose("grpo", over + [f"run_dir={tmp_path / 'run2'}"]))
