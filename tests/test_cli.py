"""The ``preferthinker`` command line: help, readable and JSON output of assess / rank / profile,
validate-data, and one clear ``error: ...`` line (exit code 2) per bad input. Most calls run
``main([...])`` in-process (fast); the installed console script and ``python -m`` are run once each."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from preferthinker.cli import main
from tests.conftest import REPO
from tests.test_assess import make_checkpoint

TOKENS = ["--max-new-tokens", "12", "--device", "cpu"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny_model) -> Path:
    return make_checkpoint(tiny_model, tmp_path_factory.mktemp("cli_run"))


@pytest.fixture(scope="module")
def folders(tmp_path_factory, mini_data) -> dict:
    """likes/ (3 images + a text file), dislikes/ (3 images), and two candidates, as a user would have them."""
    root = tmp_path_factory.mktemp("user")
    src = mini_data / "data" / "SP_ID" / "images"
    for name, pattern in (("likes", "SP_ID0_p*.png"), ("dislikes", "SP_ID0_n*.png")):
        (root / name).mkdir()
        for p in sorted(src.glob(pattern)):
            shutil.copy(p, root / name / p.name)
    (root / "likes" / "notes.txt").write_text("not an image")
    return {"likes": str(root / "likes"), "dislikes": str(root / "dislikes"), "a": str(src / "SP_ID0_good.png"),
            "b": str(src / "SP_ID0_bad.png"), "c": str(src / "SP_ID1_good.png"), "root": root, "src": src}


def run_main(capsys, argv: list[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as e:  # argparse (--help, usage errors)
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, pattern: str) -> None:
    import re

    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err  # no traceback wall
    assert re.search(pattern, lines[0]), lines[0]


# --------------------------------------------------------------------------------------------------
# help


@pytest.mark.parametrize("command", ["assess", "rank", "profile", "serve", "validate-data"])
def test_help_has_usage_and_examples(capsys, command):
    code, out, _ = run_main(capsys, [command, "--help"])
    assert code == 0 and out.startswith(f"usage: preferthinker {command}") and "examples:" in out


def test_no_command_prints_help(capsys):
    code, out, _ = run_main(capsys, [])
    assert code == 2 and "assess" in out and "validate-data" in out


# --------------------------------------------------------------------------------------------------
# assess / rank / profile


def test_assess_readable(capsys, ckpt, folders):
    code, out, err = run_main(capsys, ["assess", "--model", str(ckpt), "--liked", folders["likes"], "--disliked", folders["dislikes"],
                                       folders["a"], folders["b"], *TOKENS])
    assert code == 0, err
    for text in ("Preference", "Non-preference", "Why A", "Total", "answer: none (no readable <answer>)",
                 "note: liked folder", "skipped 1 non-image entry (notes.txt)", "used the first 2 of 3 liked references"):
        assert text in out, out


@pytest.mark.slow
def test_assess_json_via_console_script(ckpt, folders):
    exe = Path(sys.executable).with_name("preferthinker")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "preferthinker.cli"]
    proc = subprocess.run([*cmd, "assess", "--model", str(ckpt), "--liked", folders["likes"], "--disliked", folders["dislikes"],
                           "--disliked", folders["a"], folders["a"], folders["b"], "--json", *TOKENS],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)  # stdout is exactly one JSON document
    for key in ("preference", "non_preference", "scores_a", "scores_b", "rationales_a", "rationales_b", "total_a", "total_b",
                "answer", "raw", "format_ok", "inputs", "notes", "settings", "model", "preferred_image"):
        assert key in doc, key
    assert doc["command"] == "assess" and isinstance(doc["raw"], str)
    assert doc["inputs"]["image_a"] == folders["a"] and doc["inputs"]["liked_given"] == 3 and len(doc["inputs"]["liked"]) == 2
    assert doc["inputs"]["disliked_given"] == 4 and doc["settings"]["style"] == "compact"
    assert "used the first 2 of 3 liked references (max_refs=2); ignored SP_ID0_p2.png" in doc["notes"]
    assert "used the first 2 of 4 disliked references (max_refs=2); ignored SP_ID0_n2.png, SP_ID0_good.png" in doc["notes"]


def test_rank_readable_and_json(capsys, ckpt, folders):
    base = ["rank", "--model", str(ckpt), "--liked", folders["likes"], "--disliked", os.path.join(folders["dislikes"], "*.png"),
            folders["a"], folders["b"], folders["c"], *TOKENS]
    code, out, err = run_main(capsys, base)
    assert code == 0, err
    assert "rank" in out and "wins" in out and "comparisons: 6 (every pair in both orders)" in out and "pairs/s" in out
    assert "P(win)" in out and "uncalibrated" in out
    code, out, err = run_main(capsys, [*base, "--json"])
    assert code == 0, err
    doc = json.loads(out)
    assert doc["command"] == "rank" and len(doc["ranking"]) == 3 and len(doc["comparisons"]) == 6
    entry = doc["ranking"][0]
    assert {"candidate", "rank", "wins", "probability", "rationale", "mean_total", "mean_margin", "pairwise"} <= set(entry)
    assert doc["timing"]["pairs"] == 3 and doc["timing"]["pairs_per_s"] > 0
    assert doc["inputs"]["disliked_given"] == 3 and doc["candidates"] == [folders["a"], folders["b"], folders["c"]]
    # the same pairs through `assess` give the responses stored in rank's comparisons
    first = doc["comparisons"][0]
    code, out, _ = run_main(capsys, ["assess", "--model", str(ckpt), "--liked", folders["likes"], "--disliked",
                                     os.path.join(folders["dislikes"], "*.png"), first["candidate_a"], first["candidate_b"], "--json", *TOKENS])
    assert code == 0 and json.loads(out)["raw"] == first["assessment"]["raw"]


def test_profile_json_and_record(capsys, ckpt, mini_data):
    bench = mini_data / "data" / "SP_ID" / "SP_ID.json"
    code, out, err = run_main(capsys, ["profile", "--model", str(ckpt), "--record", f"{bench}:1", "--json", *TOKENS])
    assert code == 0, err
    doc = json.loads(out)
    assert doc["command"] == "profile" and "preference" in doc and "non_preference" in doc
    assert doc["inputs"]["liked"][0].endswith("SP_ID1_p0.png")
    code, out, err = run_main(capsys, ["assess", "--model", str(ckpt), "--record", f"{bench}:1", *TOKENS])
    assert code == 0 and "dataset label: Image B" in out and "SP_ID1_good.png" in out, err


def test_model_latest_finds_newest_run(capsys, ckpt, folders, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(capsys, ["profile", "--liked", folders["likes"], "--disliked", folders["dislikes"], *TOKENS])
    assert_one_line_error(code, err, r"--model=latest: no finished SFT or GRPO checkpoint under outputs/")
    shutil.copytree(ckpt, tmp_path / "outputs" / "sft" / "run1" / "final")
    code, out, err = run_main(capsys, ["profile", "--liked", folders["likes"], "--disliked", folders["dislikes"], *TOKENS])
    assert code == 0 and "outputs/sft/run1/final" in out, err


# --------------------------------------------------------------------------------------------------
# bad inputs: one line, exit code 2


def test_missing_file(capsys, ckpt, folders):
    code, _, err = run_main(capsys, ["assess", "--model", str(ckpt), "--liked", "/no/such/liked.png", "--disliked", folders["dislikes"],
                                     folders["a"], folders["b"]])
    assert_one_line_error(code, err, r"error: liked: file does not exist: /no/such/liked\.png")


def test_non_image(capsys, ckpt, folders, tmp_path):
    fake = tmp_path / "photo.jpg"
    fake.write_text("plain text")
    code, _, err = run_main(capsys, ["assess", "--model", str(ckpt), "--liked", folders["likes"], "--disliked", folders["dislikes"],
                                     str(fake), folders["b"], *TOKENS])
    assert_one_line_error(code, err, r"image_a: cannot read .*photo\.jpg as an image")


def test_corrupt_image(capsys, ckpt, folders, tmp_path):
    bad = tmp_path / "cut.png"
    data = Path(folders["a"]).read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    code, _, err = run_main(capsys, ["rank", "--model", str(ckpt), "--liked", folders["likes"], "--disliked", folders["dislikes"],
                                     folders["a"], str(bad), *TOKENS])
    assert_one_line_error(code, err, r"candidates\[1\]: cannot read .*cut\.png as an image")


def test_missing_side_and_empty_folder(capsys, ckpt, folders, tmp_path):
    code, _, err = run_main(capsys, ["assess", "--model", str(ckpt), "--liked", folders["likes"], folders["a"], folders["b"]])
    assert_one_line_error(code, err, r"no --disliked reference: pass at least one image or folder")
    (tmp_path / "empty").mkdir()
    code, _, err = run_main(capsys, ["assess", "--model", str(ckpt), "--liked", str(tmp_path / "empty"), "--disliked", folders["dislikes"],
                                     folders["a"], folders["b"]])
    assert_one_line_error(code, err, r"liked: folder .*empty contains no image files")
    code, _, err = run_main(capsys, ["assess", "--model", str(ckpt), "--liked", "nothing/*.png", "--disliked", folders["dislikes"],
                                     folders["a"], folders["b"]])
    assert_one_line_error(code, err, r"--liked: no file matches the pattern 'nothing/\*\.png'")


def test_wrong_number_of_images(capsys, ckpt, folders):
    code, _, err = run_main(capsys, ["assess", "--model", str(ckpt), "--liked", folders["likes"], "--disliked", folders["dislikes"],
                                     folders["a"], folders["b"], folders["c"]])
    assert_one_line_error(code, err, r"assess takes exactly two images, IMAGE_A and IMAGE_B; got 3 .*repeating --liked")
    code, _, err = run_main(capsys, ["rank", "--model", str(ckpt), "--liked", folders["likes"], "--disliked", folders["dislikes"],
                                     "--max-candidates", "2", folders["a"], folders["b"], folders["c"]])
    assert_one_line_error(code, err, r"3 candidates need 6 generations .* --max-candidates 2")


def test_bad_model_path(capsys, folders, tmp_path):
    code, _, err = run_main(capsys, ["assess", "--model", str(tmp_path / "nowhere"), "--liked", folders["likes"], "--disliked",
                                     folders["dislikes"], folders["a"], folders["b"]])
    assert_one_line_error(code, err, r"nowhere")
    code, _, err = run_main(capsys, ["assess", "--model", str(tmp_path), "--liked", folders["likes"], "--disliked",
                                     folders["dislikes"], folders["a"], folders["b"]])
    assert_one_line_error(code, err, r"has no config\.json, so it is not a Hugging Face model checkpoint")


# --------------------------------------------------------------------------------------------------
# validate-data


def test_validate_data_ok_and_first_error(capsys, mini_data, tmp_path):
    bench = mini_data / "data" / "SP_ID" / "SP_ID.json"
    code, out, err = run_main(capsys, ["validate-data", str(bench), "--decode"])
    assert code == 0 and out.startswith("ok: 8 records") and "bench JSON" in out and "distinct images decoded" in out, err
    code, out, _ = run_main(capsys, ["validate-data", str(mini_data / "train" / "sft.jsonl"), "--json"])
    assert code == 0 and json.loads(out)["records"] == 24 and json.loads(out)["kind"] == "train"
    records = json.loads(bench.read_text())
    records[3]["conversations"][0]["value"] = "Image C"
    broken = bench.parent / "broken.json"
    broken.write_text(json.dumps(records))
    try:
        code, _, err = run_main(capsys, ["validate-data", str(broken)])
    finally:
        broken.unlink()
    assert_one_line_error(code, err, r"broken\.json: record 3")


@pytest.mark.slow
def test_python_dash_m_entry_point(mini_data):
    proc = subprocess.run([sys.executable, "-m", "preferthinker.cli", "validate-data", str(mini_data / "data" / "SP_OD" / "SP_OD.json")],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0 and proc.stdout.startswith("ok: 8 records"), proc.stderr
    proc = subprocess.run([sys.executable, "-m", "preferthinker.cli", "validate-data", str(mini_data / "missing.json")],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 2 and proc.stderr.strip() == f"error: file does not exist: {mini_data / 'missing.json'}"


def test_bad_device_is_refused_before_loading(capsys, ckpt, folders):
    code, _, err = run_main(capsys, ["profile", "--model", str(ckpt), "--liked", folders["likes"], "--disliked", folders["dislikes"],
                                     "--device", "gpu0"])
    assert_one_line_error(code, err, r"--device 'gpu0': use auto, cpu, cuda, cuda:N or mps")


def test_rank_candidates_folder_top_k_and_outputs(capsys, ckpt, folders, tmp_path):
    import csv

    cands = tmp_path / "outs"
    cands.mkdir()
    for k in ("a", "b", "c"):
        shutil.copy(folders[k], cands / f"{k}.png")
    (cands / "log.txt").write_text("generation log")
    out_csv, out_json = tmp_path / "best.csv", tmp_path / "best.json"
    base = ["rank", "--model", str(ckpt), "--liked", folders["likes"], "--disliked", folders["dislikes"], *TOKENS]
    code, out, err = run_main(capsys, [*base, "--candidates", str(cands), "--top-k", "2", "--out", str(out_csv), "--out", str(out_json)])
    assert code == 0, err
    assert "(top 2 of 3 shown)" in out and f"wrote {out_csv}" in out
    assert "skipped1non-imageentry(log.txt)" in "".join(out.split())  # the note wraps at the terminal width (maybe at the hyphen)
    rows = list(csv.DictReader(out_csv.open(encoding="utf-8")))
    assert [r["rank"] for r in rows][:1] == ["1"] and len(rows) == 2 and set(rows[0]) >= {"candidate", "score", "probability", "rationale"}
    doc = json.loads(out_json.read_text())
    assert doc["command"] == "rank" and len(doc["ranking"]) == 2 and len(doc["candidates"]) == 3 and doc["timing"]["pairs"] == 3
    # a glob works the same way
    code, out, err = run_main(capsys, [*base, "--candidates", str(cands / "*.png"), "--json"])
    assert code == 0 and len(json.loads(out)["ranking"]) == 3, err


def test_rank_bad_candidates(capsys, ckpt, folders, tmp_path):
    base = ["rank", "--model", str(ckpt), "--liked", folders["likes"], "--disliked", folders["dislikes"], *TOKENS]
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_main(capsys, [*base, "--candidates", str(empty)])
    assert_one_line_error(code, err, r"candidates: folder .*empty contains no image files \(it is empty\)")
    code, _, err = run_main(capsys, base)
    assert_one_line_error(code, err, r"no candidates: pass image files, or a folder / quoted glob with --candidates")
    code, _, err = run_main(capsys, [*base, "--candidates", folders["a"]])
    assert_one_line_error(code, err, r"rank needs at least two candidates, got 1 \(.*SP_ID0_good.png\)")
    code, _, err = run_main(capsys, [*base, "--candidates", str(tmp_path / "*.webp")])
    assert_one_line_error(code, err, r"--candidates: no file matches the pattern")
    code, _, err = run_main(capsys, [*base, folders["a"], folders["b"], "--top-k", "0"])
    assert_one_line_error(code, err, r"--top-k must be >= 1, got 0")
    code, _, err = run_main(capsys, [*base, folders["a"], folders["b"], "--out", str(tmp_path / "nope" / "r.csv")])
    assert_one_line_error(code, err, r"--out .*r.csv: the folder .*nope does not exist")
    text = tmp_path / "fake.png"
    text.write_text("not a png")
    code, _, err = run_main(capsys, [*base, folders["a"], str(text)])
    assert_one_line_error(code, err, r"cannot read .*fake.png as an image")


def test_assess_prints_the_probability(capsys, ckpt, folders):
    code, out, err = run_main(capsys, ["assess", "--model", str(ckpt), "--liked", folders["likes"], "--disliked", folders["dislikes"],
                                       folders["a"], folders["b"], *TOKENS])
    assert code == 0 and "P(Image A preferred) = " in out and "both orders" in out, err
    code, out, err = run_main(capsys, ["assess", "--model", str(ckpt), "--liked", folders["likes"], "--disliked", folders["dislikes"],
                                       folders["a"], folders["b"], "--json", *TOKENS])
    doc = json.loads(out)
    assert 0 <= doc["probability"] <= 1 and doc["calibrated"] is False and doc["status"] in ("ok", "from_swapped_order", "retried", "no_answer")
    # no readable answer in any attempt: no preferred image is claimed (the untrained tiny model usually lands here)
    assert doc["preferred"] in ("Image A", "Image B") if doc["status"] != "no_answer" else doc["preferred"] is None


def test_assess_json_carries_status_and_every_attempt(capsys, ckpt, folders, monkeypatch):
    """A model that never writes a readable answer (scripted): --json says status no_answer, keeps each raw
    text, and --retries bounds the attempts; the readable output says the same in words."""
    from preferthinker.evaluation.generate import Generator

    monkeypatch.setattr(Generator, "generate_scored", lambda self, batch, progress=None: [("<think>hmm", None)] * len(batch))
    base = ["assess", "--model", str(ckpt), "--liked", folders["likes"], "--disliked", folders["dislikes"], folders["a"], folders["b"], *TOKENS]
    code, out, err = run_main(capsys, [*base, "--json", "--retries", "3"])
    assert code == 0, err
    doc = json.loads(out)
    assert doc["status"] == "no_answer" and doc["answer"] is None and doc["preferred"] is None and doc["preferred_image"] is None
    assert len(doc["attempts"]) == 5 and all(a["raw"] == "<think>hmm" for a in doc["attempts"])
    assert any("after both orders and 3 sampled retries" in n for n in doc["notes"])
    code, out, err = run_main(capsys, [*base, "--retries", "0", "--show-raw"])
    assert code == 0 and "status: no_answer (no readable answer in 2 attempts" in out and "--- raw response ---" in out
    code, _, err = run_main(capsys, [*base, "--retries", "-1"])
    assert_one_line_error(code, err, r"retries must be an integer in 0\.\.16")
    code, out, err = run_main(capsys, ["profile", "--model", str(ckpt), "--liked", folders["likes"], "--disliked", folders["dislikes"],
                                       "--retries", "1", "--json", *TOKENS])
    doc = json.loads(out)
    assert code == 0 and doc["status"] == "no_answer" and doc["attempts"] == ["<think>hmm"] * 2 and doc["preference"] is None
