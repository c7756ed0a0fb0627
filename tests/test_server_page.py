"""The page at ``/`` in a headless Chromium: choose a picture, ask, see the answer stream in (the
very text ``Pipeline.generate`` gives) and then the request's per-stage timings.

Chromium and its driver come from Debian (``make test`` installs them: ``make browser``). Without
them the test fails — a skipped browser test would pass a broken page."""

from __future__ import annotations

import shutil

import pytest
from server_utils import MODEL, ServerThread, picture, pipeline_turn, png_bytes

from vlmforge.runtime import Pipeline
from vlmforge.runtime.server.app import create_app

INSTALL = "apt-get install -y chromium chromium-driver (or `make browser`), and pip install selenium==4.45.0"


@pytest.fixture(scope="module")
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail(f"the page test needs selenium: {INSTALL}")
    chromium, driver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.fail(f"the page test needs Chromium and chromedriver on PATH: {INSTALL}")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    # the driver by path: Selenium Manager would try to download one
    session = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    yield session
    session.quit()


@pytest.fixture(scope="module")
def server(tiny_llava):
    pipe = Pipeline.load(tiny_llava[1])
    pipe.start_engine(max_batch=4)
    try:
        with ServerThread(create_app(pipe, MODEL)) as s:
            yield s
    finally:
        pipe.engine.close()


def test_the_page_streams_an_answer_and_shows_its_timings(browser, server, tiny_llava, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    question, image = "What is in the picture?", picture(7, 48, 64)
    path = tmp_path / "picture.png"
    path.write_bytes(png_bytes(image))
    expected = Pipeline.load(tiny_llava[1]).generate(messages=pipeline_turn(question, 1), images=[image],
                                                     max_new_tokens=10)
    browser.get(server.url + "/")
    wait = WebDriverWait(browser, 20)
    wait.until(lambda b: MODEL in b.find_element(By.ID, "model").text)
    browser.find_element(By.ID, "image").send_keys(str(path))
    wait.until(lambda b: b.find_element(By.ID, "preview").get_attribute("src").startswith("data:image/png;base64,"))
    for field, value in (("question", question), ("max-tokens", "10")):
        element = browser.find_element(By.ID, field)
        element.clear()
        element.send_keys(value)
    browser.find_element(By.ID, "ask").click()
    wait.until(lambda b: b.find_element(By.ID, "status").text == "done" or b.find_element(By.ID, "error").text)
    assert browser.find_element(By.ID, "error").text == ""
    answer = browser.execute_script("return document.getElementById('answer').textContent")
    assert answer == expected.text and answer
    rows = {r.find_elements(By.TAG_NAME, "td")[0].text: r.find_elements(By.TAG_NAME, "td")[1].text
            for r in browser.find_elements(By.CSS_SELECTOR, "#timings tr")}
    assert {"time to first token", "vision", "prefill", "decode", "server: media"} <= set(rows), rows
    assert rows["generated tokens"] == str(len(expected.token_ids))
    assert rows["vision"].endswith(" ms") and rows["decode speed"].endswith(" tokens/s")
    browser.save_screenshot(str(tmp_path / "page.png"))
