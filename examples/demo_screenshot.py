"""Regenerate docs/demo.png: start `preferthinker serve`, load the example user in headless Chromium,
press *Assess and rank*, and screenshot the page (needs the [demo] extra and Debian's chromium).

    python examples/demo_screenshot.py --model CKPT --out docs/demo.png [--port 7865] [--max-new-tokens 512]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import urllib.request

BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", default="docs/demo.png")
    ap.add_argument("--port", default="7865")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--max-new-tokens", default=None)
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    extra = ["--max-new-tokens", args.max_new_tokens] if args.max_new_tokens else []
    proc = subprocess.Popen([sys.executable, "-m", "preferthinker.cli", "serve", "--model", args.model, "--port", args.port, *extra])
    url = f"http://127.0.0.1:{args.port}/"
    try:
        for _ in range(600):  # the model loads before the server answers
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if proc.poll() is not None:
                    return 1
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=BROWSER_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1200})
            page.goto(url)
            page.click("#example")
            time.sleep(6)  # the example files travel to the three upload boxes
            page.click("#run")
            page.wait_for_function("document.querySelector('#verdict').innerText.includes('P(Image A preferred)')", timeout=1_800_000)
            time.sleep(3)  # let the page finish its update animation
            page.screenshot(path=args.out, full_page=True)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(30)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
