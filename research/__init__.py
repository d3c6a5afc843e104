"""Research probes and one-off experiments: outside the preferthinker package and its CI (see README.md here)."""
