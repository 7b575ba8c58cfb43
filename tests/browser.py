"""Headless Chromium for the browser tests (Debian's chromium + chromium-driver, Selenium).

``make install`` installs them as root; where they are missing a browser test skips,
except under CI (``CI=true``), where it fails. Screenshots go to the test's folder, or to
``$MLP_SCREENSHOTS`` when set (to look at them after the run).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# As root, without a sandbox; no background traffic (the network is closed here).
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage")


def require_chromium() -> None:
    """Skip (fail under CI) when Chromium, ChromeDriver or Selenium are missing."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip)")
    if missing:
        msg = (f"{', '.join(missing)} missing: `make install` installs Debian's chromium and "
               "chromium-driver (as root) and selenium")
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)


@contextlib.contextmanager
def chromium(profile: Path, size: tuple[int, int] = (1280, 900)) -> Iterator[Any]:
    """A headless Chromium driven by Selenium (its own profile folder); quit afterwards."""
    require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager download anything
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--window-size={size[0]},{size[1]}")
    opts.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(90)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver: Any, folder: Path, name: str) -> Path:
    """Save a PNG of the page (in ``$MLP_SCREENSHOTS`` when set); its path."""
    out = Path(os.environ.get("MLP_SCREENSHOTS") or folder)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def wait_for(condition: Callable[[], Any], timeout: float = 60, every: float = 0.5,
             what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; its value (or fail)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = condition()
        except Exception as exc:  # the page may still be rendering
            last = exc
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def draw(driver: Any, element: Any, strokes: list[list[tuple[int, int]]]) -> None:
    """Draw strokes with the mouse: press, move through every point, release, per stroke.

    Points are offsets from the element's centre, in CSS pixels.
    """
    from selenium.webdriver.common.action_chains import ActionChains

    for stroke in strokes:
        chain = ActionChains(driver, duration=10)
        chain.move_to_element_with_offset(element, *stroke[0]).click_and_hold()
        for (x0, y0), (x1, y1) in zip(stroke, stroke[1:], strict=False):
            chain.move_by_offset(x1 - x0, y1 - y0)
        chain.release().perform()
