"""The app in a real browser: headless Chromium (Debian's, driven by Playwright) clicks through a search,
the detail panel, a thumbs-down, an upload and a reset, saving screenshots under tests/artifacts/.

It also prints the page-ready time of a 50-result search, first with a cold thumbnail cache and
then warm (a second person asking the same thing), which is what the thumbnail cache is for.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import COLOURS, make_image
from test_app import free_port, start_server

from assistant.app import AppConfig, LaunchOptions, serve
from assistant.demo import EXAMPLES, prepare_demo
from assistant.session import Session
from retrieval.library import Library, LibraryConfig

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).parent / "artifacts"
RESULTS = 50


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # 15 photos per colour at camera-like size, so making thumbnails costs something
    srv = start_server(tmp_path_factory.mktemp("browser"), per_colour=15, k=RESULTS, size=(1600, 1200))
    yield srv
    srv.served.close()
    srv.library.close()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("needs Chromium at /usr/bin/chromium (apt-get install chromium)")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(server.url)
    page.wait_for_selector("#box textarea", timeout=30_000)
    yield page
    context.close()


def settle(page) -> None:
    """Wait until Gradio has no component in its pending (faded) state."""
    page.wait_for_function("() => !document.querySelector('.pending')", timeout=30_000)


def captions(page) -> list[str]:
    return page.locator("#results .caption-label").all_inner_texts()


def ask(page, text: str) -> None:
    page.fill("#box textarea", text)
    page.press("#box textarea", "Enter")


def wait_for_results(page, n: int) -> float:
    """Seconds until `n` results are in the gallery and every thumbnail on screen has loaded."""
    started = time.perf_counter()
    page.wait_for_function(
        """n => {
            const imgs = [...document.querySelectorAll('#results img')];
            if (imgs.length < n) return false;
            const onScreen = imgs.filter(i => i.getBoundingClientRect().top < window.innerHeight);
            return onScreen.length > 0 && onScreen.every(i => i.complete && i.naturalWidth > 0);
        }""",
        arg=n,
        timeout=60_000,
    )
    return time.perf_counter() - started


def test_page_ready_time_for_50_results_cold_and_warm(browser, server):
    timings = []
    for _ in range(2):  # the second visitor finds the thumbnails cached
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.goto(server.url)
        page.wait_for_selector("#box textarea", timeout=30_000)
        ask(page, "show me blue")
        timings.append(wait_for_results(page, RESULTS))
        assert all(c.split(". ", 1)[1].startswith("blue-") for c in captions(page)[:15])
        context.close()
    print(f"\npage ready, {RESULTS} results: cold cache {timings[0]:.2f} s, warm cache {timings[1]:.2f} s")


def test_search_select_thumbs_down_upload_and_reset(page, server, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    ask(page, "show me red")
    wait_for_results(page, RESULTS)
    first = captions(page)[0].split(". ", 1)[1]
    assert first.startswith("red-")
    assert "red" in page.locator("#chat").inner_text()
    settle(page)
    page.screenshot(path=str(ARTIFACTS / "browser-1-results.png"))

    page.locator("#results button.thumbnail-item").first.click()
    page.wait_for_function(
        "name => document.querySelector('#detail-info').innerText.includes(name)", arg=first
    )
    page.wait_for_selector("#preview img")
    assert "Why:" in page.locator("#detail-info").inner_text()
    settle(page)
    page.screenshot(path=str(ARTIFACTS / "browser-2-selected.png"))

    page.click("#down")
    page.wait_for_function(
        "name => document.querySelector('#chat').innerText.includes('👎 ' + name)", arg=first
    )
    settle(page)
    assert first not in [c.split(". ", 1)[1] for c in captions(page)]

    example = make_image(tmp_path / "my-green.png", COLOURS["green"], size=(300, 200))
    page.set_input_files("#box input[type=file]", str(example))
    page.wait_for_selector("#box img", timeout=20_000)  # the upload's preview in the input
    page.press("#box textarea", "Enter")
    page.wait_for_function(
        "() => document.querySelectorAll('#chat img').length > 0 && "
        "document.querySelector('#results .caption-label')?.innerText.includes('green-')",
        timeout=30_000,
    )
    settle(page)
    page.screenshot(path=str(ARTIFACTS / "browser-3-upload.png"))

    page.click("#reset")
    page.wait_for_function("() => document.querySelectorAll('#results img').length === 0")
    assert page.locator("#chat .message").count() == 0


def test_demo_gallery_with_the_bundled_embedder_answers_an_example(browser, tmp_path):
    """The no-FOLDER path: real photos from installed packages, the offline embedder, a clicked example."""
    folder = prepare_demo(tmp_path / "demo")
    library = Library.open(tmp_path / "index", LibraryConfig(embedder="bundled", show_progress=False))
    config = AppConfig(cache_dir=tmp_path / "cache", examples=EXAMPLES)
    served = serve(Session(library), library, config, LaunchOptions(port=free_port()), folder)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        assert served.job.finished.wait(120) and served.job.error is None
        page = context.new_page()
        page.goto(served.local_url)
        page.get_by_text(EXAMPLES[0]).first.click()
        page.wait_for_function("t => document.querySelector('#box textarea').value === t", arg=EXAMPLES[0])
        page.press("#box textarea", "Enter")
        wait_for_results(page, 3)
        settle(page)
        assert "cheetah" in captions(page)[0]
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser-4-demo.png"))
    finally:
        context.close()
        served.close()
        library.close()
