"""A browser on another origin follows /api/events with EventSource and `?access_token=`: a page
served from 127.0.0.1:<page port> shows a task that a second client creates through the API.
Headless Chromium from the distribution (/usr/bin/chromium); skipped without it (failed under CI)."""
import json
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from conftest import TEST_SECRET, mint_token, unavailable
from live_server import LiveServer, free_port

pytestmark = pytest.mark.slow
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"

PAGE = """<!doctype html>
<html><body><p id="status">connecting</p><ul id="tasks"></ul>
<script>
  const source = new EventSource(API + "/api/events?access_token=" + encodeURIComponent(TOKEN));
  source.onopen = () => { document.getElementById("status").textContent = "open"; fetch("/report/open", {method: "POST"}); };
  source.onerror = () => fetch("/report/error", {method: "POST", body: String(source.readyState)});
  source.addEventListener("task.created", (event) => {
    const change = JSON.parse(event.data);
    const item = document.createElement("li");
    item.textContent = change.data.title;
    document.getElementById("tasks").append(item);
    fetch("/report/change", {method: "POST", body: JSON.stringify({id: event.lastEventId, title: item.textContent})});
  });
</script></body></html>
"""


class PageServer:
    """The frontend's origin: serves the page and takes its reports."""

    def __init__(self, port: int, api_url: str, token: str):
        self.port = port
        self.origin = f"http://127.0.0.1:{self.port}"
        self.reports: queue.Queue = queue.Queue()
        page = f"<script>const API = {json.dumps(api_url)}; const TOKEN = {json.dumps(token)};</script>" + PAGE
        reports = self.reports

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = page.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                reports.put((self.path.rsplit("/", 1)[-1], self.rfile.read(length).decode()))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def next_report(self, timeout: float) -> tuple[str, str]:
        try:
            return self.reports.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the page reported nothing within {timeout} s") from None

    def close(self) -> None:
        self.server.shutdown()


def start_chromium(url: str, profile: str) -> subprocess.Popen:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--no-first-run", "--disable-extensions", f"--user-data-dir={profile}", url]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def test_a_page_on_another_origin_sees_a_change_made_by_a_second_client(scratch_database):
    if not os.path.exists(CHROMIUM):
        unavailable(f"Chromium is not installed at {CHROMIUM}")
    user_id = f"browser_{uuid.uuid4().hex[:10]}"
    token = mint_token(user_id)
    page_port = free_port()  # the page's origin must be in CORS_ORIGINS before the API starts
    origin = f"http://127.0.0.1:{page_port}"
    with LiveServer(scratch_database("sqlite"), secret=TEST_SECRET, workers=2, env={"CORS_ORIGINS": origin}) as api:
        page = PageServer(page_port, api.url, token)
        profile = tempfile.mkdtemp(prefix="chromium-")
        browser = start_chromium(page.origin + "/", profile)
        try:
            kind, body = page.next_report(timeout=30)
            assert kind == "open", (kind, body)
            created = httpx.post(f"{api.url}/api/tasks", json={"title": "made in another tab"},
                                 headers={"Authorization": f"Bearer {token}"}).json()
            kind, body = page.next_report(timeout=5)
            assert kind == "change", (kind, body)
            assert json.loads(body)["title"] == created["title"]
        finally:
            os.killpg(browser.pid, signal.SIGKILL)
            browser.wait(10)
            page.close()
            shutil.rmtree(profile, ignore_errors=True)
        assert token.split(".")[2] not in api.output()  # the ?access_token= is not logged

