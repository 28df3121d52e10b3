"""Driving the page as a person would: the server on a free port in a thread, and Debian's chromium under
playwright (which must not download a browser of its own). Used by the end-to-end tests and by
`python -m web.browser docs/page.png`, which takes the README's screenshot.
"""
from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from typing import Iterator

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
START_TIMEOUT_S = 20


def chromium_path() -> str | None:
    """Debian's chromium, if installed (apt-get install chromium)."""
    return CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")


@contextlib.contextmanager
def running_server() -> Iterator[str]:
    """`fitplan serve` on a free port in a background thread; yields its address, stops it after."""
    from web.server import serve

    started: dict = {}
    ready = threading.Event()

    def note(url: str, server) -> None:
        started.update(url=url, server=server)
        ready.set()

    thread = threading.Thread(target=serve, kwargs={"open_browser": False, "ready": note}, daemon=True)
    thread.start()
    if not ready.wait(START_TIMEOUT_S):
        raise RuntimeError("the server did not start")
    server = started["server"]
    while not server.started and thread.is_alive():
        thread.join(0.05)
    try:
        yield started["url"]
    finally:
        server.should_exit = True
        thread.join(START_TIMEOUT_S)


@contextlib.contextmanager
def browser(downloads: Path | None = None) -> Iterator:
    """A headless chromium context with a fresh profile (playwright's BrowserContext)."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="fitplan-chromium-") as profile, sync_playwright() as driver:
        context = driver.chromium.launch_persistent_context(
            profile, executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS, accept_downloads=True,
            downloads_path=str(downloads) if downloads else None, viewport={"width": 1400, "height": 1000})
        try:
            yield context
        finally:
            context.close()


def wait_until_planned(page, timeout_ms: int = 30_000) -> None:
    """Until the page has asked the API and shown its answer (or its sentence)."""
    page.locator('#status[data-state="ready"]').wait_for(timeout=timeout_ms)   # the page's CSP forbids eval


def choose(page, model: str, card: str) -> None:
    """Type part of the model's name, pick it from the suggestions, pick the card."""
    page.fill("#model", model.split("/")[-1][:8])
    page.locator(f'#model-list li[data-model="{model}"]').click()
    page.select_option("#gpu", card)
    wait_until_planned(page)


def screenshot(path: Path, model: str = "meta-llama/Llama-3.1-8B", card: str = "RTX 4090") -> None:
    """The README's picture of the page: a model planned on a card."""
    with running_server() as url, browser() as context:
        page = context.new_page()
        page.goto(url)
        wait_until_planned(page)
        choose(page, model, card)
        page.locator("#timeline-box").wait_for()
        page.screenshot(path=str(path), full_page=True)


if __name__ == "__main__":
    screenshot(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/page.png"))
