"""The web viewer in a real browser: headless Chromium (Debian `chromium` + `chromium-driver`) driven by selenium
against `cxrdecomp serve` on loopback, with the bundled default model. Skips, saying why, where Chromium, its
driver or selenium is missing (.ci/run installs them).

``CXRDECOMP_SAVE_SCREENSHOT=1 python -m pytest tests/test_browser.py`` also writes docs/images/web-viewer.png.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
if CHROMIUM is None or DRIVER is None:
    pytest.skip("headless Chromium needs the Debian packages chromium and chromium-driver (.ci/run installs them)", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium; a dev dependency)")

from cxrdecomp.io import examples  # noqa: E402

TIMEOUT = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = _free_port()
    log = open(tmp_path_factory.mktemp("serve") / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "cxrdecomp.cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--threads", "2"],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/api/methods", timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"cxrdecomp serve exited: {Path(log.name).read_text()[-2000:]}")
            time.sleep(0.3)
    yield url
    proc.terminate()
    proc.wait(30)
    log.close()


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    o = Options()
    o.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1500,900",
              "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-default-apps", "--disable-extensions"):
        o.add_argument(a)
    o.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    d = webdriver.Chrome(service=Service(DRIVER), options=o)  # the Debian driver: selenium downloads nothing
    d.set_script_timeout(TIMEOUT)
    yield d
    d.quit()


CANVAS_SUM = "const c = document.getElementById(arguments[0]); if (!c.width) return null;" \
             "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let s = 0;" \
             "for (let i = 0; i < d.length; i += 4) s += d[i] * ((i >> 2) % 7 + 1); return [c.width, c.height, s];"


def test_upload_the_real_radiograph_see_four_panels_and_move_the_w_slider(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    src = examples.example_file("RG1_UNCI.dcm")
    browser.get(server + "/")
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#method option"))
    browser.find_element(By.ID, "file").send_keys(str(src))
    def done(d):
        t = d.find_element(By.ID, "status").text
        return ("RG1_UNCI" in t and not t.startswith("Decomposing")) or "Error" in t

    WebDriverWait(browser, TIMEOUT).until(done)
    assert "Error" not in browser.find_element(By.ID, "status").text, browser.find_element(By.ID, "status").text
    panels = {c: browser.execute_script(CANVAS_SUM, c) for c in ("c_input", "c_bone", "c_soft_tissue", "c_enhanced")}
    assert all(p is not None and p[0] == 1841 and p[1] == 1955 for p in panels.values()), panels  # full resolution
    assert len({p[2] for p in panels.values()}) == 4  # four different images

    slider = browser.find_element(By.ID, "w")
    w0 = float(slider.get_attribute("value"))
    slider.send_keys(*[Keys.ARROW_RIGHT] * 10)
    WebDriverWait(browser, 10).until(lambda d: float(d.find_element(By.ID, "w_out").text) > w0 + 0.2)
    time.sleep(0.5)  # the next animation frame redraws
    moved = {c: browser.execute_script(CANVAS_SUM, c) for c in ("c_input", "c_enhanced", "c_soft_tissue")}
    assert moved["c_enhanced"][2] != panels["c_enhanced"][2]  # the enhanced panel follows w
    assert moved["c_input"] == panels["c_input"] and moved["c_soft_tissue"] == panels["c_soft_tissue"]

    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, severe
    urls = []
    for e in browser.get_log("performance"):
        m = json.loads(e["message"])["message"]
        if m["method"] == "Network.requestWillBeSent":
            urls.append(m["params"]["request"]["url"])
    assert urls and all(u.startswith(server) or u.startswith(("data:", "blob:")) for u in urls), [u for u in urls if not u.startswith(server)]
    if os.environ.get("CXRDECOMP_SAVE_SCREENSHOT"):
        browser.save_screenshot(str(ROOT / "docs" / "images" / "web-viewer.png"))
