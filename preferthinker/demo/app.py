"""The Gradio page of ``preferthinker serve``: three upload boxes, one button, the results of
``logic.run_demo``. Fully offline: no analytics, system fonts only (the default theme fetches Google
Fonts), no share link, bound to localhost unless ``--host`` says otherwise.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from preferthinker.demo import require_gradio
from preferthinker.demo.logic import DEMO_MAX_CANDIDATES, run_demo

log = logging.getLogger("preferthinker.demo")

INTRO = """# PreferThinker: personalized image preference
Upload a few images the user **likes** and **dislikes**, and two or more **candidates**. The model predicts
the user's visual preference profile, scores every candidate on five elements with a rationale, and ranks
them (each pair judged in both orders). *Load an example user* fills the boxes with synthetic images."""


def example_user(folder: Path, seed: int = 7) -> dict[str, list[str]]:
    """Render a synthetic user (3 liked, 3 disliked) and 3 candidates with the project's own renderer,
    so the demo can be tried with no images at hand and no network."""
    import numpy as np

    from preferthinker.data.synthetic.render import random_profile, render_image

    rng = np.random.default_rng(seed)
    liked_p, disliked_p = random_profile(rng), random_profile(rng)
    out: dict[str, list[str]] = {"liked": [], "disliked": [], "candidates": []}
    plan = [("liked", liked_p, 3), ("disliked", disliked_p, 3)]
    for side, prof, n in plan:
        for k in range(n):
            path = folder / f"{side}_{k + 1}.png"
            render_image(1000 + 10 * k + (side == "disliked"), prof, 112).save(path)
            out[side].append(str(path))
    mixed = {**disliked_p, "Color": liked_p["Color"]}
    for k, prof in enumerate((liked_p, disliked_p, mixed)):
        path = folder / f"candidate_{k + 1}.png"
        render_image(2000 + k, prof, 112).save(path)
        out["candidates"].append(str(path))
    return out


def build_demo(assessor: Any, *, max_upload_mb: float = 20.0, max_candidates: int = DEMO_MAX_CANDIDATES):
    """The Blocks app (not launched)."""
    gr = require_gradio()
    examples = Path(tempfile.mkdtemp(prefix="preferthinker_demo_"))

    def on_run(liked, disliked, candidates):
        r = run_demo(assessor, liked, disliked, candidates, max_upload_mb=max_upload_mb, max_candidates=max_candidates)
        return r.status, r.verdict, r.profile_rows, r.scores, r.ranking_rows, r.gallery

    def on_example():
        ex = example_user(examples)
        return ex["liked"], ex["disliked"], ex["candidates"]

    with gr.Blocks(title="PreferThinker demo", analytics_enabled=False) as demo:
        gr.Markdown(INTRO)
        with gr.Row():
            liked = gr.File(label="Liked references", file_count="multiple", elem_id="liked")
            disliked = gr.File(label="Disliked references", file_count="multiple", elem_id="disliked")
            cands = gr.File(label=f"Candidates (2 to {max_candidates})", file_count="multiple", elem_id="candidates")
        with gr.Row():
            example = gr.Button("Load an example user", elem_id="example")
            run = gr.Button("Assess and rank", variant="primary", elem_id="run")
        status = gr.Markdown(elem_id="status")
        verdict = gr.Markdown(elem_id="verdict")
        with gr.Row():
            profile = gr.Dataframe(headers=["Element", "Preference", "Non-preference"], label="Predicted profile",
                                   interactive=False, elem_id="profile")
            ranking = gr.Dataframe(headers=["Rank", "Candidate", "Wins", "P(win)", "Mean total"], label="Ranking",
                                   interactive=False, elem_id="ranking")
        gallery = gr.Gallery(label="Candidates, best first", columns=6, height="auto", object_fit="contain", elem_id="gallery")
        scores = gr.Markdown(elem_id="scores")
        example.click(on_example, outputs=[liked, disliked, cands])
        run.click(on_run, inputs=[liked, disliked, cands], outputs=[status, verdict, profile, scores, ranking, gallery])
    demo.example_dir = examples  # launch() must allow serving the rendered example files
    return demo


def serve(assessor: Any, *, host: str = "127.0.0.1", port: int = 7860, max_upload_mb: float = 20.0,
          block: bool = True):
    """Build and launch the demo; returns the Blocks object (``block=False`` keeps serving in a thread)."""
    gr = require_gradio()
    demo = build_demo(assessor, max_upload_mb=max_upload_mb)
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    demo.queue(default_concurrency_limit=1)  # one model, one request at a time
    # Gradio refuses larger uploads before they reach us, with its own message on the page; run_demo
    # checks the size again for clients of the HTTP API
    demo.launch(server_name=host, server_port=port or None, share=False, inbrowser=False, show_error=False,
                max_file_size=f"{int(max_upload_mb * 1024)}kb", allowed_paths=[str(demo.example_dir)], theme=theme,
                prevent_thread_lock=not block, quiet=False, ssr_mode=False, footer_links=[], pwa=False, mcp_server=False)
    return demo
