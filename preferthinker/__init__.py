"""PreferThinker: reasoning-based personalized image preference assessment.

The spine of the package is the response contract: ``prompting`` builds the official prompt,
``response`` parses and renders the official predict-then-assess answer. Everything else
(data engine, training, rewards, evaluation, the Assessor) goes through those two modules.
"""

__version__ = "0.1.0"

__all__ = ["Assessor", "Assessment", "PersonalReward", "Verdict", "make_dpo_pairs", "parse_response", "render_response", "__version__"]


def __getattr__(name: str):
    # Lazy imports keep `import preferthinker` cheap (no torch / transformers at import time).
    if name in ("Assessment", "parse_response", "render_response"):
        from preferthinker import response

        return getattr(response, name)
    if name in ("Assessor", "Verdict"):
        from preferthinker import assess

        return getattr(assess, name)
    if name in ("PersonalReward", "make_dpo_pairs"):
        from preferthinker import reward_api

        return getattr(reward_api, name)
    raise AttributeError(f"module 'preferthinker' has no attribute {name!r}")
