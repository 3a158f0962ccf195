"""`make lab` serves the repository root, so every figure a chapter or the README shows can be fetched."""

import json
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[1]
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _images_shown():
    """(document, path of the image relative to the repository root) for every image in the notebooks and README."""
    documents = sorted(ROOT.glob("notebooks/*.ipynb")) + sorted(ROOT.glob("exercises/*.ipynb")) + [ROOT / "README.md"]
    for document in documents:
        if document.suffix == ".ipynb":
            text = "\n".join("".join(cell["source"]) for cell in json.loads(document.read_text())["cells"] if cell["cell_type"] == "markdown")
        else:
            text = document.read_text()
        for target in IMAGE.findall(text):
            if not re.match(r"[a-z]+:", target):
                yield document.relative_to(ROOT), (document.parent / target).resolve().relative_to(ROOT)


@pytest.fixture(scope="module")
def lab():
    """`make lab` as a student runs it, on a free loopback port, with no browser and a token of our own."""
    port, token = _free_port(), secrets.token_hex(16)
    workspaces = tempfile.mkdtemp()  # the browser test's open tabs are not saved into the user's own workspace
    args = (f"--no-browser --ip=127.0.0.1 --port={port} --ServerApp.port_retries=0 --IdentityProvider.token={token} "
            f"--LabApp.workspaces_dir={workspaces}")
    log = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: Jupyter logs every request, and a full pipe blocks it
    process = subprocess.Popen(["make", "--no-print-directory", "lab", f"LAB_ARGS={args}"], cwd=ROOT, stdout=log,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            if process.poll() is not None:
                log.seek(0)
                pytest.fail(f"make lab exited with {process.returncode}: {log.read()[-2000:]}")
            try:
                if requests.get(f"{url}/api/status", params={"token": token}, timeout=2).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not answer within 60 s")
        log.seek(0)
        printed = re.search(rf"({re.escape(url)}/\S*)\?token=\.\.\.", log.read())  # the address `make lab` shows the student
        assert printed, "JupyterLab did not print its address"
        yield url, token, f"{printed[1]}?token={token}"
    finally:
        subprocess.run(["pkill", "-TERM", "-g", str(process.pid)], check=False)  # make and the server it started
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
        log.close()


def test_every_chapter_and_the_readme_show_images():
    shown = list(_images_shown())
    assert {str(document.parent) for document, _ in shown} >= {"notebooks", "exercises", "."}


def test_make_lab_serves_every_image_the_chapters_and_readme_show(lab):
    url, token, start_url = lab
    for document, image in _images_shown():
        response = requests.get(f"{url}/files/{image.as_posix()}", params={"token": token}, timeout=30)
        assert response.status_code == 200, f"{document} shows {image}: JupyterLab answered {response.status_code}"
        assert response.headers["Content-Type"].startswith("image/"), (document, image, response.headers["Content-Type"])
        assert len(response.content) > 1000, (document, image)


def test_make_lab_opens_the_repository_root(lab):
    url, token, start_url = lab
    listing = requests.get(f"{url}/api/contents", params={"token": token}, timeout=30).json()
    assert {"README.md", "notebooks", "exercises", "images"} <= {entry["name"] for entry in listing["content"]}
    assert start_url == f"{url}/lab/tree/README.md?token={token}", "make lab opens on the README"


# Debian's Chromium, started as the machine's notes say: no connections of its own on a closed network.
CHROMIUM_ARGS = ["--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
# Every rendered image of the panel in view, scrolled through from top to bottom, with its natural width.
COLLECT_IMAGES = """async (selector) => {
  const panel = document.querySelector(selector);
  const scroller = panel.querySelector('.jp-WindowedPanel-outer') || panel.querySelector('.jp-RenderedMarkdown').parentElement;
  const seen = {};
  for (let top = 0; ; top += scroller.clientHeight / 2) {
    scroller.scrollTop = top;
    await new Promise(resolve => setTimeout(resolve, 150));
    for (const img of panel.querySelectorAll('.jp-RenderedMarkdown img')) {
      img.scrollIntoView({block: 'center'});
      for (let i = 0; i < 50 && !img.complete; i++) await new Promise(resolve => setTimeout(resolve, 100));
      seen[img.getAttribute('src')] = Math.max(seen[img.getAttribute('src')] || 0, img.naturalWidth);
    }
    scroller.scrollTop = top;
    if (top + scroller.clientHeight >= scroller.scrollHeight) return seen;
  }
}"""


def _local_images(document: Path) -> set[str]:
    return {image.name for shown_in, image in _images_shown() if shown_in == document}


@pytest.fixture(scope="module")
def chromium_page(lab):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("The browser test needs Chromium: sudo apt-get install chromium (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 900})
        finally:
            browser.close()


def _shown_images(page, panel: str, expected: set[str]) -> dict[str, int]:
    """{file name: natural width} of the images rendered in the panel (0: the browser could not load it)."""
    page.wait_for_selector(f"{panel} .jp-RenderedMarkdown img", timeout=60_000)
    widths = page.evaluate(COLLECT_IMAGES, panel)
    return {Path(src.split("?")[0]).name: width for src, width in widths.items() if not re.match(r"[a-z]+:", src)
            or Path(src.split("?")[0]).name in expected}


def test_in_chromium_the_start_page_and_an_exercise_show_their_diagrams(lab, chromium_page):
    """A student's first two screens, in a real browser: the README that `make lab` opens, rendered, then
    exercise 01. Every diagram they show must have loaded (natural width > 0); screenshots in runs/lab/."""
    url, token, start_url = lab
    page, shots = chromium_page, ROOT / "runs" / "lab"
    shots.mkdir(parents=True, exist_ok=True)

    page.goto(start_url)
    page.wait_for_selector(".jp-MarkdownViewer .jp-RenderedMarkdown img", timeout=120_000)
    shown = _shown_images(page, ".jp-MarkdownViewer", _local_images(Path("README.md")))
    assert {name for name, width in shown.items() if width > 0} >= _local_images(Path("README.md")), shown
    page.locator(".jp-MarkdownViewer .jp-RenderedMarkdown h1").first.scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    page.screenshot(path=shots / "start_page.png")

    page.goto(f"{url}/lab/tree/exercises/01_identity_block.ipynb?token={token}")
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=120_000)
    expected = _local_images(Path("exercises/01_identity_block.ipynb"))
    assert "identity_block.png" in expected
    shown = _shown_images(page, ".jp-NotebookPanel", expected)
    loaded = {name for name, width in shown.items() if width > 0}
    assert loaded >= expected, f"diagrams not displayed: {sorted(expected - loaded)} (natural widths: {shown})"
    page.locator('.jp-NotebookPanel .jp-RenderedMarkdown img[src*="identity_block.png"]').scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    page.screenshot(path=shots / "exercise_01.png")
