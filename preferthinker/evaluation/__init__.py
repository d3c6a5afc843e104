"""Evaluation: per-sample prediction records -> metrics (``metrics``) -> results.json / results.md / plots (``report``)."""
