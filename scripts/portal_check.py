"""Drives the portal of `medlake serve` in headless Chromium, as a customer
would, and prints what the browser saw as one JSON object on stdout.

  python scripts/portal_check.py --url http://127.0.0.1:8090/ --token TOKEN \
      --report feed_status --downloads DIR [--param name=value ...]

Steps: a wrong token is refused on the page; the right one signs in; the
report is chosen, its parameters typed, Run clicked; the chart (SVG) and the
table are read; Download CSV is clicked and the file awaited in DIR. The
output names the table's columns and rows, the chart's kind and marks, the
downloaded file's name and path, and every resource the page loaded (all of
them must come from the server itself).

Debian's `chromium` and `chromium-driver` (/usr/bin/chromium,
/usr/bin/chromedriver), driven through Selenium; no browser is downloaded.
Exit status 0 when every step worked, 1 with the reason on stderr.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import Select, WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Without the background-networking flags Chromium keeps trying Google's
# hosts, which a closed network refuses.
FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1280,1000",
]


def browser(profile: pathlib.Path, downloads: pathlib.Path) -> webdriver.Chrome:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not pathlib.Path(path).exists():
            raise SystemExit(f"{path} is missing: install Debian's chromium and chromium-driver (.ci/run does)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_experimental_option("prefs", {
        "download.default_directory": str(downloads),
        "download.prompt_for_download": False,
    })
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {
        "behavior": "allow", "downloadPath": str(downloads), "eventsEnabled": True,
    })
    return driver


def wait_text(driver, element_id: str, predicate, what: str, timeout: float = 60) -> str:
    def check(d):
        text = d.find_element(By.ID, element_id).text
        return text if predicate(text) else False
    try:
        return WebDriverWait(driver, timeout).until(check)
    except TimeoutException:
        shown = driver.find_element(By.ID, element_id).text
        raise SystemExit(f"{what}: #{element_id} still says {shown!r} after {timeout:.0f} s") from None


def sign_in(driver, token: str) -> None:
    field = driver.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#sign-in-form button[type=submit]").click()


def read_table(driver) -> dict:
    table = driver.find_element(By.CSS_SELECTOR, "#result table")
    columns = [th.text for th in table.find_elements(By.CSS_SELECTOR, "thead th")]
    rows = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in table.find_elements(By.CSS_SELECTOR, "tbody tr")]
    return {"columns": columns, "rows": rows}


def read_chart(driver) -> dict:
    svgs = driver.find_elements(By.CSS_SELECTOR, "#chart svg")
    if not svgs:
        return {"kind": None, "bars": 0, "lines": 0, "nonzero_bars": 0}
    svg = svgs[0]
    bars = svg.find_elements(By.CSS_SELECTOR, "rect.bar")
    nonzero = sum(1 for bar in bars if float(bar.get_attribute("height") or 0) > 0)
    return {
        "kind": svg.get_attribute("data-kind"),
        "bars": len(bars),
        "nonzero_bars": nonzero,
        "lines": len(svg.find_elements(By.TAG_NAME, "polyline")),
        "width": svg.size["width"],
        "height": svg.size["height"],
    }


def await_download(downloads: pathlib.Path, timeout: float) -> pathlib.Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [p for p in downloads.iterdir() if not p.name.endswith(".crdownload")]
        if done:
            return done[0]
        time.sleep(0.1)
    raise SystemExit(f"no download in {downloads} after {timeout:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="the portal's address")
    parser.add_argument("--token", required=True, help="a customer user's token")
    parser.add_argument("--report", required=True, help="the report to run (its name)")
    parser.add_argument("--param", action="append", default=[], help="name=value, typed into the form")
    parser.add_argument("--downloads", required=True, help="folder the CSV is downloaded to (empty)")
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args()
    downloads = pathlib.Path(args.downloads).resolve()
    downloads.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="medlake-chromium-") as profile:
        driver = browser(pathlib.Path(profile), downloads)
        try:
            driver.set_page_load_timeout(args.timeout)
            driver.get(args.url)
            title = driver.title

            sign_in(driver, args.token + "-not")
            refused = wait_text(driver, "sign-in-error", bool, "a wrong token", args.timeout)

            sign_in(driver, args.token)
            WebDriverWait(driver, args.timeout).until(ready.visibility_of_element_located((By.ID, "portal")))
            Select(driver.find_element(By.ID, "report")).select_by_value(args.report)
            for pair in args.param:
                name, _, value = pair.partition("=")
                field = driver.find_element(By.ID, f"param-{name}")
                field.clear()
                field.send_keys(value)
            driver.find_element(By.ID, "run").click()
            status = wait_text(driver, "status", lambda t: t != "" and not t.startswith("Running"),
                               "running the report", args.timeout)
            if "rows" not in status:
                raise SystemExit(f"the report did not run: {status!r}")
            table = read_table(driver)
            chart = read_chart(driver)

            driver.find_element(By.ID, "csv").click()
            csv_file = await_download(downloads, args.timeout)
            downloaded = wait_text(driver, "status", lambda t: t.startswith("Downloaded"), "the download",
                                   args.timeout)
            resources = driver.execute_script(
                "return [location.href].concat(performance.getEntriesByType('resource').map(e => e.name));")
            print(json.dumps({
                "title": title,
                "refused": refused,
                "status": status,
                "table": table,
                "chart": chart,
                "csv_name": csv_file.name,
                "csv_path": str(csv_file),
                "download_status": downloaded,
                "resources": resources,
            }))
        finally:
            driver.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
