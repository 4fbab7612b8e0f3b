"""A person's walk through the UI in a real headless Chromium: upload, progress, search,
open a result, documents, status; a screenshot of each step under artifacts/screenshots/."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..ingest.documents import write_document
from ..servers import Process

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
SHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not (CHROMIUM and DRIVER),
        reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
        "chromium-driver); .ci/run installs them",
    ),
]

OWLS = "Owls hunt mice at night using silent flight and sharp hearing."
COFFEE = "Espresso is brewed by forcing hot water through finely ground coffee."


@pytest.fixture()
def ui_server(api_server: Process, tmp_path: Path) -> Iterator[Process]:
    env = dict(api_server.env) | {"QUARRY_API_URL": api_server.url}
    server = Process("ui", env, tmp_path / "ui.log", ready_path="/_stcore/health")
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def wait_for(check: Callable[[], Any], what: str, timeout: float = 90, driver: Any = None) -> Any:
    """check()'s first true answer; on a timeout the page's text (given a driver) says why."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except Exception:  # the page is still drawing
            pass
        if time.monotonic() >= deadline:
            try:
                shown = page_text(driver)[-2000:] if driver is not None else ""
            except Exception as exc:  # the browser itself is gone
                shown = f"(no page: {exc})"
            raise AssertionError(f"timed out waiting for {what}; the page shows:\n{shown}")
        time.sleep(0.3)


def shot(driver: Any, name: str) -> None:
    """The whole page (the window grows to fit), once progress bars stop animating."""
    time.sleep(1.0)
    height = driver.execute_script(
        "const m = document.querySelector('section.main, [data-testid=stMain]');"
        "return Math.max(document.body.scrollHeight, m ? m.scrollHeight : 0);"
    )
    driver.set_window_size(1400, min(max(int(height) + 120, 900), 4000))
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / f"{name}.png"))
    driver.set_window_size(1400, 1000)


def page_text(driver: Any) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.TAG_NAME, "body").text)


def click_button(driver: Any, label: str) -> None:
    from selenium.webdriver.common.by import By

    button = wait_for(
        lambda: next(
            b
            for b in driver.find_elements(By.TAG_NAME, "button")
            if b.text.strip().endswith(label) and b.is_enabled()
        ),
        f"the {label!r} button",
        driver=driver,
    )
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", button)
    button.click()


def test_walk_through_the_ui(
    browser: Any, ui_server: Process, api_server: Process, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    docs = tmp_path / "docs"
    docs.mkdir()
    owls = write_document(docs, "pdf", OWLS, stem="owls-field-notes")
    coffee = write_document(docs, "docx", COFFEE, stem="coffee-guide")
    broken = docs / "broken-scan.pdf"
    broken.write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >>\n%%truncated")

    browser.get(f"{ui_server.url}/upload")
    picker = wait_for(
        lambda: browser.find_element(By.CSS_SELECTOR, "input[type=file]"), "the file picker"
    )
    picker.send_keys("\n".join(str(p) for p in (owls, coffee, broken)))
    wait_for(lambda: "broken-scan.pdf" in page_text(browser), "the chosen files to show")
    tags = browser.find_element(By.CSS_SELECTOR, "input[aria-label='Tags']")
    tags.send_keys("field-notes, demo")
    click_button(browser, "Upload and index")
    wait_for(
        lambda: "3 files accepted" in page_text(browser),
        "the upload to be accepted",
        driver=browser,
    )
    wait_for(
        lambda: "partial" in page_text(browser), "the job to finish", timeout=240, driver=browser
    )
    text = page_text(browser)
    assert text.count("indexed") >= 2 and "failed" in text
    assert "broken-scan.pdf" in text
    shot(browser, "1-upload")

    browser.get(f"{ui_server.url}/")
    question = "which animal hunts at night?"

    def typed() -> Any:
        """The query box once it has kept the question across a poll: a page still
        redrawing replaces the box and loses what was typed."""
        box = browser.find_element(By.CSS_SELECTOR, "input[aria-label='Query']")
        if box.get_attribute("value") == question:
            return box
        box.clear()
        box.send_keys(question)
        return None

    wait_for(typed, "the query box to keep the question", driver=browser)
    # The form's button, not Enter: until the page has drawn the whole form (it asks the
    # server for the presets first, slow on a loaded machine), Enter submits nothing.
    click_button(browser, "Search")
    first = wait_for(
        lambda: next(line for line in page_text(browser).splitlines() if line.startswith("1. ")),
        "the results",
        driver=browser,
    )
    assert "owls-field-notes.pdf" in first
    assert browser.find_elements(By.TAG_NAME, "mark"), "query words are highlighted"
    shot(browser, "2-search")
    click_button(browser, "Open")
    wait_for(
        lambda: "the result you opened" in page_text(browser), "the document view", driver=browser
    )
    shot(browser, "3-document")

    browser.get(f"{ui_server.url}/documents")
    wait_for(
        lambda: "coffee-guide.docx" in page_text(browser), "the documents table", driver=browser
    )
    shot(browser, "4-documents")
    browser.get(f"{ui_server.url}/status")
    wait_for(lambda: "Recent jobs" in page_text(browser), "the status page", driver=browser)
    assert "ready" in page_text(browser)
    shot(browser, "5-status")

    documents = httpx.get(f"{api_server.url}/v1/documents").json()["documents"]
    assert {d["source"] for d in documents} >= {"owls-field-notes.pdf", "coffee-guide.docx"}
