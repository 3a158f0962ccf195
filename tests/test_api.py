"""The prediction service: answers, every bad input's 4xx, concurrency; in-process and over real HTTP.

The tests use a small stand-in model with ResNet50's input and output shapes (training the real one takes
minutes); that the service's answer is the one ``predict_image`` gives is what they check.
"""

import io
import json
import shutil
import socket
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

import api
import resnets_utils as ru
import signs_dataset as sd

ROOT = Path(__file__).resolve().parents[1]
keras, layers = ru.keras, ru.layers


@pytest.fixture(scope="module")
def model_file(stand_in_model_file):
    return stand_in_model_file


@pytest.fixture(scope="module")
def model(model_file):
    return keras.models.load_model(model_file, compile=False)


@pytest.fixture(scope="module")
def client(model):
    return api.create_app(model=model).test_client()


@pytest.fixture(scope="module")
def photos():
    """Test photos as files of several kinds, as a phone or an editor would write them."""
    test_images = ru.load_dataset()[2]
    big = Image.fromarray(test_images[0]).resize((480, 480), Image.Resampling.BICUBIC)
    files = {}
    for name, image, fmt in (
        ("photo.jpg", big, "JPEG"),
        ("photo.png", Image.fromarray(test_images[1]), "PNG"),
        ("rgba.png", Image.fromarray(test_images[2]).convert("RGBA"), "PNG"),
        ("grey.png", Image.fromarray(test_images[3]).convert("L"), "PNG"),
        ("palette.gif", Image.fromarray(test_images[4]).convert("P"), "GIF"),
    ):
        buffer = io.BytesIO()
        image.save(buffer, fmt)
        files[name] = buffer.getvalue()
    return files


def _encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _bomb() -> bytes:
    """A PNG of ~70 KB that decodes to 9,000 x 9,000 pixels (81 million, twice the limit)."""
    return _encoded(Image.new("1", (9000, 9000)), "PNG", optimize=True)


# ----------------------------------------------------------------------------------------------------
# In process, with Flask's test client
# ----------------------------------------------------------------------------------------------------
def test_health_reports_the_model_and_classes(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "model": "stand_in", "classes": [0, 1, 2, 3, 4, 5], "input_shape": [64, 64, 3], "max_upload_bytes": api.MAX_UPLOAD_BYTES}


@pytest.mark.parametrize("name", ["photo.jpg", "photo.png", "rgba.png", "grey.png", "palette.gif"])
def test_predict_answers_what_predict_image_answers(client, model, photos, name):
    response = client.post("/predict", data={"image": (io.BytesIO(photos[name]), name)})
    assert response.status_code == 200, response.json
    body = response.json
    expected = ru.predict_image(model, photos[name], [0, 1, 2, 3, 4, 5])
    assert body["label"] == expected["label"] and body["probability"] == pytest.approx(expected["probability"], abs=1e-5)
    assert [p["label"] for p in body["probabilities"]] == list(expected["probabilities"])
    probabilities = [p["probability"] for p in body["probabilities"]]
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) == pytest.approx(1, abs=1e-4)
    assert list(body) == ["label", "probability", "probabilities"]


def test_exif_orientation_is_applied(client):
    """A phone stores a portrait photo sideways with an EXIF tag; the service must see it upright."""
    upright = Image.fromarray(ru.load_dataset()[2][5]).resize((200, 200))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    sideways = _encoded(upright.transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif, quality=95)
    plain = _encoded(upright, "JPEG", quality=95)
    a = client.post("/predict", data={"image": (io.BytesIO(sideways), "a.jpg")}).json
    b = client.post("/predict", data={"image": (io.BytesIO(plain), "b.jpg")}).json
    assert a["label"] == b["label"] and a["probability"] == pytest.approx(b["probability"], abs=0.02)


def _ico_bomb() -> bytes:
    """An ICO file whose single entry is a 12000x12000 PNG: Pillow decodes it inside Image.open, were ICO accepted."""
    png = io.BytesIO()
    Image.new("1", (12000, 12000)).save(png, "PNG")
    data = png.getvalue()
    header = struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(data), 22)
    return header + data


