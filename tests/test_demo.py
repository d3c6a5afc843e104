"""The web demo: its logic on the tiny model (every bad upload is a sentence, never an exception), the
CLI's message without Gradio, and a real headless browser that uploads, clicks and reads the verdict."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.test_assess import make_checkpoint

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny_model) -> Path:
    return make_checkpoint(tiny_model, tmp_path_factory.mktemp("demo_run"))


@pytest.fixture(scope="module")
def assessor(ckpt):
    from preferthinker.assess import Assessor

    return Assessor.from_pretrained(ckpt, device="cpu", max_new_tokens=8)


@pytest.fixture(scope="module")
def images(mini_data) -> dict:
    d = mini_data / "data" / "SP_ID" / "images"
    return {"liked": [str(d / f"SP_ID0_p{k}.png") for k in range(2)], "disliked": [str(d / f"SP_ID0_n{k}.png") for k in range(2)],
            "cands": [str(d / "SP_ID0_good.png"), str(d / "SP_ID0_bad.png")]}


def test_run_demo_fills_every_section(assessor, images):
    from preferthinker.demo.logic import run_demo

    r = run_demo(assessor, images["liked"], images["disliked"], images["cands"])
    assert r.ok and r.status.startswith("Assessed 2 candidates: 2 generations")
    assert "P(Image A preferred) = " in r.verdict and "SP_ID0_good.png" in r.verdict
    assert [row[0] for row in r.profile_rows] == ["Art Styles", "Color", "Artistic Medium", "Saturation", "Detail"]
    assert sorted(row[1] for row in r.ranking_rows) == ["SP_ID0_bad.png", "SP_ID0_good.png"]
    assert "Candidate 1: SP_ID0_good.png" in r.scores and len(r.gallery) == 2
    assert "<answer>" not in r.status  # notes are escaped, so Markdown does not swallow them as HTML tags


def test_bad_uploads_are_sentences(assessor, images, tmp_path):
    from preferthinker.demo.logic import run_demo

    text = tmp_path / "notes.png"
    text.write_text("not an image")
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * (2 * 2**20))
    cases = [
        ((images["liked"], [], images["cands"]), "at least one disliked reference"),
        (([], [], images["cands"]), "at least one liked and disliked reference"),
        ((images["liked"], images["disliked"], images["cands"][:1]), "two or more candidate images to compare (got 1)"),
        ((images["liked"], images["disliked"], [images["cands"][0], str(text)]), "cannot read"),
        ((images["liked"], images["disliked"], [images["cands"][0], str(big)]), "big.png is 2.0 MB; the limit is 1 MB"),
        ((images["liked"], images["disliked"], [str(tmp_path / "gone.png")] * 2), "did not arrive"),
        ((images["liked"], images["disliked"], images["cands"] * 4), "8 candidates would need 56 generations"),
    ]
    for args, message in cases:
        r = run_demo(assessor, *args, max_upload_mb=1)
        assert not r.ok and message in r.status and r.status.startswith("⚠️"), (message, r.status)


def test_example_user_renders_offline(tmp_path):
    from PIL import Image

    from preferthinker.demo.app import example_user

    ex = example_user(tmp_path)
    assert [len(ex[k]) for k in ("liked", "disliked", "candidates")] == [3, 3, 3]
    assert Image.open(ex["candidates"][0]).size == (112, 112)


def test_serve_without_gradio_says_how_to_install(capsys, ckpt, monkeypatch):
    from preferthinker.cli import main

    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ImportError
    assert main(["serve", "--model", str(ckpt), "--device", "cpu"]) == 2
    assert 'pip install -e ".[demo]"' in capsys.readouterr().err
    assert main(["serve", "--model", str(ckpt), "--port", "70000"]) == 2
    assert "--port must be 0..65535" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"the demo server exited with code {proc.returncode}:\n{proc.stdout.read()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"the demo server did not answer at {url} within {timeout:.0f} s")


@pytest.mark.slow
def test_browser_uploads_clicks_and_reads_the_verdict(ckpt, images, tmp_path):
    pytest.importorskip("gradio", reason="the demo extra is not installed (pip install -e '.[demo]')")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[demo]')")
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium chromium-driver); CI installs it")
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, "-m", "preferthinker.cli", "serve", "--model", str(ckpt), "--device", "cpu",
                             "--port", str(port), "--max-new-tokens", "8", "--max-upload-mb", "1"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    text = tmp_path / "readme.png"
    text.write_text("this is not an image")
    try:
        _wait_http(f"http://127.0.0.1:{port}/", proc)
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1300})
            outside = []  # fully offline: no CDN, fonts or analytics requested by the page
            page.on("request", lambda req: outside.append(req.url) if not req.url.startswith(("http://127.0.0.1", "data:", "blob:")) else None)
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("#run")
            page.set_input_files("#liked input[type=file]", images["liked"])
            page.set_input_files("#disliked input[type=file]", images["disliked"])
            page.set_input_files("#candidates input[type=file]", images["cands"])
            page.wait_for_timeout(1500)  # the upload round trip
            page.click("#run")
            page.wait_for_function("document.querySelector('#verdict').innerText.includes('P(Image A preferred)')", timeout=120_000)
            verdict = page.inner_text("#verdict")
            assert "Image A = SP_ID0_good.png" in verdict and "P(Image A preferred) = " in verdict
            assert "Assessed 2 candidates" in page.inner_text("#status")
            assert "SP_ID0_bad.png" in page.inner_text("#ranking")
            page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
            # a text file as a candidate: a sentence on the page, no traceback
            page.set_input_files("#candidates input[type=file]", [images["cands"][0], str(text)])
            page.wait_for_timeout(1500)
            page.click("#run")
            page.wait_for_function("document.querySelector('#status').innerText.includes('⚠')", timeout=60_000)
            status = page.inner_text("#status")
            assert "cannot read" in status and "readme.png" in status and "Traceback" not in page.content()
            # a file above --max-upload-mb is refused at upload, with a message on the page
            big = tmp_path / "huge.png"
            big.write_bytes(b"\0" * (2 * 2**20))
            page.set_input_files("#liked input[type=file]", [str(big)])
            page.wait_for_function("document.body.innerText.includes('exceed the maximum allowed size')", timeout=30_000)
            assert "huge.png" in page.inner_text("body") and "Traceback" not in page.content()
            browser.close()
        assert outside == [], f"the demo page requested outside resources: {outside[:5]}"
        shot = os.environ.get("PT_DEMO_SCREENSHOT")  # the docs screenshot is taken with a trained checkpoint
        if shot:
            shutil.copy(tmp_path / "demo.png", shot)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
