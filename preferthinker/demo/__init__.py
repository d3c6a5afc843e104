"""The local web demo (``preferthinker serve``): Gradio UI in ``app.py``, its logic in ``logic.py``.

Gradio is an optional extra (``pip install -e ".[demo]"``); ``require_gradio`` says so clearly instead of
an ImportError traceback. Importing this package does not import Gradio.
"""

from __future__ import annotations

import os


class DemoUnavailable(RuntimeError):
    """The [demo] extra (Gradio) is not installed."""


def require_gradio():
    """Import Gradio with telemetry off (the demo must work fully offline), or explain how to install it."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no usage pings to gradio.app
    os.environ.setdefault("GRADIO_TELEMETRY_ENABLED", "False")
    try:
        import gradio
    except ImportError as e:
        raise DemoUnavailable(f"the web demo needs Gradio, which is not installed ({e}). Install the demo extra: "
                              "pip install -e \".[demo]\"") from None
    return gradio
