"""Render the README's judged-vs-target figure (docs/steering_levels.png) from an eval's results.csv:
`summarize --figure` writes the offline Plotly HTML, headless Chromium takes its first chart.

    python -m experiments.levels_figure results/test_h4/results.csv docs/steering_levels.png
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def chart_png(summarize_args: list[str], png: str, height: int) -> None:
    """Run `summarize` with `summarize_args` + an HTML path, and screenshot the first chart it drew."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        html = Path(tmp) / "figure.html"
        cmd = [sys.executable, "-m", "steer_core", "summarize", *summarize_args, str(html)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1000, "height": height})
            page.goto(html.as_uri())
            page.wait_for_selector(".plotly-graph-div .main-svg")
            page.locator(".plotly-graph-div").first.screenshot(path=png)
            browser.close()
    print(png)


def main(results: str, png: str) -> None:
    chart_png([results, "--figure"], png, height=1400)


if __name__ == "__main__":
    main(*sys.argv[1:3])
