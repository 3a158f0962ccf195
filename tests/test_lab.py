"""`make lab` serves the repository root, so every figure a chapter or the README shows can be fetched."""

import json
import re
import secrets
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
    args = f"--no-browser --ip=127.0.0.1 --port={port} --ServerApp.port_retries=0 --IdentityProvider.token={token}"
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
        yield url, token
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
    url, token = lab
    for document, image in _images_shown():
        response = requests.get(f"{url}/files/{image.as_posix()}", params={"token": token}, timeout=30)
        assert response.status_code == 200, f"{document} shows {image}: JupyterLab answered {response.status_code}"
        assert response.headers["Content-Type"].startswith("image/"), (document, image, response.headers["Content-Type"])
        assert len(response.content) > 1000, (document, image)


def test_make_lab_opens_the_repository_root(lab):
    url, token = lab
    listing = requests.get(f"{url}/api/contents", params={"token": token}, timeout=30).json()
    assert {"README.md", "notebooks", "exercises", "images"} <= {entry["name"] for entry in listing["content"]}