def _corrupt_avif() -> bytes:
    """A small AVIF with two bytes changed: its decoder raised RuntimeError (an HTTP 500) when AVIF was accepted."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 120, 40)).save(buffer, "AVIF")
    data = bytearray(buffer.getvalue())
    data[len(data) // 2] ^= 0xFF
    data[len(data) // 2 + 7] ^= 0xFF
    return bytes(data)


def _multipart(parts: list[bytes]) -> dict:
    return {"data": b"".join(b"--B\r\n" + part + b"\r\n" for part in parts) + b"--B--\r\n", "content_type": "multipart/form-data; boundary=B"}


def _file_part(photo: bytes, filename: bytes = b"photo.png") -> bytes:
    return b'Content-Disposition: form-data; name="image"; filename="' + filename + b'"\r\nContent-Type: image/png\r\n\r\n' + photo


BAD_REQUESTS = {
    "missing field": (lambda photos: {"data": {"photo": (io.BytesIO(photos["photo.png"]), "x.png")}}, 400, "field 'image'"),
    "no file at all": (lambda photos: {"data": {}}, 400, "field 'image'"),
    "a JSON body": (lambda photos: {"json": {"image": "x"}}, 400, "field 'image'"),
    "empty file": (lambda photos: {"data": {"image": (io.BytesIO(b""), "empty.jpg")}}, 400, "is empty"),
    "not an image": (lambda photos: {"data": {"image": (io.BytesIO(b"%PDF-1.7 hello"), "doc.pdf")}}, 415, "is not a JPEG, PNG, WebP, GIF or BMP image"),
    "truncated image": (lambda photos: {"data": {"image": (io.BytesIO(photos["photo.jpg"][:2000]), "cut.jpg")}}, 400, "truncated or corrupt"),
    "decompression bomb": (lambda photos: {"data": {"image": (io.BytesIO(_bomb()), "bomb.png")}}, 413, "more than the 12,000,000 allowed for PNG images"),
    "an ICO wrapping a huge PNG": (lambda photos: {"data": {"image": (io.BytesIO(_ico_bomb()), "icon.ico")}}, 415, "is not a JPEG, PNG, WebP, GIF or BMP image"),
    "a corrupt AVIF": (lambda photos: {"data": {"image": (io.BytesIO(_corrupt_avif()), "photo.avif")}}, 415, "is not a JPEG, PNG, WebP, GIF or BMP image"),
    "two images": (lambda photos: {"data": {"image": [(io.BytesIO(photos["photo.png"]), "a.png"), (io.BytesIO(photos["photo.png"]), "b.png")]}}, 400, "exactly one file"),
    "an image and another file": (lambda photos: {"data": {"image": (io.BytesIO(photos["photo.png"]), "a.png"), "extra": (io.BytesIO(b"x"), "b.txt")}}, 400, "exactly one file"),
    "2,000 form fields in 60 kB": (lambda photos: _multipart([b'Content-Disposition: form-data; name="f%d"\r\n\r\nx' % i for i in range(2000)]
                                                                + [_file_part(photos["photo.png"])]), 400, "more than 20 parts"),
    "a file name in Latin-1": (lambda photos: _multipart([_file_part(photos["photo.png"], "café.png".encode("latin-1"))]), 400, "UTF-8 file name"),
    "over the size limit": (lambda photos: {"data": {"image": (io.BytesIO(b"\xff" * (api.MAX_UPLOAD_BYTES + 1)), "huge.jpg")}}, 413, "10 MB limit"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_uploads_get_a_clear_4xx(client, photos, case):
    make_kwargs, status, message = BAD_REQUESTS[case]
    response = client.post("/predict", **make_kwargs(photos))
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json and set(response.json) == {"error"}
    assert message in response.json["error"]


@pytest.mark.parametrize(
    ("method", "path", "status", "message"),
    [("GET", "/predict", 405, "use POST"), ("PUT", "/health", 405, "use GET"), ("OPTIONS", "/predict", 405, "OPTIONS is not allowed on /predict; use POST"),
     ("GET", "/nowhere", 404, "POST /predict"), ("POST", "/", 404, "GET /health")],
)
def test_wrong_routes_and_methods_get_json(client, method, path, status, message):
    response = client.open(path, method=method)
    assert response.status_code == status and message in response.json["error"]


def test_an_unexpected_failure_is_a_json_500_and_the_app_keeps_serving(model, photos, monkeypatch):
    client = api.create_app(model=model).test_client()
    monkeypatch.setattr(ru, "predict_image", lambda *args: 1 / 0)
    response = client.post("/predict", data={"image": (io.BytesIO(photos["photo.png"]), "a.png")})
    assert response.status_code == 500 and "Internal error" in response.json["error"]
    monkeypatch.undo()
    assert client.post("/predict", data={"image": (io.BytesIO(photos["photo.png"]), "a.png")}).status_code == 200


def test_concurrent_requests_get_the_same_answers(client, model, photos):
    expected = {name: ru.predict_image(model, data, [0, 1, 2, 3, 4, 5])["label"] for name, data in photos.items()}
    app = client.application

    def ask(i):
        name = list(photos)[i % len(photos)]
        response = app.test_client().post("/predict", data={"image": (io.BytesIO(photos[name]), name)})
        return name, response.status_code, response.json["label"]

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, range(80)))
    assert all(status == 200 for _, status, _ in answers)
    assert all(label == expected[name] for name, _, label in answers)


def test_no_trained_model_says_how_to_train_one(tmp_path):
    with pytest.raises(api.ModelError, match=r"No trained model at .*make train"):
        api.create_app(model_path=tmp_path / "missing.keras")
    (tmp_path / "broken.keras").write_bytes(b"not a model")
    with pytest.raises(api.ModelError, match="is not a loadable Keras model"):
        api.create_app(model_path=tmp_path / "broken.keras")


def test_command_line_without_a_model_exits_with_the_message(tmp_path):
    result = subprocess.run(
        [sys.executable, "api.py", "--model", str(tmp_path / "missing.keras")], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert "No trained model at" in result.stderr and "make train" in result.stderr and "Traceback" not in result.stderr


# ----------------------------------------------------------------------------------------------------
# Over real HTTP: the Waitress server that `python api.py` starts
# ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(model_file):
    url, process = api.start_in_background(model_file, threads=8)
    yield url, process
    process.terminate()
    process.wait(timeout=30)


def test_server_answers_the_readme_request(server, model, photos, tmp_path):
    """The curl line in docs/guide.md, verbatim apart from the port."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (CI installs it)")
    url, _ = server
    (tmp_path / "sample.jpg").write_bytes(photos["photo.jpg"])
    result = subprocess.run(["curl", "-sS", "-X", "POST", "-F", "image=@sample.jpg", f"{url}/predict"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    body = json.loads(result.stdout)
    assert body["label"] == ru.predict_image(model, photos["photo.jpg"], [0, 1, 2, 3, 4, 5])["label"]


def test_server_survives_every_bad_input_and_concurrent_clients(server, photos):
    url, process = server

    def post(kwargs):
        if isinstance(kwargs.get("data"), bytes):  # a raw multipart body, sent as it is
            return requests.post(f"{url}/predict", data=kwargs["data"], headers={"Content-Type": kwargs["content_type"]}, timeout=60)
        if "data" in kwargs:  # requests takes files separately from form fields
            files = [(field, (name, stream)) for field, values in kwargs["data"].items() for stream, name in (values if isinstance(values, list) else [values])]
            return requests.post(f"{url}/predict", files=files, timeout=60)
        return requests.post(f"{url}/predict", json=kwargs["json"], timeout=60)

    def good(i):
        name = list(photos)[i % len(photos)]
        return requests.post(f"{url}/predict", files={"image": (name, photos[name])}, timeout=60).status_code

    def bad(case):
        make_kwargs, status, message = BAD_REQUESTS[case]
        response = post(make_kwargs(photos))
        return case, response.status_code, status, response.json().get("error", "")

    with ThreadPoolExecutor(16) as pool:  # good and bad requests interleaved, 16 at a time
        good_statuses = pool.map(good, range(64))
        bad_answers = pool.map(bad, list(BAD_REQUESTS) * 2)
        assert list(good_statuses) == [200] * 64
        for case, got, expected, error in bad_answers:
            assert got == expected and BAD_REQUESTS[case][2] in error, (case, got, error)

    for method, path, status in (("GET", "/predict", 405), ("DELETE", "/health", 405), ("GET", "/nowhere", 404)):
        response = requests.request(method, f"{url}{path}", timeout=10)
        assert response.status_code == status and "error" in response.json()

    # Malformed multipart (a boundary that never ends) and a lying Content-Length.
    broken = requests.post(f"{url}/predict", data=b"--xyz\r\nContent-Disposition: form-data; name=\"image\"", headers={"Content-Type": "multipart/form-data; boundary=xyz"}, timeout=10)
    assert broken.status_code == 400 and "error" in broken.json()
    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=10) as raw:
        raw.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 1000\r\n\r\n--b\r\n")
        raw.shutdown(socket.SHUT_WR)  # the client gives up half-way
        raw.recv(1000)

    health = requests.get(f"{url}/health", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert process.poll() is None, "the server died"


def test_load_script_measures_each_level(model_file, tmp_path):
    result = subprocess.run(
        [sys.executable, "tools/load_test.py", "--model", str(model_file), "--requests", "8", "--clients", "1", "2", "--output", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    levels = json.loads((tmp_path / "load_test.json").read_text())
    assert [(v["clients"], v["requests"], v["errors"]) for v in levels] == [(1, 8, 0), (2, 8, 0)]
    assert all(0 < v["p50_ms"] <= v["p95_ms"] <= v["max_ms"] for v in levels)
    assert "| 2 | 8 |" in (tmp_path / "load_test.md").read_text()


def test_load_script_refuses_a_remote_url(tmp_path):
    result = subprocess.run([sys.executable, "tools/load_test.py", "--url", "http://example.com:5000"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "must be a loopback address" in result.stderr


def _raw_upload(photo: bytes, framing: bytes, filename: bytes = b"photo.png", boundary: bytes = b"b0undary") -> bytes:
    body = (b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"image\"; filename=\"" + filename
            + b"\"\r\nContent-Type: image/png\r\n\r\n" + photo + b"\r\n--" + boundary + b"--\r\n")
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b0undary\r\nConnection: close\r\n"
    if framing == b"chunked":
        return head + b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    if framing == b"bad chunked":
        return head + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n" + body
    if framing == b"two lengths":
        return head + b"Content-Length: %d\r\nContent-Length: %d\r\n\r\n" % (len(body), len(body) + 1) + body
    if framing == b"short":
        return head + b"Content-Length: %d\r\n\r\n" % (len(body) + 100) + body
    if framing == b"expect":
        return head + b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


@pytest.mark.parametrize(
    "framing, filename, boundary",
    [(b"length", b"\xff\xfe.png", b"b0undary"), (b"chunked", b"photo.png", b"b0undary"), (b"bad chunked", b"photo.png", b"b0undary"),
     (b"two lengths", b"photo.png", b"b0undary"), (b"short", b"photo.png", b"b0undary"), (b"expect", b"photo.png", b"b0undary"),
     (b"length", b"photo.png", b"other")],
    ids=["file name not UTF-8", "chunked", "bad chunk size", "two Content-Lengths", "body shorter than declared", "Expect: 100-continue",
         "boundary not the declared one"],
)
def test_raw_requests_the_fuzzer_found_odd_get_no_5xx(server, photos, framing, filename, boundary):
    """Kept from tools/fuzz.py's HTTP runs: odd framings of a real upload, sent over a raw socket."""
    sys.path.insert(0, str(ROOT / "tools"))
    import fuzz

    url, _ = server
    answer = fuzz.send_raw(int(url.rsplit(":", 1)[1]), _raw_upload(photos["photo.png"], framing, filename, boundary))
    outcome, failed = fuzz.classify(answer)
    assert not failed, (outcome, answer[:300])
    assert requests.get(f"{url}/health", timeout=10).status_code == 200


def test_waitress_refuses_headers_over_its_limit(server):
    """api.WAITRESS_LIMITS are in force (Waitress's own default would take 256 KB of headers)."""
    url, _ = server
    response = requests.get(f"{url}/health", headers={"X-Padding": "a" * (api.WAITRESS_LIMITS["max_request_header_size"] + 1000)}, timeout=10)
    assert response.status_code == 431
