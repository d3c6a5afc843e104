"""research/paired_compare.py: --index keeps one range of each subset's samples (choose on users 100-199, report on
0-99) and refuses a malformed range or one that leaves a subset empty."""

import argparse
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("paired_compare", ROOT / "research" / "paired_compare.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _write(folder: Path, right: dict[int, bool]) -> Path:
    """One subset's predictions: sample i answered right or wrong, unswapped, one user per sample."""
    folder.mkdir(parents=True)
    rows = [{"subset": "SP_ID", "index": i, "pair_id": f"p{i}", "user_id": f"u{i}", "swapped": False, "label": "Image A",
             "answer": "Image A" if ok else "Image B"} for i, ok in right.items()]
    (folder / "SP_ID.rank0.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return folder


def test_index_range_parses_and_refuses():
    pc = _module()
    assert pc.index_range("100:200") == (100, 200)
    for bad in ("5", "a:b", "200:100", "-1:5", "3:3"):
        with pytest.raises(argparse.ArgumentTypeError, match="LO"):
            pc.index_range(bad)


def test_index_keeps_one_half_and_names_an_empty_subset(tmp_path, capsys):
    pc = _module()
    # A is right on samples 0-3 only, B on samples 4-7 only: each half's difference has one sign
    a = _write(tmp_path / "a", {i: i < 4 for i in range(8)})
    b = _write(tmp_path / "b", {i: i >= 4 for i in range(8)})
    first = pc.main([str(a), str(b), "--index", "0:4", "--n-boot", "50"])["accuracy"]
    second = pc.main([str(a), str(b), "--index", "4:8", "--n-boot", "50"])["accuracy"]
    both = pc.main([str(a), str(b), "--n-boot", "50"])["accuracy"]
    assert first["n"] == second["n"] == 4 and both["n"] == 8
    assert first["diff"] == pytest.approx(1.0) and second["diff"] == pytest.approx(-1.0) and both["diff"] == pytest.approx(0.0)
    with pytest.raises(SystemExit, match=r"no samples with index in \[8, 20\) in \['SP_ID'\]"):
        pc.main([str(a), str(b), "--index", "8:20"])
