"""The demo page at / driven in headless Chromium (Debian's) against the real stack: draw a digit, classify a
review, translate, stream a generation (the text grows while it streams), sample GAN digits; screenshots."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def page(stack):
    if CHROMIUM is None:
        pytest.fail("Debian's chromium is not installed: `make test` installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        pg = browser.new_page(viewport={"width": 1400, "height": 1100})
        pg.goto(stack.url + "/")
        yield pg
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    d = Path(os.environ.get("DEMO_SCREENSHOT_DIR") or tmp_path_factory.mktemp("screens"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def test_draw_a_digit(page, shots):
    box = page.locator("#pad").bounding_box()
    x, y = box["x"], box["y"]
    # a seven: a bar across the top, then a stroke down to the lower left
    page.mouse.move(x + 80, y + 60)
    page.mouse.down()
    for px, py in [(140, 58), (200, 60), (180, 120), (160, 170), (140, 230)]:
        page.mouse.move(x + px, y + py, steps=8)
    page.mouse.up()
    page.wait_for_function("document.querySelector('#digit').textContent.trim().startsWith('7')", timeout=15000)
    assert page.locator("#probs div").count() == 10
    assert "mnist" in page.locator("#mnist-meta").text_content()
    page.locator("#mnist").screenshot(path=str(shots / "mnist.png"))


def test_review(page, shots):
    page.click("#classify")
    page.wait_for_function("document.querySelector('#sentiment-out').textContent.includes('positive')", timeout=15000)
    page.locator("#sentiment").screenshot(path=str(shots / "sentiment.png"))


def test_translation(page, shots):
    page.select_option("#tmodel", "seq2seq")
    page.fill("#beam", "3")
    page.click("#translate-btn")
    page.wait_for_function("document.querySelector('#translate-meta').textContent.includes('translation_seq2seq')",
                           timeout=30000)
    assert page.locator("#german").text_content().strip() not in ("", "–")
    page.locator("#translate").screenshot(path=str(shots / "translation.png"))


def test_streamed_generation_grows(page, shots):
    page.fill("#maxtok", "600")
    # record every length the output shows: a streamed answer grows in many steps, a buffered one in one
    page.evaluate("""() => { window.__lengths = [];
        new MutationObserver(() => window.__lengths.push(document.querySelector('#generated').textContent.length))
            .observe(document.querySelector('#generated'), {childList: true, characterData: true, subtree: true}); }""")
    page.click("#generate-btn")
    page.wait_for_function("document.querySelector('#generate-meta').textContent.includes('tokens')", timeout=60000)
    final = page.locator("#generated").text_content()
    lengths = [n for n in page.evaluate("window.__lengths") if n > 0]
    # shown while it streamed: the page had partial text before the end (chunks coalesce on a fast box)
    assert len(final) == 600 and len(set(lengths)) >= 2 and min(lengths) < 600
    page.locator("#generate").screenshot(path=str(shots / "generation.png"))


def test_gan_grid_and_interpolation(page, shots):
    page.click("#sample-btn")
    page.wait_for_function("document.querySelector('#grid').naturalWidth > 100", timeout=15000)
    page.wait_for_function("document.querySelector('#gan-meta').textContent.includes(' on cpu')", timeout=15000)
    page.locator("#gan").screenshot(path=str(shots / "gan-grid.png"))
    grid_src = page.eval_on_selector("#grid", "e => e.src")
    page.click("#interp-btn")
    page.wait_for_function(f"document.querySelector('#grid').src !== {grid_src!r}", timeout=15000)
    page.wait_for_function("document.querySelector('#grid').naturalWidth > 100", timeout=15000)
    page.locator("#gan").screenshot(path=str(shots / "gan.png"))
    page.screenshot(path=str(shots / "page.png"), full_page=True)


def test_imported_models_are_listed_and_answer_their_sample(page, shots, stack, tmp_path):
    """An imported model (every datatype, made with onnx.helper) appears under "Your models" with its tensors;
    its button sends the stored sample and shows the outputs."""
    from tests.imported import every_datatype, import_onnx, wait_for
    stack.add_model(import_onnx(every_datatype(), "demo_typed", tmp_path, "--allow-fp64"), "demo_typed")
    try:
        wait_for(stack.service_url["models"], "demo_typed", timeout=stack.POLL_SECONDS + 60)
        page.reload()
        card = page.locator(".imported[data-model='demo_typed']")
        card.wait_for(timeout=15000)
        assert card.locator("h3").text_content() == "demo_typed v1"
        assert "bytes BYTES [-1, 2]" in card.locator("p").text_content()
        card.locator("button").click()
        out = card.locator("pre")
        page.wait_for_function("document.querySelector(\".imported[data-model='demo_typed'] pre\")"
                               ".textContent.includes('bytes_out BYTES')", timeout=15000)
        assert "fp64_out FP64 [1, 2]" in out.text_content() and "error" not in (out.get_attribute("class") or "")
        card.screenshot(path=str(shots / "imported.png"))
    finally:
        shutil.rmtree(stack.repository / "demo_typed")
