"""Start the model server: ``python server.py --model_name=... --model_base_path=...``.

The same as ``python -m servable.server`` and the ``servable`` console script.
"""

from servable.server import main

if __name__ == "__main__":
    raise SystemExit(main())
