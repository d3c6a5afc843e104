"""docs/evaluation.md "Reproduce the paper's tables": its command block runs as written (the scratch folder moved
to a temporary one) against local stand-ins in the official layouts, with the tiny model in place of the 7B."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

import pytest

from tests.conftest import REPO


def _commands() -> list[str]:
    doc = (REPO / "docs" / "evaluation.md").read_text()
    section = doc[doc.index("## 9. Reproduce the paper's tables"):]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL).group(1)
    return [c.strip() for c in block.replace("\\\n", " ").splitlines() if c.strip() and not c.strip().startswith("#")]


@pytest.mark.slow
def test_reproduce_section_runs_as_written(tmp_path):
    commands = _commands()
    assert [c.split()[1] for c in commands] == ["scripts/make_data.py", "scripts/make_official_fixture.py", "scripts/eval.py"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for cmd in commands:
        argv = [sys.executable if a == "python" else a for a in shlex.split(cmd.replace("/tmp/pt_repro", str(tmp_path)))]
        out = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
        assert out.returncode == 0, f"{cmd}\n{out.stderr[-3000:]}"
    snapshot = next((tmp_path / "hub" / "datasets--ZhouSimple--PreferImg-Bench" / "snapshots").iterdir())
    assert (snapshot / "data" / "SP_ID" / "SP_ID.json").is_symlink()
    res = json.loads((tmp_path / "table1" / "results.json").read_text())
    assert set(res["subsets"]) == {"SP_ID", "SP_OD", "MP_ID", "MP_OD", "PICKAPIC"}
    assert res["prompt"]["vision_ids"] is True and res["prompt"]["system"] == "official_eval"
    assert res["generation"]["repetition_penalty"] == 1.15 and "Base model" in res["systems"]
    assert all(e["n_errors"] == 0 for e in res["errors"].values())
    assert all(res["subsets"][s]["n"] >= 4 for s in res["subsets"])
