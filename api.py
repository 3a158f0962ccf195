"""The prediction service: a small REST API around the trained ResNet50.

    python api.py                      # serves runs/default-seed0/model.keras on http://localhost:5000
    curl -X POST -F image=@sample.jpg 'http://localhost:5000/predict'

``python api.py`` serves with Waitress, a production WSGI server (several threads, one process, the model
loaded once). ``python api.py --dev`` uses Flask's development server instead, for debugging only. The app
factory also works with any WSGI server, for example ``waitress-serve --port 5000 --call api:create_app``
(the model path then comes from ``$RESNETS_MODEL``).

Endpoints:

* ``POST /predict``: a multipart form with one file in the field ``image`` (any size and orientation;
  JPEG, PNG, ...). The photo is prepared exactly like the training images (``resnets_utils.predict_image``)
  and the answer is ``{"label": 3, "probability": 0.97, "probabilities": [{"label": 3, "probability":
  0.97}, ...]}``, most likely class first.
* ``GET /health``: ``{"status": "ok", "model": ..., "classes": [...], ...}``.

Every error is JSON, ``{"error": "..."}``, with a 4xx status that says whose fault it was: 400 for a
missing, empty, corrupt or extra file, 404/405 for a wrong route or method, 413 for an upload over
``MAX_UPLOAD_BYTES`` or an image over the pixel limits of ``signs_dataset`` (read from its header), 415
for a file that is not a JPEG, PNG, WebP, GIF or BMP image.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

import resnets_utils as ru
from resnets_predict import CLASSES, DEFAULT_MODEL, ModelError, load_model

MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # a 12-megapixel phone JPEG is 3-6 MB
MAX_FORM_PARTS = 20  # a request needs one; Werkzeug's default is 1,000, each parsed before the app runs
MODEL_ENV = "RESNETS_MODEL"
# Waitress's own limits, for running it alone. It reads a whole request before the app sees it; past
# these sizes it stops reading and answers 413/431 itself (plain text, not our JSON). They bound memory
# and idle connections, not slow ones: a client that trickles a byte every few seconds is never idle, and
# holds one of `connection_limit` channels as long as it likes. In front of clients you do not control,
# put nginx before it (proxy.py, deploy/nginx.conf; tools/attack.py measures both).
WAITRESS_LIMITS = {
    "max_request_body_size": 4 * MAX_UPLOAD_BYTES,  # past this Waitress stops buffering (the app refuses at 1x with JSON)
    "max_request_header_size": 16 * 1024,  # default 256 KB; a photo upload needs a few hundred bytes
    "channel_timeout": 30,  # seconds a connection may stay silent (default 120)
    "connection_limit": 100,
    "cleanup_interval": 10,
}
CURL_HINT = "curl -X POST -F image=@photo.jpg http://localhost:5000/predict"
logger = logging.getLogger("resnets.api")


def create_app(model_path: str | Path | None = None, model=None, classes=CLASSES, max_upload_bytes: int = MAX_UPLOAD_BYTES) -> Flask:
    """Build the Flask app. The model is loaded here, once: from ``model`` (a Keras model), else
    ``model_path``, else ``$RESNETS_MODEL``, else ``runs/default-seed0/model.keras``.

    Raises ``ModelError`` (with the command that trains a model) when there is no usable model.
    """
    if model is None:
        model_path = Path(model_path or os.environ.get(MODEL_ENV) or DEFAULT_MODEL)
        model = load_model(model_path)
    predictor = ru.make_predictor(model)
    predictor(ru.tf.zeros((1, *model.input_shape[1:])))  # trace now, so the first request is as fast as the rest
    classes = list(classes)

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = max_upload_bytes  # larger bodies get a 413 before they are parsed
    app.config["MAX_FORM_PARTS"] = MAX_FORM_PARTS
    app.json.sort_keys = False  # keep "label" first and the probabilities in their order

    # No automatic OPTIONS answer (an empty text/html 200): OPTIONS gets the JSON 405 like any other method.
    @app.get("/health", provide_automatic_options=False)
    def health():
        return jsonify(
            status="ok",
            model=str(model_path) if model_path else model.name,
            classes=classes,
            input_shape=list(model.input_shape[1:]),
            max_upload_bytes=max_upload_bytes,
        )

    @app.post("/predict", provide_automatic_options=False)
    def predict():
        uploads = request.files.getlist("image")
        if not uploads:
            if request.mimetype == "multipart/form-data" and not request.files and not request.form and request.content_length:
                return _error(400, "The multipart body has no part that could be read as a file. Send the photo in the field 'image' "
                                   f"with a UTF-8 file name (a name in another encoding makes the part unreadable), for example: {CURL_HINT}")
            return _error(400, f"No file in the multipart field 'image'. Send one photo, for example: {CURL_HINT}")
        if len(uploads) > 1 or len(request.files) > 1:
            return _error(400, f"Send exactly one file, in the field 'image'; this request had {sum(len(v) for v in request.files.listvalues())}.")
        data = uploads[0].read()
        if not data:
            return _error(400, f"The file '{uploads[0].filename or 'image'}' is empty.")
        try:
            result = ru.predict_image(predictor, data, classes)
        except ru.ImageTooLargeError as exc:
            return _error(413, str(exc))
        except ru.NotAnImageError as exc:
            return _error(415, str(exc))
        except ru.ImageError as exc:
            return _error(400, str(exc))
        ranked = [{"label": label, "probability": p} for label, p in result["probabilities"].items()]
        return jsonify(label=result["label"], probability=result["probability"], probabilities=ranked)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if exc.code == 404:
            message = f"There is no {request.path}. Use POST /predict (a photo in the field 'image') or GET /health."
        elif exc.code == 405:
            message = f"{request.method} is not allowed on {request.path}; use {', '.join(sorted(set(exc.valid_methods or []) - {'HEAD', 'OPTIONS'}))}."
        elif exc.code == 413 and (request.content_length or 0) <= max_upload_bytes:  # Werkzeug's limit on form parts
            return _error(400, f"The form has more than {MAX_FORM_PARTS} parts; send one file, in the field 'image'.")
        elif exc.code == 413:
            message = f"The upload is larger than the {max_upload_bytes / 2**20:.0f} MB limit; send a smaller photo (64x64 pixels are enough)."
        else:
            message = exc.description
        return _error(exc.code or 500, message)

    @app.errorhandler(Exception)
    def unexpected_error(exc: Exception):  # a bug of ours: log it, answer JSON, keep serving
        logger.exception("unexpected error on %s %s", request.method, request.path)
        return _error(500, "Internal error while handling the request; it has been logged.")

    return app


def _error(status: int, message: str):
    response = jsonify(error=message)
    response.status_code = status
    return response


def start_in_background(model_path: str | Path | None = None, port: int | None = None, threads: int = 4, timeout_s: float = 180) -> tuple[str, subprocess.Popen]:
    """Run ``python api.py`` as a separate process, as in a terminal, and wait until ``GET /health`` answers.

    Listens on 127.0.0.1 at ``port`` (default: a free port the OS picks). Returns ``(url, process)``; stop
    the server with ``process.terminate()``. For notebooks, tests and the load script. Raises
    ``RuntimeError`` with the server's own message if it exits or does not answer within ``timeout_s``.
    """
    if port is None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
    command = [sys.executable, str(Path(__file__).resolve()), "--port", str(port), "--threads", str(threads)]
    if model_path is not None:
        command += ["--model", str(model_path)]
    log = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a pipe nobody reads would block the server
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"the server exited: {log.read().strip()}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1):
                return url, process
        except OSError:
            time.sleep(0.25)
    process.kill()
    raise RuntimeError(f"the server did not answer {url}/health within {timeout_s:.0f} s")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python api.py", description="Serve the trained ResNet50 over HTTP (POST /predict, GET /health).")
    parser.add_argument("--model", type=Path, help=f"trained model (default: ${MODEL_ENV}, else runs/default-seed0/model.keras from `make train`)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    parser.add_argument("--threads", type=int, default=4, help="Waitress worker threads (default 4)")
    parser.add_argument("--dev", action="store_true", help="use Flask's development server (debugging only)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        app = create_app(args.model)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"Serving on http://{args.host}:{args.port} (POST /predict, GET /health); Ctrl+C stops.", flush=True)
    if args.dev:
        app.run(host=args.host, port=args.port, threaded=True)
    else:
        import waitress

        waitress.serve(app, host=args.host, port=args.port, threads=args.threads, ident="resnets-api", **WAITRESS_LIMITS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
