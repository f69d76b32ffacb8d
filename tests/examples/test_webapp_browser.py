"""The web app driven in a real headless browser: Debian's chromium through Playwright.

Skipped when chromium (``make browser-deps``) or the ``playwright`` package is missing;
never downloads a browser (``playwright install`` is not used).
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.examples.test_webapp import webapp

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason="chromium is not installed (make browser-deps)"),
]


def test_upload_photo_then_text_file_in_the_browser(image_base_path: str, jpeg_path: str, tmp_path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright==1.65.2")
    from tests.serverutil import model, running_server

    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo\n")
    with running_server([model("tiny_classifier", image_base_path)], rest=False) as server:
        with webapp(f"127.0.0.1:{server.grpc_port}") as base, sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM)
            try:
                page = browser.new_page()
                page.goto(base + "/")
                page.set_input_files("#file", jpeg_path)
                page.click("#go")
                page.wait_for_function("document.getElementById('json').textContent.includes('predictions')")
                assert '"model_name": "tiny_classifier"' in page.text_content("#json")
                assert page.locator("#result li").count() == 3
                assert page.text_content("#error") == ""

                page.set_input_files("#file", str(notes))
                page.click("#go")
                page.wait_for_function("document.getElementById('error').textContent.length > 0")
                assert "not an image" in page.text_content("#error")
                assert page.locator("#result li").count() == 0
            finally:
                browser.close()
