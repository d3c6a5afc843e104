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
    # the Avg. column compared between every two systems, accuracy and Pred, over both subsets
    avg = res["average_comparisons"]
    assert len(avg) == 3 and all(set(e) == {"accuracy", "pred"} for e in avg.values())
    for c in avg.values():
        assert set(c["accuracy"]["subsets"]) == {"SP_ID", "SP_OD"} and c["accuracy"]["n"] == 16
        assert c["accuracy"]["ci95"][0] <= c["accuracy"]["diff"] <= c["accuracy"]["ci95"][1]
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
    res = run(compose("eval", _eval_over(data, tiny_model, tmp_path / "run", "systems=[model]", "data.eval_subsets=[SP_ID]",
                                         "bench.max_error_rate=0.5")))  # 2 of 8 pairs: above the 5 % default gate
    m = res["subsets"]["SP_ID"]
    assert m["n"] == 8 and m["n_errors"] == 2
    assert res["errors"]["PreferThinker"]["n_errors"] == 4 and res["errors"]["PreferThinker"]["rate"] == 0.25  # both orientations


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


def _same_numbers(a: dict, b: dict) -> None:
    """results.json numbers that must not depend on where the files live (timings and paths may)."""
    for key in ("subsets", "systems", "comparisons", "average_comparisons", "data_warnings", "errors"):
        assert a.get(key) == b.get(key), key


def test_hub_snapshot_and_image_root_give_the_same_results_as_a_plain_copy(mini_data, tiny_model, tmp_path):
    """A bench laid out as a hub cache (snapshots/<rev>/ symlinks into blobs/) and a bench whose images live elsewhere
    (bench.image_root, the official --image_root) evaluate to exactly the results of a plain copy."""
    from preferthinker.evaluation.run import run
    from tests.test_schema import _hub_snapshot

    plain = tmp_path / "plain"
    shutil.copytree(mini_data / "data" / "SP_ID", plain / "data" / "SP_ID")
    snap = _hub_snapshot(plain, tmp_path / "hub")
    moved = tmp_path / "moved"
    (moved / "data" / "SP_ID").mkdir(parents=True)
    shutil.copy(plain / "data" / "SP_ID" / "SP_ID.json", moved / "data" / "SP_ID" / "SP_ID.json")
    shutil.copytree(plain / "data" / "SP_ID" / "images", tmp_path / "pictures" / "SP_ID")
    common = ("systems=[model,random]", "data.eval_subsets=[SP_ID]", "metrics.similarity=false")
    res = [run(compose("eval", _eval_over(root, tiny_model, tmp_path / f"run_{name}", *common, *extra)))
           for name, root, extra in (("plain", plain, ()), ("hub", snap, ()),
                                     ("moved", moved, (f"bench.image_root='{tmp_path / 'pictures'}/{{subset}}'",)))]
    assert res[0]["errors"]["PreferThinker"]["n_errors"] == 0 and res[0]["subsets"]["SP_ID"]["n"] == 8
    _same_numbers(res[0], res[1])
    _same_numbers(res[0], res[2])
    on_disk = [json.loads((tmp_path / f"run_{n}" / "results.json").read_text()) for n in ("plain", "hub")]
    _same_numbers(on_disk[0], on_disk[1])


def _unreadable_bench(mini_data, tmp_path):
    data = tmp_path / "bench"
    shutil.copytree(mini_data / "data" / "SP_ID", data / "data" / "SP_ID")
    for f in (data / "data" / "SP_ID" / "images").iterdir():
        f.write_bytes(b"not an image")
    return data


def test_a_run_of_errors_fails_with_its_reasons_and_keeps_what_it_scored(mini_data, tiny_model, tmp_path):
    from preferthinker.evaluation.errors import EvaluationFailed
    from preferthinker.evaluation.run import run

    data = _unreadable_bench(mini_data, tmp_path)
    with pytest.raises(EvaluationFailed) as e:
        run(compose("eval", _eval_over(data, tiny_model, tmp_path / "run", "systems=[model]", "data.eval_subsets=[SP_ID]",
                                       "metrics.similarity=false")))
    msg = str(e.value)
    assert "16 of 16 samples failed (100.0%)" in msg and "16 x field prefered_images: cannot read <path> as an image" in msg, msg
    assert str(tmp_path / "run") in msg
    saved = json.loads((tmp_path / "run" / "results.json").read_text())["errors"]["PreferThinker"]
    assert saved["n_errors"] == 16 and sum(r["count"] for r in saved["reasons"]) == 16
    assert len((tmp_path / "run" / "predictions" / "model" / "SP_ID.rank0.jsonl").read_text().splitlines()) == 16
    # a threshold the user raises lets the same run finish (resuming from the predictions on disk)
    res = run(compose("eval", _eval_over(data, tiny_model, tmp_path / "run", "systems=[model]", "data.eval_subsets=[SP_ID]",
                                         "metrics.similarity=false", "bench.max_error_rate=1.0")))
    assert res["errors"]["PreferThinker"]["n_errors"] == 16


