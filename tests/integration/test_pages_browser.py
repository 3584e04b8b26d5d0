"""The pages in a real browser: Debian's chromium + chromium-driver driven by Selenium, against a
real ``tryon serve`` (embedded defaults, preview engine).

Each kind of user clicks through their main path: the merchant adds a garment (named like a
script tag) and approves its mask; shopper A uploads a photo, starts a try-on, watches it finish
and sees the result; shopper B gets 404 for A's try-on and erases their data; ops look at queues,
workers, jobs and one job's timeline; ``/docs`` renders Swagger UI offline. Throughout, every
request the browser makes must go to 127.0.0.1 (Chrome's performance log of network events), and
the console must show no error except the 404/400 answers the test asks for.

Screenshots go to the test's temp dir; with ``TRYON_UPDATE_SCREENSHOTS=1`` they are also copied
to docs/images/ (the README's pictures).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import port_open
from service_checks import require_service
from test_serve import ASSETS, ROOT, _cli, serve  # noqa: F401 - serve is a fixture

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
XSS_NAME = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned=2">Tee'
IMAGES = ROOT / "docs" / "images"


def _need_browser() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    require_service(f"browser test needs {missing} (apt-get install chromium chromium-driver)"
                    if missing else None)


class Browser:
    """One Chrome session with its own profile, and the logs the checks read."""

    def __init__(self, base: str, profile: Path, shots: Path) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-default-apps", "--disable-extensions",
                    "--disable-dev-shm-usage", "--window-size=1280,900",
                    f"--user-data-dir={profile}"):
            opts.add_argument(arg)
        opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
        self.driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
        self.driver.set_page_load_timeout(60)
        self.base = base
        self.shots = shots
        self.urls: list[str] = []
        self.console: list[dict[str, Any]] = []

    def drain(self, asked_for: bool = False) -> list[dict[str, Any]]:
        """Collect the network and console events so far; returns the new console entries.
        ``asked_for``: they come from a refusal the test provoked (kept out of the final check)."""
        for entry in self.driver.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            if msg.get("method") == "Network.requestWillBeSent":
                self.urls.append(msg["params"]["request"]["url"])
        new = self.driver.get_log("browser")
        if not asked_for:
            self.console.extend(new)
        return new

    def go(self, path: str) -> None:
        self.driver.get(self.base + path)

    def css(self, selector: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def all(self, selector: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.CSS_SELECTOR, selector))

    def wait(self, cond: Callable[[], Any], timeout: float = 60, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                got = cond()
            except Exception:  # noqa: BLE001 - element not there yet
                got = None
            if got:
                return got
            time.sleep(0.25)
        self.shot(f"timeout-{what or 'wait'}")
        raise AssertionError(f"timed out waiting for {what}: {self.driver.current_url}\n"
                             f"console: {self.driver.get_log('browser')}\n"
                             + self.driver.page_source[:2000])

    def shot(self, name: str, full: bool = False) -> Path:
        """A PNG of the window; ``full``: of the whole page (up to 2400 px tall)."""
        path = self.shots / f"{name}.png"
        size = self.driver.get_window_size()
        if full:
            height = self.driver.execute_script("return document.documentElement.scrollHeight")
            self.driver.set_window_size(size["width"], min(2400, int(height) + 140))
        self.driver.execute_script("window.scrollTo(0, 0)")
        self.driver.save_screenshot(str(path))
        if full:
            self.driver.set_window_size(size["width"], size["height"])
        return path

    def sign_in(self, key: str) -> None:
        self.go("/sign-in")
        field = self.css("#api_key")
        field.send_keys(key)
        field.submit()
        self.wait(lambda: self.all("form.signout"), 30, "signed in")

    def sign_out(self) -> None:
        self.css("form.signout button").click()
        self.wait(lambda: self.all("#api_key"), 30, "signed out")

    def close(self) -> None:
        self.driver.quit()


@pytest.fixture
def browser(serve: dict[str, Any], tmp_path: Path) -> Iterator[Browser]:  # noqa: F811
    _need_browser()
    deadline = time.monotonic() + 120
    while not port_open(serve["port"]):
        assert serve["proc"].poll() is None, serve["log"].read_text()[-3000:]
        assert time.monotonic() < deadline, serve["log"].read_text()[-3000:]
        time.sleep(0.3)
    shots = tmp_path / "shots"
    shots.mkdir()
    b = Browser(f"http://127.0.0.1:{serve['port']}", tmp_path / "profile", shots)
    try:
        yield b
    finally:
        b.close()


def _accounts(serve: dict[str, Any]) -> dict[str, str]:  # noqa: F811
    env, cwd = serve["env"], serve["cwd"]
    keys = {}
    for who, name, role in (("merchant", "Acme Outfitters", "merchant"),
                            ("shopper_a", "Ana", "shopper"), ("shopper_b", "Ben", "shopper"),
                            ("ops", "Ops on call", "ops")):
        account = _cli(env, cwd, "accounts", "create", "--name", name, "--role", role)
        keys[who] = _cli(env, cwd, "keys", "create", "--account", account)
    return keys


def test_pages_in_a_real_browser(serve: dict[str, Any], browser: Browser) -> None:  # noqa: F811
    b = browser
    keys = _accounts(serve)
    port = serve["port"]

    # --- merchant: add a garment, approve its mask ---------------------------------------------
    b.sign_in(keys["merchant"])
    assert b.driver.current_url.endswith("/shop/garments")
    cookie = next(c for c in b.driver.get_cookies() if c["name"] == "tryon_session")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Lax"
    assert cookie["secure"] is False  # plain http here; https sets Secure (unit-tested)
    b.css("a.button[href='/shop/garments/new']").click()
    b.css("#image").send_keys(str(ASSETS / "garment_tshirt.png"))
    b.css("#name").send_keys(XSS_NAME)
    b.css("#sku").send_keys("TT-1")
    b.css("#image").submit()
    b.wait(lambda: b.all("img.preview"), 60, "mask review")
    b.wait(lambda: b.driver.execute_script(
        "return document.querySelector('img.preview').naturalWidth > 0"), 30, "cut-out image")
    b.css("button[value=approve]").click()
    b.wait(lambda: "/shop/garments/" in b.driver.current_url and b.all("h1"), 30, "saved")
    # the name is text, never markup: no script ran, no element was injected
    assert b.css("h1").text == XSS_NAME
    assert b.driver.execute_script("return window.__pwned === undefined")
    assert not b.all("main script") and not b.all("main img[src='x']")
    b.wait(lambda: b.driver.execute_script(
        "var i = document.querySelector('figure img[alt^=\"Sample\"]');"
        "return i && i.complete && i.naturalWidth > 0"), 60, "sample placement")
    b.go("/shop/garments")
    b.wait(lambda: b.driver.execute_script(
        "return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"),
        30, "catalog images")
    b.shot("pages_merchant", full=True)
    b.sign_out()

    # --- shopper A: photo with consent, verdicts, try-on, live progress, result --------------
    b.sign_in(keys["shopper_a"])
    assert b.driver.current_url.endswith("/me/photos")
    b.css("#image").send_keys(str(ASSETS / "person_astronaut.png"))
    b.css("#consent").click()
    b.css("#image").submit()
    b.wait(lambda: "/me/photos/" in b.driver.current_url and b.all("#verdict-h"), 90, "photo")
    verdicts = {r.find_element("css selector", "th").text: r.find_element(
        "css selector", "td").text for r in b.all("#verdict-h ~ table tbody tr")}
    assert verdicts["upper_body"] == "usable", verdicts
    assert verdicts["lower_body"] != "usable", verdicts  # the astronaut is waist-up
    b.wait(lambda: b.driver.execute_script(
        "var i = document.querySelector('#overlay-upper_body img');"
        "return i && i.complete && i.naturalWidth > 0"), 30, "placement overlay")
    photo_url = b.driver.current_url.split(str(port), 1)[1]
    b.go("/catalog")
    assert XSS_NAME in b.css(".grid .name").text
    b.css(".grid a.button").click()
    b.wait(lambda: b.all("#garment_id"), 30, "try-on form")
    b.css("#start-h ~ form button[type=submit]").click()
    b.wait(lambda: "/me/tryons/" in b.driver.current_url, 30, "job page")
    job_path = b.driver.current_url.split(str(port), 1)[1]
    b.wait(lambda: b.css("[data-field=status]").text == "succeeded"
           or b.css(".status").text == "succeeded", 120, "try-on succeeded")
    b.wait(lambda: b.driver.execute_script(
        "return Array.from(document.images).length >= 2 && "
        "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"),
        30, "result images")
    download = b.css("a[download]")
    assert download.get_attribute("href").endswith("?download=1")
    # the before/after slider moves the boundary
    slider = b.css("[data-compare-range]")
    from selenium.webdriver.common.keys import Keys

    slider.send_keys(Keys.END)  # keyboard works
    assert b.driver.execute_script(
        "return document.querySelector('[data-compare-after]').style.width") == "100%"
    slider.send_keys(Keys.HOME)
    b.driver.execute_script(
        "var r = document.querySelector('[data-compare-range]'); r.value = 50;"
        "r.dispatchEvent(new Event('input'));")
    b.shot("pages_shopper", full=True)
    # a phone-width view has no horizontal scrolling
    b.driver.set_window_size(390, 844)
    b.go(job_path)
    wide = b.driver.execute_script(
        "return Array.from(document.querySelectorAll('body *')).filter("
        "e => e.getBoundingClientRect().right > document.documentElement.clientWidth"
        " || e.scrollWidth > e.clientWidth + 1).map("
        "e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right)"
        " + ' ' + e.scrollWidth + '/' + e.clientWidth)")
    b.shot("pages_shopper_phone", full=True)
    dims = b.driver.execute_script(
        "var d = document.documentElement;"
        "return [d.scrollWidth, d.clientWidth, window.innerWidth]")
    assert dims[0] <= dims[1], (dims, wide)
    b.shot("pages_shopper_phone", full=True)
    b.driver.set_window_size(1280, 900)

    # a forged form (no CSRF token) from a signed-in page is refused
    b.go(photo_url)
    b.drain()
    photo_id = photo_url.rsplit("/", 1)[1]
    b.driver.execute_script(
        "var f = document.createElement('form'); f.method = 'post';"
        f"f.action = '/me/photos/{photo_id}/delete'; document.body.appendChild(f); f.submit();")
    b.wait(lambda: b.all("[data-error-code=csrf_failed]"), 30, "CSRF refusal")
    assert "400" in b.css("h1").text
    b.go(photo_url)
    assert b.all("#verdict-h"), "the photo must still be there"
    expected_errors = [e for e in b.drain(asked_for=True) if e["level"] == "SEVERE"]
    assert all("400" in e["message"] for e in expected_errors), expected_errors
    b.sign_out()

    # --- shopper B: A's try-on answers 404; erase my data -------------------------------------
    b.sign_in(keys["shopper_b"])
    b.drain()
    b.go(job_path)
    assert b.all("[data-error-code=job_not_found]"), b.driver.page_source[:1000]
    assert "404" in b.css("h1").text
    b.go(job_path + "/results/0.png")
    not_found = [e for e in b.drain(asked_for=True) if e["level"] == "SEVERE"]
    assert not_found and all("404" in e["message"] for e in not_found), not_found
    b.go("/me/erase")
    b.css("#confirm").send_keys("ERASE")
    b.css("#confirm").submit()
    b.wait(lambda: "erased" in b.css("[role=status]").text, 30, "erased")
    b.go("/me/photos")
    assert "/sign-in" in b.driver.current_url  # the session ended with the account

    # --- ops: queues, workers, chart, jobs, one job's timeline ------------------------------
    b.sign_in(keys["ops"])
    assert b.driver.current_url.endswith("/ops")
    b.wait(lambda: b.all("svg.chart rect.bar-ok"), 30, "chart")
    body = b.css("main").text
    assert "Queues" in body and "Workers" in body and "Last hour" in body
    assert "1 finished, 0 failed" in body, body
    # the embedded broker cannot broadcast a ping: serve's worker shows up by its job rows
    assert b.all("#workers-seen tbody th[scope=row]"), b.css("#workers-seen").text
    b.shot("pages_ops", full=True)
    b.go("/ops/jobs?status=succeeded")
    b.css("table a").click()
    b.wait(lambda: b.all("#tl-h"), 30, "job timeline")
    marks = b.css("ol.timeline").text
    assert "created" in marks and "finished: succeeded" in marks, marks
    b.go("/ops/webhooks")
    assert b.css("h1").text == "Webhook deliveries"
    b.sign_out()

    # --- /docs: Swagger UI offline ---------------------------------------------------------
    b.go("/docs")
    b.wait(lambda: b.all(".swagger-ui .info .title"), 60, "Swagger UI")
    assert "tryon" in b.css(".swagger-ui .info .title").text
    b.wait(lambda: b.all(".opblock"), 30, "operations")
    b.shot("pages_docs")

    # --- the whole run: every request stayed on 127.0.0.1; no console error unasked for ----
    b.drain()
    # browser-internal schemes (the blank tab's chrome:// pages, data: URIs) never leave the
    # machine; anything else must be this server
    internal = ("data:", "blob:", "about:", "chrome:", "chrome-untrusted:")
    outside = [u for u in b.urls if not (u.startswith(f"http://127.0.0.1:{port}/")
                                         or u.startswith(internal))]
    assert b.urls and not outside, outside
    unexpected = [e for e in b.console if e["level"] in ("SEVERE", "WARNING")]
    assert not unexpected, unexpected
    print(f"\nbrowser: {len(b.urls)} requests, all to 127.0.0.1:{port}; "
          f"{len(b.console)} console entries, none unexpected")

    if os.environ.get("TRYON_UPDATE_SCREENSHOTS") == "1":
        IMAGES.mkdir(parents=True, exist_ok=True)
        for name in ("pages_merchant", "pages_shopper", "pages_ops", "pages_shopper_phone",
                     "pages_docs"):
            shutil.copyfile(b.shots / f"{name}.png", IMAGES / f"{name}.png")
