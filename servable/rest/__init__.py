"""TF Serving's HTTP/REST API (aiohttp) over ``servable.serving.ServingService``.

``json_text`` (parsing/printing JSON as TF Serving does), ``json_tensor`` (one JSON value
<-> one array) and ``json_codec`` (request/response documents) need no aiohttp;
``app.create_app(service, RestOptions, server)`` builds the aiohttp application.
``RestOptions`` and ``create_app`` are importable from here lazily, so importing the
codecs never imports aiohttp.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RestOptions", "create_app"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from servable.rest import app

        return getattr(app, name)
    raise AttributeError(f"module 'servable.rest' has no attribute {name!r}")