@pytest.mark.slow
def test_unreadable_bench_exits_non_zero_with_the_reasons(mini_data, tiny_model, tmp_path):
    data = _unreadable_bench(mini_data, tmp_path)
    cmd = [sys.executable, str(REPO / "scripts" / "eval.py"),
           *_eval_over(data, tiny_model, tmp_path / "run", "systems=[model]", "data.eval_subsets=[SP_ID]", "metrics.similarity=false")]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "evaluation failed" in out.stderr and "x field" in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]


def test_vision_ids_reach_the_generator(mini_data, tiny_model):
    """prompt.vision_ids renders "Picture N: " into the tokens the model sees; off, it does not."""
    from preferthinker.data.loading import PromptSpec, sample_inputs
    from preferthinker.data.schema import load_bench
    from preferthinker.evaluation.generate import GenerationSettings, Generator
    from preferthinker.modeling import load_model_and_processor

    model, processor = load_model_and_processor(str(tiny_model), dtype="float32", device="cpu", min_pixels=3136, max_pixels=3136)
    rec = load_bench(mini_data / "data" / "SP_ID" / "SP_ID.json")[0]
    msgs, images = sample_inputs(rec, mini_data / "data" / "SP_ID" / "images", PromptSpec(style="compact", system="compact",
                                                                                    min_pixels=3136, max_pixels=3136), embed_images=True)
    texts = []
    for ids in (True, False):
        enc = Generator(model, processor, GenerationSettings(vision_ids=ids)).encode([msgs])
        texts.append(processor.tokenizer.decode(enc["input_ids"][0]))
    n = len(images)
    assert texts[0].count("Picture ") == n and f"Picture {n}: <|vision_start|>" in texts[0] and "Picture" not in texts[1]


@pytest.mark.parametrize("over, message", [(["bench.max_error_rate=2"], "bench.max_error_rate"),
                                           (["prompt.style=fancy"], "prompt.style"), (["prompt.system=loud"], "prompt.system")])
def test_bad_gate_and_prompt_overrides_are_named(over, message):
    from preferthinker.evaluation.run import validate
    from preferthinker.runtime import ConfigError

    with pytest.raises(ConfigError, match=message):
        validate(compose("eval", over))


def test_image_root_that_is_not_a_folder_is_named(mini_data, tmp_path):
    from preferthinker.evaluation.run import load_subsets
    from preferthinker.runtime import ConfigError

    with pytest.raises(ConfigError, match=r"bench.image_root=.*nowhere/SP_ID is not a folder \(subset SP_ID\)"):
        load_subsets(str(mini_data), ["SP_ID"], None, str(tmp_path / "nowhere" / "{subset}"))
    recs, root = load_subsets(str(mini_data), ["SP_ID"], 3, str(mini_data / "data" / "{subset}" / "images"))["SP_ID"]
    assert len(recs) == 3 and root == mini_data / "data" / "SP_ID" / "images"


def test_generation_batch_size_auto_is_64_on_cpu_and_16_on_cuda(tmp_path):
    """generation.batch_size=auto (the default): 64 on CPU, 16 on CUDA; an integer passes as given; anything else is
    refused with the key named."""
    from preferthinker.evaluation.run import resolve_batch_size, validate
    from preferthinker.runtime import ConfigError

    cfg = compose("eval", [f"run_dir={tmp_path}"])
    assert cfg.generation.batch_size == "auto"
    assert resolve_batch_size(cfg, cuda=False) == 64 and resolve_batch_size(cfg, cuda=True) == 16
    assert resolve_batch_size(compose("eval", [f"run_dir={tmp_path}", "generation.batch_size=8"]), cuda=False) == 8
    for bad in ("0", "big", "true"):
        with pytest.raises(ConfigError, match="generation.batch_size"):
            validate(compose("eval", [f"run_dir={tmp_path}", f"generation.batch_size={bad}"]))
