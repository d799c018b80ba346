"""The admin page in a real headless browser (Debian's Chromium driven through chromedriver).

Log in, add a cookie, see it healthy, disable it, see the state change; a screenshot is written
under the test's tmp_path. Without Chromium, chromedriver or selenium the test skips, except
under CI (`CI=true`), where it fails: `.ci/run` installs them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import trio
from conftest import ServiceFactory
from test_pool_e2e import cookie, key_of

ADMIN = "admin-secret-for-the-browser"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=412,1400",  # a phone's width: the page must read there
)


def browser_or_skip() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (the [test] extra)")
    if not missing:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"the browser test must run under CI, but these are missing: {', '.join(missing)}")
    pytest.skip(f"missing {', '.join(missing)}")


def drive(url: str, added: str, profile: Path, screenshot: Path) -> dict[str, object]:
    """The whole browser session (blocking; run in a thread while the service serves)."""
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service as DriverService
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=DriverService(executable_path=CHROMEDRIVER), options=options)
    seen: dict[str, object] = {}

    def submit(button: object) -> None:
        """Click a form's button and wait for the page it posts to (a loaded machine is slow)."""
        button.click()  # type: ignore[attr-defined]

        def left_the_page(_: object) -> bool:
            try:
                button.is_enabled()  # type: ignore[attr-defined]
            except WebDriverException:
                # StaleElementReference, or Chromium's "Node with given id does not belong to the
                # document" while the next page loads (seen once in a CI dry run): it is gone.
                return True
            return False

        WebDriverWait(driver, 30).until(left_the_page)

    try:
        driver.set_page_load_timeout(30)
        driver.implicitly_wait(10)
        driver.get(url + "/")
        seen["anonymous_has_pool"] = bool(driver.find_elements(By.ID, "pool"))
        driver.find_element(By.ID, "admin-secret").send_keys(ADMIN)
        submit(driver.find_element(By.ID, "login"))
        driver.find_element(By.ID, "add-cookies").send_keys(f"session_id={added}")
        driver.find_element(By.ID, "add-label").send_keys("browser")
        submit(driver.find_element(By.ID, "add-submit"))
        key = key_of(added)
        card = driver.find_element(By.ID, f"cookie-{key}")
        seen["after_add"] = card.get_attribute("data-state"), card.find_element(By.CLASS_NAME, "state").text
        submit(driver.find_element(By.ID, f"disable-{key}"))
        card = driver.find_element(By.ID, f"cookie-{key}")
        seen["after_disable"] = card.get_attribute("data-state"), card.find_element(By.CLASS_NAME, "state").text
        seen["enable_offered"] = bool(driver.find_elements(By.ID, f"enable-{key}"))
        seen["page"] = driver.page_source
        seen["cookies"] = driver.get_cookies()
        seen["local_storage"] = driver.execute_script("return window.localStorage.length + window.sessionStorage.length")
        driver.save_screenshot(str(screenshot))
    finally:
        driver.quit()
    return seen


async def test_admin_page_in_a_real_browser(make_service: ServiceFactory, tmp_path: Path) -> None:
    browser_or_skip()
    added = cookie("ok")
    service = await make_service(cookies=[cookie("ok")], ADMIN_SECRET=ADMIN)
    screenshot = tmp_path / "admin-page.png"
    with trio.fail_after(90):
        seen = await trio.to_thread.run_sync(drive, service.url, added, tmp_path / "profile", screenshot)
    assert seen["anonymous_has_pool"] is False
    assert seen["after_add"] == ("healthy", "healthy")
    assert seen["after_disable"] == ("disabled", "disabled") and seen["enable_offered"]
    status = service.runtime.pool.status(key_of(added))
    assert status is not None and str(status.state) == "disabled" and status.label == "browser"
    assert added not in str(seen["page"])  # the cookie is masked in the page
    (session,) = [c for c in seen["cookies"] if c["name"] == "genspark2api_admin"]  # type: ignore[union-attr]
    assert session["httpOnly"] is True and session["sameSite"] == "Strict"
    assert seen["local_storage"] == 0
    assert screenshot.stat().st_size > 1000 and screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
