"""Runnable walk-throughs (``python -m examples.<name>.<script>`` from the repository root)."""
