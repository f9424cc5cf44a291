"""Browser fixtures: a real chromium driven by Playwright, a logged-in page, screenshots
kept under tests/e2e/artifacts/ (ignored by git), and axe-core for accessibility checks.

Playwright cannot download browsers here; the tests use Debian's chromium and skip, saying
so, when it or the playwright package is missing (`make system-deps` installs chromium).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]  # fmt: skip
ARTIFACTS = Path(__file__).parent / "artifacts"
AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"

try:
    from playwright.sync_api import Browser, BrowserContext, Page, ViewportSize, sync_playwright

    HAVE_PLAYWRIGHT = True
except ImportError:  # pragma: no cover - the dev extra installs it
    HAVE_PLAYWRIGHT = False

LAPTOP: ViewportSize = {"width": 1366, "height": 900}
TABLET: ViewportSize = {"width": 820, "height": 1180}

if not HAVE_PLAYWRIGHT or not Path(CHROMIUM).exists():
    pytest.skip(
        "browser tests need the playwright package and Debian's chromium "
        "(apt-get install chromium, or make system-deps)",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def new_context(browser: Browser, viewport: ViewportSize = LAPTOP,
                bypass_csp: bool = False) -> BrowserContext:  # fmt: skip
    """A fresh browser profile (no cookies); `bypass_csp` lets a test inject axe-core."""
    return browser.new_context(viewport=viewport, bypass_csp=bypass_csp)


def log_in(page: Page, url: str, token: str) -> None:
    """Log in through the form, as a person does, and wait for the navigation."""
    page.goto(f"{url}/ui")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Log in").click()
    page.locator("#nav:not([hidden])").wait_for()


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.add_script_tag(content=AXE.read_text())
    found: list[dict[str, Any]] = page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
        ".filter(v => v.impact === 'serious' || v.impact === 'critical')"
        ".map(v => ({id: v.id, impact: v.impact, help: v.help,"
        " nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}))"
    )
    return found
