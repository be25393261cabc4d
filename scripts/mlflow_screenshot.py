"""Screenshot of the MLflow UI on this project's store, for the docs (a real headless browser session).

    mlflow ui --backend-store-uri sqlite:///$PWD/mlflow.db --port 5055 &
    python scripts/mlflow_screenshot.py --filter "tags.\`ditcompress.role\` = 'round'" --out docs/figures/mlflow_rounds.png

Needs Playwright and a Chromium, which the project does not install: `pip install playwright` in any
environment and Debian's `chromium` (or `playwright install chromium`). Nothing here reaches the network.
"""

from __future__ import annotations

import argparse
import json
import urllib.parse
import urllib.request


def experiment_id(url: str, name: str) -> str:
    """The id of experiment `name` through the MLflow REST API."""
    query = urllib.parse.urlencode({"experiment_name": name})
    with urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/get-by-name?{query}") as resp:
        return json.load(resp)["experiment"]["experiment_id"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:5055")
    ap.add_argument("--experiment", default="ditcompress")
    ap.add_argument("--filter", default="", help="the runs search box (MLflow search syntax)")
    ap.add_argument("--columns", nargs="*", default=[], help="metric or param names to show as columns, if offered")
    ap.add_argument("--view", choices=["table", "chart"], default="table")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--size", default="1600x900")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    width, height = map(int, args.size.split("x"))
    exp = experiment_id(args.url, args.experiment)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto(f"{args.url}/#/experiments/{exp}/runs", wait_until="load")
        page.wait_for_timeout(6000)
        if args.filter:
            box = page.get_by_placeholder("metrics.rmse < 1 and params.model = \"tree\"").or_(
                page.locator("input[placeholder*='metrics.']")).first
            box.fill(args.filter)
            box.press("Enter")
            page.wait_for_timeout(2500)
        close = page.get_by_role("button", name="Close").or_(page.locator("[aria-label='Close']"))
        if close.count():  # the assistant side panel
            close.first.click()
            page.wait_for_timeout(1000)
        if args.columns:
            search = page.get_by_placeholder("Search columns")
            for _ in range(3):  # the toolbar re-lays out once the side panel closes: retry the click
                page.get_by_role("button", name="Columns").first.click()
                page.wait_for_timeout(1000)
                if search.count():
                    break
            for name in ["Dataset", "Source", "Models", *args.columns]:  # toggles: attributes off, the rest on
                search.fill(name)
                page.wait_for_timeout(400)
                # in the popover, the metric's own entry comes before params whose names merely contain it
                page.get_by_role("dialog").filter(has=search).get_by_text(name, exact=True).first.click()
            search.fill("")
            page.keyboard.press("Escape")
            page.wait_for_timeout(800)
        expanders = page.locator("button[data-component-id*='runnamecellrenderer']")
        for i in range(expanders.count()):  # show the nested runs (the rounds) under their stage runs
            expanders.nth(i).click()
            page.wait_for_timeout(500)
        if args.view == "chart":
            page.get_by_role("radio", name="Chart view").or_(page.get_by_text("Chart", exact=True)).first.click()
            page.wait_for_timeout(3000)
        page.screenshot(path=args.out)
        browser.close()
    print(args.out)


if __name__ == "__main__":
    main()
