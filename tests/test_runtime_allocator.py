"""runtime.tune_allocator: glibc malloc thresholds set by every entry point (run_entry, the CLI).

The speed it buys is a benchmark (docs/benchmarks.md, "glibc's malloc thresholds"); here: it applies on glibc, its opt-outs
work, and it does what it is for, i.e. memory freed by one training step is reused by the next without page faults."""

import json
import os
import platform
import subprocess
import sys

import pytest

from preferthinker import runtime

GLIBC = sys.platform == "linux" and platform.libc_ver()[0] == "glibc"

# 16 tensors of 8 MiB live at once, then all freed, twelve times: the shape of a step's activations. Prints the page
# faults of the last nine rounds (the first ones map the memory in any case). With glibc's defaults the outcome
# depends on the process's luck: in five runs of it, three settled at 0 faults a round after the third and two
# faulted all 128 MiB back in every round (32,736 a round), the history-dependent slowdown seen in the SFT phases.
_PROBE = r"""
import json, resource, sys
import torch
state = {"applied": False}
if sys.argv[1] == "tuned":
    from preferthinker.runtime import tune_allocator
    state = tune_allocator()
torch.set_num_threads(1)
def round_():
    bufs = [torch.ones(2 << 20) for _ in range(16)]
    del bufs
for _ in range(3):
    round_()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(9):
    round_()
print(json.dumps({"state": state, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0}))
"""


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "LD_PRELOAD", "PT_MALLOC_TUNING")}
    env.update(extra)
    return env


def _probe(arm: str, **env: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _PROBE, arm], env=_clean_env(**env), capture_output=True, text=True,
                         timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
@pytest.mark.parametrize("attempt", range(3))
def test_tuned_allocator_reuses_freed_step_memory(attempt):
    tuned = _probe("tuned")
    assert tuned["state"] == {"applied": True, "mmap_threshold": 32 << 20, "trim_threshold": 1 << 30, "top_pad": 256 << 20}
    # the pathology is every round faulting all 128 MiB back in (32,736 faults a round, ~295k over the nine); tuned, 3 of
    # 37 probes on the ninth/tenth sessions' machine faulted one 8 MiB buffer back in once (2,048-2,049), the rest 0
    assert tuned["faults"] < 8_192, tuned


@pytest.mark.parametrize("env, reason", [
    ({"PT_MALLOC_TUNING": "0"}, "PT_MALLOC_TUNING=0"),
    ({"MALLOC_ARENA_MAX": "2"}, "the environment sets MALLOC_ARENA_MAX"),
    ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"}, "the environment sets GLIBC_TUNABLES"),
    ({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}, "LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"),
])
def test_users_own_allocator_settings_win(monkeypatch, env, reason):
    for k in ("PT_MALLOC_TUNING", "MALLOC_ARENA_MAX", "GLIBC_TUNABLES", "LD_PRELOAD", "MALLOC_MMAP_THRESHOLD_",
              "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert runtime.tune_allocator() == {"applied": False, "reason": reason}


def test_not_glibc_is_skipped_with_the_reason(monkeypatch):
    monkeypatch.delenv("PT_MALLOC_TUNING", raising=False)
    monkeypatch.setattr(sys, "platform", "darwin")
    for k in ("MALLOC_ARENA_MAX", "GLIBC_TUNABLES", "LD_PRELOAD"):
        monkeypatch.delenv(k, raising=False)
    state = runtime.tune_allocator()
    assert state["applied"] is False and state["reason"].startswith("not glibc (darwin")


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_entry_points_log_what_they_set(tmp_path):
    """run_entry tunes before the recipe runs and setup_run writes it into the run's log."""
    code = ("from omegaconf import OmegaConf\n"
            "from preferthinker.runtime import run_entry, setup_run\n"
            f"run_entry(lambda cfg: setup_run(cfg, 'x'), OmegaConf.create({{'run_dir': {str(tmp_path)!r}}}))\n")
    subprocess.run([sys.executable, "-c", code], env=_clean_env(), check=True, timeout=120, capture_output=True)
    assert "glibc malloc: applied=True, mmap_threshold=33554432" in (tmp_path / "x.log").read_text()
