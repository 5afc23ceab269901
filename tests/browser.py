"""A page in headless Chromium (Debian's chromium + chromium-driver, driven by selenium): every
asset loads and nothing is broken. Used by the demo report's tests."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
NO_BROWSER = "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"

_STATE = """
const media = [...document.querySelectorAll('video, audio')];
const images = [...document.querySelectorAll('img')];
return {
  media: media.map(m => [m.currentSrc || m.src, m.readyState, m.error ? m.error.code : null,
                         m.tagName === 'VIDEO' ? m.videoWidth : -1]),
  images: images.map(i => [i.currentSrc, i.complete, i.naturalWidth]),
  links: [...document.querySelectorAll('a[href]')].map(a => a.href),
};
"""


def assert_page_loads(index: Path) -> dict:
    """Open `index` in headless Chromium and check that nothing is broken: every image decodes,
    every audio/video element reaches its metadata with no MediaError (and a video decodes frames),
    no SEVERE console entry, every link points to an existing file. Returns the page's state."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--mute-audio", "--allow-file-access-from-files"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # an explicit driver path: selenium-manager never runs (it would try to download one)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        driver.get(index.as_uri())
        deadline = time.monotonic() + 20
        while True:
            state = driver.execute_script(_STATE)
            settled = all(ready >= 1 or error for _, ready, error, _ in state["media"])
            if (settled and all(done for _, done, _ in state["images"])) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    finally:
        driver.quit()
    for src, ready, error, width in state["media"]:
        assert error is None and ready >= 1, f"{src}: readyState {ready}, MediaError {error}"
        assert width != 0, f"{src}: no video frames decoded (is H.264 supported by this Chromium?)"
    for src, _, natural_width in state["images"]:
        assert natural_width > 0, f"{src} did not load"
    assert not errors, errors
    for href in state["links"]:
        url = urlparse(href)  # in-page anchors resolve to index.html itself
        assert url.scheme == "file" and Path(unquote(url.path)).is_file(), href
    return state
