"""bench.refs_sweep (issue #27): accuracy and parse failures by reference count in results.json, results.md
and accuracy_by_refs.png; the config check; and (slow) an end-to-end run whose counts use their own,
resumable prediction files."""

from __future__ import annotations

import json

import pytest

from preferthinker.evaluation.refs_sweep import parse_sweep, sweep_results, sweep_table


def test_parse_sweep_forms_and_errors():
    assert parse_sweep(None) is None
    assert parse_sweep([5, 1, 2, 2]) == [1, 2, 5]
    for bad in (3, [], [0, 2], [1, "2"], "1,2", [True]):
        with pytest.raises(ValueError, match="bench.refs_sweep"):
            parse_sweep(bad)


def _metrics(acc: float, fail: float, n: int = 50) -> dict:
    return {"n": n, "n_users": n, "accuracy": acc, "ci95": [acc - 0.1, acc + 0.1], "parse_fail_rate": fail,
            "format_fail_rate": fail, "error_rate": 0.0}


def test_results_table_and_plot(tmp_path):
    from preferthinker.evaluation.report import write_report

    sweep = sweep_results({1: {"SP_ID": _metrics(0.26, 0.42)}, 5: {"SP_ID": _metrics(0.64, 0.0)}, 2: {"SP_ID": _metrics(0.3, 0.4)}})
    assert list(sweep["SP_ID"]) == ["1", "2", "5"]
    assert sweep["SP_ID"]["1"]["parse_failures"] == 21 and sweep["SP_ID"]["5"]["refs"] == 5
    table = sweep_table(sweep)
    assert "| SP_ID | 1 | 26.0 [16.0, 36.0] | 42.0 |" in table and "| SP_ID | 5 | 64.0 [54.0, 74.0] | 0.0 |" in table
    results = {"system": "PreferThinker", "subsets": {"SP_ID": _metrics(0.64, 0.0)}, "refs_sweep": sweep}
    written = write_report(results, tmp_path)
    assert written["refs_plot"].name == "accuracy_by_refs.png" and written["refs_plot"].stat().st_size > 5000
    md = (tmp_path / "results.md").read_text()
    assert "## By reference count: PreferThinker" in md and "| SP_ID | 2 | 30.0" in md and "accuracy_by_refs.png" in md
    assert json.loads((tmp_path / "results.json").read_text())["refs_sweep"]["SP_ID"]["2"]["accuracy"] == 0.3
    no_sweep = write_report({"system": "x", "subsets": {"SP_ID": _metrics(0.5, 0.0)}}, tmp_path / "plain")
    assert "refs_plot" not in no_sweep and "By reference count" not in (tmp_path / "plain" / "results.md").read_text()


@pytest.mark.parametrize("over, message", [
    (["bench.refs_sweep=[0,2]"], "bench.refs_sweep"),
    (["bench.refs_sweep=3"], "bench.refs_sweep"),
    (["bench.refs_sweep=[1,2]", "systems=[random]"], "keep 'model' in systems"),
])
def test_bad_sweep_overrides_are_named(over, message):
    from tests.conftest import compose
    from preferthinker.evaluation.run import validate
    from preferthinker.runtime import ConfigError

    with pytest.raises(ConfigError, match=message):
        validate(compose("eval", over))


@pytest.mark.slow
def test_eval_sweep_end_to_end_and_resumable(mini_data, tiny_model, tmp_path):
    from tests.conftest import compose
    from preferthinker.evaluation.run import run

    over = [f"data.root={mini_data}", f"model.path={tiny_model}", f"run_dir={tmp_path / 'run'}", "generation.max_new_tokens=8",
            "generation.batch_size=4", "metrics.n_boot=50", "metrics.similarity=false", "systems=[model]",
            "data.eval_subsets=[SP_ID]", "bench.max_samples=4", "prompt.max_refs=3", "bench.refs_sweep=[1,3]"]
    res = run(compose("eval", over))
    entry = res["refs_sweep"]["SP_ID"]
    assert set(entry) == {"1", "3"} and entry["1"]["n"] == 4 and 0 <= entry["1"]["parse_fail_rate"] <= 1
    assert entry["3"]["accuracy"] == res["subsets"]["SP_ID"]["accuracy"]  # the max_refs count is the main run
    pred = tmp_path / "run" / "predictions"
    rows = [json.loads(line) for line in (pred / "model_refs1" / "SP_ID.rank0.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and not any(r["swapped"] for r in rows)  # unswapped pairs only, own file
    assert not (pred / "model_refs3").exists()
    before = (pred / "model_refs1" / "SP_ID.rank0.jsonl").read_text()
    again = run(compose("eval", over))  # resumed: nothing rescored, same figures
    assert (pred / "model_refs1" / "SP_ID.rank0.jsonl").read_text() == before
    assert again["refs_sweep"]["SP_ID"]["1"]["accuracy"] == entry["1"]["accuracy"]
    assert (tmp_path / "run" / "accuracy_by_refs.png").is_file()
