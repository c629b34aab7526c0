"""Screenshot a running dashboard in Debian's headless Chromium (the README's picture).

``python -m services.dashboard.screenshot --url http://127.0.0.1:5000 --out docs/dashboard.png --after 90``
opens the page, waits until it is live and has shown ``--min-rows`` decisions, lets it run
``--after`` seconds more (so the chart has a history), then (by default) until a fraud row is in
view, and writes the PNG.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


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
            page.screenshot(path=str(out))
        finally:
            browser.close()
    typer.echo(f"wrote {out} ({url}, {width}x{height})")


if __name__ == "__main__":
    typer.run(screenshot)
