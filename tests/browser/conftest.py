"""The operator console in a real browser: Playwright for Python driving Debian's Chromium
(`/usr/bin/chromium`, never a downloaded browser) against the whole system behind a real
uvicorn server. The Makefile installs Chromium and the CJK fonts when it can; without them the
browser tests are skipped here, but never in CI (CI=true): there they fail.

A failing browser test leaves a screenshot of its page in `test-artifacts/`.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

from tests.brokers import HOST, free_port
from tests.browser.program import MIN_POSTS
from tests.system import ADMIN_KEY, System

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
PHONE = {"width": 375, "height": 812}


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not (Path(CHROMIUM).exists() or shutil.which("chromium")):
        return f"{CHROMIUM} is missing (apt-get install -y chromium fonts-noto-cjk)"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing (pip install -e '.[test]')"
    return None


@pytest.fixture(scope="session")
async def browser():
    missing = browser_missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests must run in CI: {missing}")
        pytest.skip(f"browser tests skipped: {missing}")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []  # Chromium's sandbox refuses root
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        yield browser
        await browser.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
async def page(browser, request):
    """A fresh browser context at phone width (375 px); a screenshot when the test fails."""
    context = await browser.new_context(viewport=PHONE, locale="en-US")
    page = await context.new_page()
    page.set_default_timeout(15_000)
    yield page
    failed = getattr(request.node, "report_call", None)
    if failed is not None and failed.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)
        try:
            await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        except Exception as exc:  # the page may be gone with the failure; keep its message
            print(f"no screenshot: {exc!r}")
    await context.close()


@pytest.fixture
def settings_overrides():
    return {"monthly_min_quality_posts": MIN_POSTS}


@asynccontextmanager
async def served(app):
    """The app behind a real uvicorn server on a free port, in this event loop."""
    port = free_port()
    config = uvicorn.Config(
        app, host=HOST, port=port, lifespan="off", log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    try:
        yield f"http://{HOST}:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@dataclass
class Console:
    system: System  # the same system, for setting data up through the API
    url: str  # the real server's base URL

    def at(self, path: str) -> str:
        return self.url + path


@pytest.fixture
async def console(system):
    """The whole system (every API and consumer, embedded bus) behind a real uvicorn server."""
    async with served(system.runtime.create_app(manage_lifecycle=False)) as url:
        yield Console(system, url)


async def sign_in(page, console: Console, key: str = ADMIN_KEY) -> None:
    await page.goto(console.at("/ops"))
    await page.get_by_label("Admin API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
