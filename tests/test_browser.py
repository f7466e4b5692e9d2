"""The web viewer in a real browser: headless Chromium (Debian `chromium` + `chromium-driver`) driven by selenium
against `cxrdecomp serve` on loopback, with the bundled default model (and, for the view-angle slider, a tiny random
XraySyn checkpoint served beside the bundled ones). Skips, saying why, where Chromium, its driver or selenium is
missing (.ci/run installs them).

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
from serve_helpers import ramp_png, tiny_xraysyn  # noqa: E402

TIMEOUT = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(tmp_path_factory, *args: str):
    """Run ``cxrdecomp serve ARGS`` on a free loopback port; yields its URL."""
    port = _free_port()
    log = open(tmp_path_factory.mktemp("serve") / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "cxrdecomp.cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--threads", "2", *args],
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
def server(tmp_path_factory):
    yield from _serve(tmp_path_factory)


@pytest.fixture(scope="module")
def views_server(tmp_path_factory):
    """The bundled models plus a tiny random XraySyn model served as "xraysyn" (pre-selected)."""
    ckpt = tiny_xraysyn(tmp_path_factory.mktemp("ckpt") / "xraysyn")
    yield from _serve(tmp_path_factory, "--checkpoint", str(ckpt), "--method", "xraysyn")


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


IMG_SUM = "const i = document.getElementById(arguments[0]); if (!i.complete || !i.naturalWidth) return null;" \
          "const c = document.createElement('canvas'); c.width = i.naturalWidth; c.height = i.naturalHeight;" \
          "const x = c.getContext('2d'); x.drawImage(i, 0, 0); const d = x.getImageData(0, 0, c.width, c.height).data; let s = 0;" \
          "for (let k = 0; k < d.length; k += 4) s += d[k] * ((k >> 2) % 7 + 1); return [c.width, c.height, i.dataset.azimuth, s];"


def test_view_angle_slider_for_an_xraysyn_result_hidden_for_others(views_server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    for name in ("ramp_a.png", "ramp_b.png"):
        (tmp_path / name).write_bytes(ramp_png((96, 80)))
    browser.get(views_server + "/")
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#method option"))
    method = Select(browser.find_element(By.ID, "method"))
    assert method.first_selected_option.get_attribute("value") == "xraysyn"
    panel, slider = browser.find_element(By.ID, "views_panel"), browser.find_element(By.ID, "angle")
    assert not panel.is_displayed()  # no result yet
    browser.get_log("performance")  # drop the requests so far
    browser.find_element(By.ID, "file").send_keys(str(tmp_path / "ramp_a.png"))

    def status(part):
        return lambda d: part in d.find_element(By.ID, "status").text or "Error" in d.find_element(By.ID, "status").text

    WebDriverWait(browser, TIMEOUT).until(status("ramp_a.png: xraysyn ("))
    assert "Error" not in browser.find_element(By.ID, "status").text, browser.find_element(By.ID, "status").text
    assert panel.is_displayed() and "View angle" in panel.text
    assert [slider.get_attribute(a) for a in ("min", "max", "step", "value")] == ["-18", "18", "1", "0"]
    assert browser.find_element(By.ID, "angle_out").text == "0°"
    first = WebDriverWait(browser, 30).until(lambda d: (v := d.execute_script(IMG_SUM, "view")) and v[2] == "0" and v)
    assert first[:2] == [16, 16]  # the model's view size

    slider.send_keys(*[Keys.ARROW_RIGHT] * 5)
    assert browser.find_element(By.ID, "angle_out").text == "5°"  # the angle follows at once ...
    moved = WebDriverWait(browser, 30).until(lambda d: (v := d.execute_script(IMG_SUM, "view")) and v[2] == "5" and v)
    assert moved[3] != first[3]  # ... and the image once the slider rests
    asked = [json.loads(e["message"])["message"]["params"]["request"]["url"] for e in browser.get_log("performance")
             if json.loads(e["message"])["message"]["method"] == "Network.requestWillBeSent"]
    asked = [u.split("?")[1] for u in asked if "/view.png" in u]
    assert "azimuth=0&elevation=0" in asked and "azimuth=5&elevation=0" in asked and len(asked) < 6, asked  # debounced

    method.select_by_value("bone")
    browser.find_element(By.ID, "file").send_keys(str(tmp_path / "ramp_b.png"))
    WebDriverWait(browser, TIMEOUT).until(status("ramp_b.png: bone ("))
    assert "Error" not in browser.find_element(By.ID, "status").text, browser.find_element(By.ID, "status").text
    assert not panel.is_displayed()  # hidden for a method without views
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, severe
