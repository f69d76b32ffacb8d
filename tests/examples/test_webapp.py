"""The upload web app, run as its own process in front of a real model server."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from typing import Iterator

import pytest

from tests.conftest import free_port, wait_until
from tests.examples.conftest import REPO


def _get(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except OSError:
        return None


@contextlib.contextmanager
def webapp(model_server: str, model_name: str = "tiny_classifier") -> Iterator[str]:
    """Start ``python -m examples.webapp.app`` on a free port; yield its base URL."""
    port = free_port()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    process = subprocess.Popen(
        [sys.executable, "-m", "examples.webapp.app", f"--port={port}", f"--model_server={model_server}",
         f"--model_name={model_name}", "--timeout=20"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _get(base + "/healthz") == 200 or process.poll() is not None, timeout=30,
                   message="webapp /healthz")
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def upload(base: str, filename: str, data: bytes, content_type: str = "application/octet-stream") -> tuple[int, dict]:
    """POST ``data`` as the multipart file field ``image``; return (status, JSON body)."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(base + "/classify", body,
                                     {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_upload_photo_text_file_and_page(image_base_path: str, jpeg_path: str) -> None:
    from tests.serverutil import model, running_server

    with open(jpeg_path, "rb") as f:
        photo = f.read()
    with running_server([model("tiny_classifier", image_base_path)], rest=False) as server:
        with webapp(f"127.0.0.1:{server.grpc_port}") as base:
            status, answer = upload(base, "gradient.jpg", photo, "image/jpeg")
            assert status == 200, answer
            assert answer["model_name"] == "tiny_classifier"
            [prediction] = answer["predictions"]
            assert prediction["file"] == "gradient.jpg" and len(prediction["classes"]) == 3

            status, answer = upload(base, "notes.txt", b"just some text\n", "text/plain")
            assert status == 400
            assert "not an image" in answer["error"]

            # Looks like a JPEG, is not one: the model's decoder refuses it (INVALID_ARGUMENT).
            status, answer = upload(base, "broken.jpg", b"\xff\xd8\xff" + b"\x00" * 64, "image/jpeg")
            assert status == 400, answer
            assert "could not read broken.jpg" in answer["error"]

            with urllib.request.urlopen(base + "/", timeout=5) as response:
                page = response.read().decode()
            assert 'type="file"' in page and "tiny_classifier" in page


def test_model_server_down_gives_503(jpeg_path: str) -> None:
    with open(jpeg_path, "rb") as f:
        photo = f.read()
    with webapp(f"127.0.0.1:{free_port()}") as base:
        status, answer = upload(base, "gradient.jpg", photo, "image/jpeg")
    assert status == 503
    assert "not reachable" in answer["error"]


@pytest.mark.parametrize("data", [b"", b"\xff\xd8\xff broken jpeg"])
def test_image_format_sniffing(data: bytes) -> None:
    from examples.webapp.app import image_format

    assert image_format(data) == ("JPEG" if data else None)
