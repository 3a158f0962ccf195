"""The service behind nginx (proxy.py, deploy/nginx.conf): the same answers, nginx's own refusals as JSON,
and slow clients that cannot starve it. nginx comes from the system's packages (.ci/run installs it)."""

import io
import json
import shutil
import socket
import sys
from pathlib import Path

import pytest
import requests
from PIL import Image

import api
import proxy
import resnets_utils as ru

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import attack  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("nginx") is None and not Path("/usr/sbin/nginx").is_file(),
                                reason="nginx is not installed (sudo apt-get install nginx; .ci/run installs it)")


@pytest.fixture(scope="module")
def photo():
    buffer = io.BytesIO()
    Image.fromarray(ru.load_dataset()[2][0]).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def behind_nginx(stand_in_model_file):
    url, processes = proxy.start_behind_nginx(stand_in_model_file)
    yield url
    proxy.stop(processes)


def _json_error(response, status):
    assert response.status_code == status, response.text[:300]
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    return response.json()["error"]


def test_the_filled_in_configuration_passes_nginx_t(tmp_path):
    config = proxy.write_config(18080, 15000, tmp_path)  # raises ProxyError with nginx's message if refused
    text = config.read_text()
    assert "listen 127.0.0.1:18080;" in text and "proxy_pass http://127.0.0.1:15000;" in text
    assert "client_max_body_size 10m;" in text and "$binary_remote_addr" in text


def test_a_broken_configuration_is_refused_with_nginx_message(tmp_path, monkeypatch):
    monkeypatch.setattr(proxy, "render_config", lambda *a, **k: "events {}\nhttp { server { listen nonsense; } }\n")
    with pytest.raises(proxy.ProxyError, match="nginx refused"):
        proxy.write_config(18080, 15000, tmp_path)


def test_answers_through_nginx_are_the_service_answers(behind_nginx, stand_in_model_file, photo):
    health = requests.get(f"{behind_nginx}/health", timeout=10)
    assert health.status_code == 200 and health.json()["classes"] == [0, 1, 2, 3, 4, 5]
    answer = requests.post(f"{behind_nginx}/predict", files={"image": ("photo.png", photo)}, timeout=30)
    model = ru.keras.models.load_model(stand_in_model_file, compile=False)
    assert answer.status_code == 200 and answer.json()["label"] == ru.predict_image(model, photo, [0, 1, 2, 3, 4, 5])["label"]
    # the service's own JSON errors pass through unchanged
    assert "There is no /nope" in _json_error(requests.get(f"{behind_nginx}/nope", timeout=10), 404)
    assert "is not a JPEG" in _json_error(requests.post(f"{behind_nginx}/predict", files={"image": ("x.png", b"hello")}, timeout=10), 415)


@pytest.mark.parametrize(
    "case, status, words",
    [
        ("upload over 10 MB", 413, "larger than the 10 MB limit"),
        ("headers over 8 KB", 400, "headers are over 8 KB"),
        ("URL of 40 KB", 414, "URL is too long"),
    ],
)
def test_nginx_refusals_are_json(behind_nginx, case, status, words):
    if case == "upload over 10 MB":
        response = requests.post(f"{behind_nginx}/predict", files={"image": ("big.png", b"\0" * (11 * 2**20))}, timeout=30)
    elif case == "headers over 8 KB":
        response = requests.get(f"{behind_nginx}/health", headers={"X-Padding": "a" * 9000}, timeout=10)
    else:
        response = requests.get(f"{behind_nginx}/{'a' * 40000}", timeout=10)
    assert words in _json_error(response, status)


def test_too_many_predictions_from_one_address_get_json_429(behind_nginx, photo):
    with requests.Session() as session:
        statuses = [session.post(f"{behind_nginx}/predict", files={"image": ("p.png", photo)}, timeout=30) for _ in range(3 * proxy.PREDICTIONS_PER_SECOND)]
    limited = [r for r in statuses if r.status_code == 429]
    assert limited, [r.status_code for r in statuses]
    assert "Too many requests" in _json_error(limited[0], 429)
    assert {r.status_code for r in statuses} <= {200, 429}


def test_slow_clients_do_not_starve_health(behind_nginx):
    """tools/attack.py's attack for a few seconds: every /health probe (from another address) is answered."""
    result = attack.attack(behind_nginx, duration_s=8)
    assert result["probes"] >= 20, result
    assert result["failed"] == 0, result
    assert result["attack_connections"]["slow headers"]["opened"] >= 150


def test_a_stopped_service_gives_json_502(stand_in_model_file):
    url, (nginx, service) = proxy.start_behind_nginx(stand_in_model_file)
    try:
        proxy.stop([service])
        assert "not answering" in _json_error(requests.get(f"{url}/health", timeout=10), 502)  # Bad Gateway, in JSON
    finally:
        proxy.stop([nginx])


def test_no_nginx_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(proxy.Path, "is_file", lambda self: False)
    with pytest.raises(proxy.ProxyError, match="apt-get install nginx"):
        proxy.nginx_binary()


def test_attack_script_refuses_durations_out_of_bounds():
    with pytest.raises(SystemExit):
        attack.main(["--duration", "100000"])


def test_a_port_in_use_is_named_and_the_service_stopped(stand_in_model_file):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(proxy.ProxyError, match="Address already in use.*pick another with --port"):
            proxy.start_behind_nginx(stand_in_model_file, port=taken.getsockname()[1])
