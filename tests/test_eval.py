"""The evaluation recipe: official layout read unchanged, metrics in results.json, sharded == single
process, resume, corrupt samples counted, bad input -> one clear message and a non-zero exit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO, compose


def _eval_over(mini_data, model, run_dir, *extra):
    return [f"data.root={mini_data}", f"model.path={model}", f"run_dir={run_dir}", "generation.max_new_tokens=24",
            "generation.batch_size=4", "metrics.n_boot=200", "systems=[model,random]", "data.eval_subsets=[SP_ID,SP_OD]", *extra]


@pytest.mark.slow
def test_eval_writes_every_metric(mini_data, tiny_model, tmp_path):
    from preferthinker.evaluation.run import run

    res = run(compose("eval", _eval_over(mini_data, tiny_model, tmp_path / "run", f"base_model={tiny_model}", "systems=[model,base,random]")))
    for name in ("SP_ID", "SP_OD"):
        m = res["subsets"][name]
        for key in ("accuracy", "n", "parse_fail_rate", "ci95", "position_consistency", "first_slot_win_rate", "swap_avg_accuracy",
                    "pred_similarity", "element_match", "element_score_agreement", "macro_accuracy"):
            assert key in m, key
        assert m["n"] == 8 and 0 <= m["accuracy"] <= 1 and m["ci95"][0] <= m["accuracy"] <= m["ci95"][1]
    assert set(res["systems"]) == {"Base model", "Random"}
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"results.json", "results.md", "accuracy_per_subset.png", "predictions"} <= files
    rows = [json.loads(l) for l in (tmp_path / "run" / "predictions" / "model" / "SP_ID.rank0.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and {r["swapped"] for r in rows} == {False, True} and all("raw" in r for r in rows)
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert on_disk["subsets"]["SP_ID"]["accuracy"] == res["subsets"]["SP_ID"]["accuracy"]


@pytest.mark.slow
@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_fast_engine_writes_the_same_responses_as_generate(mini_data, sft_model, tmp_path, penalty):
    """engine=fast (static-cache greedy, FastRollout) and engine=hf (model.generate) agree sample by sample (fp32),
    with and without the repetition penalty of the official protocol."""
    from preferthinker.evaluation.run import run

    raws = {}
    for engine in ("hf", "fast"):
        run_dir = tmp_path / engine
        run(compose("eval", _eval_over(mini_data, sft_model, run_dir, "systems=[model]", "data.eval_subsets=[SP_ID]",
                                       "generation.max_new_tokens=48", f"generation.engine={engine}",
                                       f"generation.repetition_penalty={penalty}")))
        rows = [json.loads(l) for l in (run_dir / "predictions" / "model" / "SP_ID.rank0.jsonl").read_text().splitlines()]
        raws[engine] = {(r["index"], r["swapped"]): r["raw"] for r in rows}
    assert len(raws["hf"]) == 16 and raws["hf"] == raws["fast"]
    assert any(len(t) > 20 for t in raws["hf"].values())  # real text, not empty strings


@pytest.mark.slow
def test_resume_skips_scored_samples(mini_data, tiny_model, tmp_path):
    from preferthinker.evaluation.run import run

    over = _eval_over(mini_data, tiny_model, tmp_path / "run", "systems=[model]", "data.eval_subsets=[SP_ID]")
    first = run(compose("eval", over))
    pred = tmp_path / "run" / "predictions" / "model" / "SP_ID.rank0.jsonl"
    lines = pred.read_text().splitlines()
    pred.write_text("\n".join(lines[:8]) + "\n" + lines[8][:20])  # a crash mid-write: 8 rows kept, one cut line
    second = run(compose("eval", over))
    assert len(pred.read_text().splitlines()) >= 16
    assert second["subsets"]["SP_ID"]["accuracy"] == first["subsets"]["SP_ID"]["accuracy"]


@pytest.mark.slow
def test_corrupt_sample_is_counted_not_fatal(mini_data, tiny_model, tmp_path):
    from preferthinker.evaluation.run import run

    data = tmp_path / "bench"
    shutil.copytree(mini_data / "data", data / "data")
    recs = json.loads((data / "data" / "SP_ID" / "SP_ID.json").read_text())
    (data / "data" / "SP_ID" / "images" / recs[3]["imageA"]).write_bytes(b"not an image at all")
    (data / "data" / "SP_ID" / "images" / recs[5]["prefered_images"][0]).unlink()
    res = run(compose("eval", _eval_over(data, tiny_model, tmp_path / "run", "systems=[model]", "data.eval_subsets=[SP_ID]")))
    m = res["subsets"]["SP_ID"]
    assert m["n"] == 8 and m["n_errors"] == 2


@pytest.mark.slow
def test_sharded_run_matches_single_process(mini_data, tiny_model, tmp_path):
    """2 processes (accelerate launch semantics via torchrun) give the same predictions as 1."""
    over = _eval_over(mini_data, tiny_model, tmp_path / "one", "systems=[model,random]", "data.eval_subsets=[SP_ID]")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, str(REPO / "scripts" / "eval.py"), *over], env=env, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-2000:]
    over2 = [o.replace(str(tmp_path / "one"), str(tmp_path / "two")) for o in over]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29520",
                          str(REPO / "scripts" / "eval.py"), *over2], env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    assert len(list((tmp_path / "two" / "predictions" / "model").glob("SP_ID.rank*.jsonl"))) == 2

    def preds(d):
        rows = []
        for f in sorted((d / "predictions" / "model").glob("*.jsonl")):
            rows += [json.loads(l) for l in f.read_text().splitlines()]
        return sorted((r["index"], r["swapped"], r["raw"]) for r in rows)

    assert preds(tmp_path / "one") == preds(tmp_path / "two")
    r1, r2 = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("one", "two"))
    assert r1["subsets"] == r2["subsets"] and r2["world_size"] == 2


@pytest.mark.slow
@pytest.mark.parametrize(
    "over, message",
    [
        (["data.eval_subsets=[SP_ID,MP_XX]"], "MP_XX"),
        (["model.path=/no/such/checkpoint"], "/no/such/checkpoint"),
        (["systems=[model,oracle]"], "oracle"),
        (["generation.max_new_tokens=0"], "generation.max_new_tokens"),
        (["data.root=/no/such/bench"], "no data/ folder"),
    ],
)
def test_bad_input_gives_one_clear_message(mini_data, tiny_model, tmp_path, over, message):
    cmd = [sys.executable, str(REPO / "scripts" / "eval.py"), *_eval_over(mini_data, tiny_model, tmp_path / "run", *over)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr, out.stderr[-1500:]


@pytest.mark.slow
def test_malformed_bench_json_is_a_clear_error(mini_data, tiny_model, tmp_path):
    data = tmp_path / "bench"
    shutil.copytree(mini_data / "data", data / "data")
    (data / "data" / "SP_ID" / "SP_ID.json").write_text('[{"imageA": ')
    cmd = [sys.executable, str(REPO / "scripts" / "eval.py"), *_eval_over(data, tiny_model, tmp_path / "run", "data.eval_subsets=[SP_ID]")]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 2 and "malformed JSON" in out.stderr and "SP_ID.json" in out.stderr and "Traceback" not in out.stderr
