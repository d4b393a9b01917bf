"""The dashboard in a real headless Chromium, following a real three-node cluster.

Set ``PHX_UPDATE_SCREENSHOTS=1`` to also write ``docs/images/dashboard.png`` (the picture
in docs/monitoring.md); otherwise the screenshot only goes to the test's tmp_path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from web_agents import Meter

import phoenix_cluster as phx
from phoenix_cluster.testing import LocalCluster, free_port

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
DOCS_IMAGE = Path(__file__).resolve().parents[2] / "docs" / "images" / "dashboard.png"


async def drive(client: phx.Node, stop: asyncio.Event) -> None:
    """Calls to 60 keys spread over the cluster until told to stop (calls to a killed
    node fail until the cluster routes around it: that is expected here)."""
    i = 0
    while not stop.is_set():
        await asyncio.gather(*(client.ref(Meter, f"d{(i + j) % 60}").add(1)
                               for j in range(20)), return_exceptions=True)
        i += 20
        await asyncio.sleep(0.01)  # leave the loop to the test between batches


@contextlib.asynccontextmanager
async def load(client: phx.Node) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(drive(client, stop))
    try:
        yield
    finally:
        stop.set()
        await task


@pytest.fixture
def chromium() -> str:
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (apt-get install chromium; "
                    "scripts/ensure-system-deps.sh does it)")
    return CHROMIUM


async def test_dashboard_shows_members_charts_and_events(tmp_path: Path, chromium: str) -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    http = f"127.0.0.1:{free_port()}"
    cluster = LocalCluster(nodes=3, imports=["web_agents"])
    cluster.nodes[0].extra_args = ["--http", http]
    async with cluster, playwright_api.async_playwright() as pw:
        client = await cluster.client()
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            # The page's CSP forbids eval; Playwright's waits need it, the page does not.
            context = await browser.new_context(viewport={"width": 1360, "height": 960},
                                                bypass_csp=True)
            page = await context.new_page()
            await page.goto(f"http://{http}/")
            # Every member is listed with its state (and the client, which hosts nothing).
            await page.wait_for_function(
                "document.querySelectorAll('#members tr[data-role=member]').length === 3")
            names = await page.locator("#members tr[data-role=member]").evaluate_all(
                "rows => rows.map(r => r.dataset.member)")
            assert names == ["node-0", "node-1", "node-2"]
            assert await page.locator(f"#members tr[data-member={client.name}]").count() == 1
            await page.wait_for_function(
                "[...document.querySelectorAll('#members .status')]"
                ".every(s => s.textContent === 'alive')", timeout=10_000)
            assert await page.locator("#node-name").inner_text() == "node-0"
            async with load(client):
                # The message-rate and latency charts move once calls arrive.
                await page.wait_for_function(
                    "Number(document.getElementById('chart-rate').dataset.last) > 0",
                    timeout=20_000)
                await page.wait_for_function(
                    "Number(document.getElementById('chart-latency').dataset.last) > 0",
                    timeout=20_000)
                # Agents per member come from each member's own answer.
                await page.wait_for_function(
                    "[...document.querySelectorAll('#members tr[data-role=member] td:last-child')]"
                    ".every(td => Number(td.textContent) > 0)", timeout=20_000)
                # The agents table lists them from every member; a row shows its state.
                await page.fill("#agents-kind", "web.meter")
                await page.click("#agents-form button")
                await page.wait_for_function(
                    "document.querySelectorAll('#agents tbody tr').length > 0",
                    timeout=10_000)
                await page.locator("#agents tbody tr").first.click()
                await page.wait_for_function(
                    "document.getElementById('agent-detail').textContent"
                    ".includes('\"kind\": \"web.meter\"')", timeout=10_000)
                # A death and a rejoin show up as events.
                cluster.kill(2)
                await page.wait_for_function(
                    "document.querySelector('#events li[data-type=\"dead\"]') !== null",
                    timeout=30_000)
                await cluster.restart(2)
                await page.wait_for_function(
                    "[...document.querySelectorAll('#members tr[data-role=member] .status')]"
                    ".filter(s => s.textContent === 'alive').length === 3", timeout=30_000)
                await page.wait_for_function(
                    "Number(document.getElementById('chart-rate').dataset.samples) >= 20",
                    timeout=20_000)
                rate = await page.locator("#chart-rate").get_attribute("data-last")
                assert rate is not None and float(rate) > 0
                shot = await page.screenshot(full_page=True)
        finally:
            await browser.close()
    (tmp_path / "dashboard.png").write_bytes(shot)
    assert shot.startswith(b"\x89PNG")
    if os.environ.get("PHX_UPDATE_SCREENSHOTS") == "1":
        DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        DOCS_IMAGE.write_bytes(shot)
