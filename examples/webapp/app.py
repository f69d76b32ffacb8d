"""A small web app: upload a photo, get its classes back from the model server.

    python -m examples.webapp.app --port=8080 --model_server=127.0.0.1:8500 --model_name=inception

It runs in its own process (it is a client of the model server, like any application
would be) and talks to the server over gRPC with TF Serving's ``PredictionService``.

Routes:
- ``GET /``: the upload page; it posts the file with ``fetch`` and shows the answer both
  as JSON and as a readable list.
- ``POST /classify`` (multipart, file field ``image``): 200 with
  ``{"model_name", "model_version", "predictions": [{"file", "classes": [{"label", "score"}]}]}``.
  Errors are JSON ``{"error": message}``: 400 when the upload is missing or not an image,
  413 when it is too large, 503 when the model server is down or the model not loaded,
  504 when the server does not answer in time, 502 for any other server error.
- ``GET /healthz``: 200 ``{"status": "ok"}`` (the app itself, not the model server).

The gRPC channel is created once at startup on the app's event loop (``grpc.aio``) and
shared by all requests; it reconnects by itself when the model server comes back.
"""

from __future__ import annotations

import argparse
import html
import logging
from typing import Any, AsyncIterator, Sequence

import grpc
from aiohttp import web

from examples import grpc_client
from examples.image_classifier.client import build_request, parse_response

log = logging.getLogger("examples.webapp")

MAX_UPLOAD_BYTES = 10 << 20
_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
)
CONFIG = web.AppKey("config", dict)
STUB = web.AppKey("stub", object)


def image_format(data: bytes) -> str | None:
    """Name of the image format ``data`` starts with (JPEG, PNG, GIF, BMP, WebP), else None."""
    for magic, name in _SIGNATURES:
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return None


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def index(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    page = PAGE.replace("{model}", html.escape(config["model_name"]))
    return web.Response(text=page, content_type="text/html")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _read_upload(request: web.Request) -> tuple[str, bytes] | web.Response:
    if not request.content_type.startswith("multipart/"):
        return _error(400, "Send the photo as multipart/form-data in a file field named 'image'.")
    reader = await request.multipart()
    async for part in reader:
        if getattr(part, "name", None) != "image":
            continue
        data = bytearray()
        while chunk := await part.read_chunk(1 << 16):
            data.extend(chunk)
            if len(data) > MAX_UPLOAD_BYTES:
                return _error(413, f"The file is larger than {MAX_UPLOAD_BYTES >> 20} MB.")
        return part.filename or "upload", bytes(data)
    return _error(400, "No file uploaded: the form field 'image' is missing.")


async def classify(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    upload = await _read_upload(request)
    if isinstance(upload, web.Response):
        return upload
    filename, data = upload
    if not data:
        return _error(400, f"{filename} is empty.")
    if image_format(data) is None:
        return _error(400, f"{filename} is not an image: upload a JPEG, PNG, GIF, BMP or WebP photo.")
    stub = request.app[STUB]
    grpc_request = build_request(config["model_name"], [data], config["signature_name"], config["input_key"])
    try:
        response = await stub.Predict(grpc_request, timeout=config["timeout"])
    except grpc.aio.AioRpcError as error:
        return _grpc_error(error, config, filename)
    return web.json_response(parse_response(response, [filename]))


def _grpc_error(error: grpc.aio.AioRpcError, config: dict[str, Any], filename: str) -> web.Response:
    code, details = error.code(), error.details() or ""
    log.warning("Predict failed: %s: %s", code.name, details)
    if code == grpc.StatusCode.UNAVAILABLE:
        return _error(503, f"The model server at {config['model_server']} is not reachable; try again in a moment.")
    if code == grpc.StatusCode.NOT_FOUND:
        return _error(503, f"The model server has no model '{config['model_name']}' loaded yet: {details}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return _error(504, "The model server did not answer in time.")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return _error(400, f"The model could not read {filename} as an image: {details}")
    return _error(502, f"The model server failed: {code.name}: {details}")


def create_app(model_server: str, model_name: str, signature_name: str = "serving_default",
               input_key: str = "image_bytes", timeout: float = 30.0) -> web.Application:
    """Build the aiohttp application; the gRPC channel opens at startup and closes at cleanup."""
    app = web.Application(client_max_size=MAX_UPLOAD_BYTES + (1 << 20))
    app[CONFIG] = {"model_server": model_server, "model_name": model_name, "signature_name": signature_name,
                   "input_key": input_key, "timeout": timeout}

    async def grpc_channel(app: web.Application) -> AsyncIterator[None]:
        channel = grpc.aio.insecure_channel(model_server, options=grpc_client.CHANNEL_OPTIONS)
        app[STUB] = grpc_client.prediction_stub(channel)
        yield
        await channel.close()

    app.cleanup_ctx.append(grpc_channel)
    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/classify", classify)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Upload-a-photo web app in front of the model server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--model_server", default="127.0.0.1:8500", help="host:port of the server's gRPC API")
    parser.add_argument("--model_name", default="inception")
    parser.add_argument("--signature_name", default="serving_default")
    parser.add_argument("--input_key", default="image_bytes")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the model server")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(args.model_server, args.model_name, args.signature_name, args.input_key, args.timeout)
    web.run_app(app, host=args.host, port=args.port, print=lambda _: print(
        f"webapp listening on http://{args.host}:{args.port}/ (model server {args.model_server})", flush=True))
    return 0


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Classify a photo</title>
<style>
 body { font-family: system-ui, sans-serif; max-width: 42rem; margin: 2rem auto; padding: 0 1rem; }
 pre { background: #f4f4f4; padding: .75rem; overflow: auto; }
 #error { color: #b00020; }
 img { max-width: 100%; max-height: 16rem; }
</style>
</head>
<body>
<h1>Classify a photo</h1>
<p>Model: <code>{model}</code></p>
<form id="form" action="/classify" method="post" enctype="multipart/form-data">
  <input id="file" type="file" name="image" accept="image/*" required>
  <button id="go" type="submit">Classify</button>
</form>
<p id="status"></p>
<p id="error" role="alert"></p>
<img id="preview" alt="" hidden>
<ol id="result"></ol>
<pre id="json"></pre>
<script>
const form = document.getElementById("form");
const $ = (id) => document.getElementById(id);
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = $("file").files[0];
  if (!file) return;
  $("error").textContent = ""; $("result").replaceChildren(); $("json").textContent = "";
  $("status").textContent = "Classifying " + file.name + "...";
  $("preview").src = URL.createObjectURL(file); $("preview").hidden = false;
  let body;
  try {
    const response = await fetch("/classify", { method: "POST", body: new FormData(form) });
    body = await response.json();
    $("json").textContent = JSON.stringify(body, null, 2);
    if (!response.ok) { $("error").textContent = body.error || ("HTTP " + response.status); $("preview").hidden = true; }
  } catch (err) {
    $("error").textContent = "The web app did not answer: " + err;
  }
  $("status").textContent = "";
  for (const prediction of (body && body.predictions) || []) {
    for (const c of prediction.classes) {
      const item = document.createElement("li");
      item.textContent = c.label + " (" + (c.score * 100).toFixed(1) + "%)";
      $("result").appendChild(item);
    }
  }
  document.body.dataset.done = "1";
});
</script>
</body>
</html>
"""


if __name__ == "__main__":
    raise SystemExit(main())
