"""Screenshot a running dashboard in Debian's headless Chromium (the README's picture).

``python -m services.dashboard.screenshot --url http://127.0.0.1:5000 --out docs/dashboard.png --after 90``
opens the page, waits until it is live and has shown ``--min-rows`` decisions, lets it run
``--after`` seconds more (so the chart has a history), then (by default) until a fraud row is in
view, and writes the PNG. With ``--parts docs/dashboard`` it also writes the analyst's panels:
``docs/dashboard-queue.png`` (the alert queue), ``docs/dashboard-detail.png`` (the detail of the newest
alert of ``--detail-rule``, once its evidence shows) and ``docs/dashboard-health.png`` (the health panel).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from playwright.sync_api import Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def panels(page: Page, prefix: Path, detail_rule: str) -> list[Path]:
    """Screenshots of the alert queue, one alert's detail and the health panel, next to ``prefix``."""
    written: list[Path] = []

    def shot(testid: str, name: str) -> None:
        path = prefix.with_name(f"{prefix.name}-{name}.png")
        page.get_by_test_id(testid).screenshot(path=str(path))
        written.append(path)

    page.wait_for_selector("#queue-rows tr", timeout=120_000)
    shot("alerts-queue", "queue")
    row = page.locator("#queue-rows tr", has=page.locator("td.rule", has_text=detail_rule)).first
    (row if row.count() else page.locator("#queue-rows tr").first).click()
    page.wait_for_selector("#alert-detail .evidence li", timeout=30_000)
    shot("alert-detail", "detail")
    page.wait_for_function("document.getElementById('lag').textContent.includes('total lag')", timeout=60_000)
    shot("health", "health")
    return written


def screenshot(
    url: Annotated[str, typer.Option(help="the dashboard's URL")] = "http://127.0.0.1:5000",
    out: Annotated[Path, typer.Option(help="where to write the PNG")] = Path("docs/dashboard.png"),
    after: Annotated[float, typer.Option(help="seconds to let the page run once rows arrive")] = 60.0,
    min_rows: Annotated[int, typer.Option(help="decisions the page must show before the wait starts")] = 10,
    fraud_in_view: Annotated[
        bool, typer.Option(help="then wait (up to 2 minutes) until a fraud row is among the newest 8")
    ] = True,
    width: Annotated[int, typer.Option()] = 1400,
    height: Annotated[int, typer.Option()] = 900,
    full_page: Annotated[bool, typer.Option(help="the whole page, not only the viewport")] = False,
    parts: Annotated[
        Path | None, typer.Option(help="also write PREFIX-queue.png, PREFIX-detail.png, PREFIX-health.png")
    ] = None,
    detail_rule: Annotated[str, typer.Option(help="the detail shot shows the newest alert of this rule")] = "velocity",
) -> None:
    """Open the dashboard, wait for live decisions, and write a screenshot."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(url)
            page.wait_for_function("document.getElementById('status').textContent === 'live'", timeout=60_000)
            page.wait_for_function(f"document.querySelectorAll('#rows tr').length >= {min_rows}", timeout=120_000)
            time.sleep(after)
            if fraud_in_view:
                page.wait_for_selector("#rows tr.fraud:nth-child(-n+8)", timeout=120_000)
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=full_page)
            extra = panels(page, parts, detail_rule) if parts is not None else []
        finally:
            browser.close()
    typer.echo(f"wrote {', '.join(str(p) for p in [out, *extra])} ({url}, {width}x{height})")


if __name__ == "__main__":
    typer.run(screenshot)
