"""PreferThinker: reasoning-based personalized image preference assessment.

The spine of the package is the response contract: ``prompting`` builds the official prompt,
``response`` parses and renders the official predict-then-assess answer. Everything else
(data engine, training, rewards, evaluation, the Assessor) goes through those two modules.
"""

__version__ = "0.1.0"

__all__ = ["Assessor", "Assessment", "parse_response", "render_response", "__version__"]


def __getattr__(name: str):
    # Lazy imports keep `import preferthinker` cheap (no torch / transformers at import time).
    if name in ("Assessment", "parse_response", "render_response"):
        from preferthinker import response

        return getattr(response, name)
    if name == "Assessor":
        from preferthinker.assess import Assessor

        return Assessor
    raise AttributeError(f"module 'preferthinker' has no attribute {name!r}")
