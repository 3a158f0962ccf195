"""Fuzz the two doors hostile input comes through: image decoding, and raw HTTP requests to the service.

    python tools/fuzz.py images [--examples 100000] [--seed 0]   # signs_dataset.prepare_image
    python tools/fuzz.py http [--examples 20000] [--seed 0]      # python api.py (Waitress), over a socket

``images``: Hypothesis draws files from small valid images in every format Pillow writes here (the five
accepted ones and a dozen others: AVIF, ICO, TIFF, JPEG 2000, ...), with up to eight mutations each:
bit flips, overwritten bytes, insertions, deletions, truncation, and "interesting" integers (0, 2^31-1,
2^32-1, ...) written where size fields are. Each goes to ``prepare_image``: an array or an
``ImageError`` is correct; any other exception is a crash.

``http``: raw requests to the service on a free loopback port (a small stand-in model unless
``--model``): methods, paths and versions valid and not, multipart bodies with mutated images, odd file
names and boundaries, wrong or duplicated Content-Length, chunked bodies. A 5xx answer is a finding;
afterwards ``/health`` must still answer. Waitress answers some malformed requests itself, in plain text:
those are counted apart.

Both are bounded (``--examples``) and deterministic for a ``--seed``; they report what was tried and what
was found, and write up to 20 failing inputs to ``runs/fuzz/``. Not a test: they take minutes.
"""

from __future__ import annotations

import argparse
import collections
import functools
import io
import json
import socket
import struct
import sys
import tempfile
import time
import warnings
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import signs_dataset as sd  # noqa: E402

OUTPUT = ROOT / "runs" / "fuzz"
OTHER_FORMATS = ("AVIF", "ICO", "TIFF", "TGA", "PPM", "PCX", "JPEG2000", "QOI", "DDS", "SGI", "SPIDER", "ICNS", "PDF")
INTERESTING = (0, 1, 0x7F, 0xFF, 0x7FFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)


@functools.cache
def seed_files() -> dict[str, bytes]:
    """Small valid images, one per format Pillow can write here (a format it cannot is left out)."""
    from PIL import Image

    image = Image.linear_gradient("L").resize((24, 20)).convert("RGB")
    seeds = {}
    for fmt in (*sd.ACCEPTED_FORMATS, *OTHER_FORMATS):
        buffer = io.BytesIO()
        try:
            (image.convert("P") if fmt == "GIF" else image).save(buffer, fmt)
        except (OSError, ValueError, KeyError):
            continue
        seeds[fmt] = buffer.getvalue()
    return seeds


@st.composite
def mutated_files(draw):
    """``(format, bytes)``: a seed file with 0-8 mutations. Positions come from a Random that Hypothesis
    seeds, so they spread evenly over the file (Hypothesis's own draws lean towards 0: the magic bytes)."""
    seeds = seed_files()
    name = draw(st.sampled_from([n for n in sorted(seeds) for _ in range(3 if n in sd.ACCEPTED_FORMATS else 1)]))  # the decoders we run, more often
    rng = draw(st.randoms(use_true_random=True))
    data = bytearray(seeds[name])
    for _ in range(rng.choice([0, 1, 1, 2, 2, 3, 4, 8])):
        if not data:
            data += rng.randbytes(rng.randint(1, 16))
            continue
        at, kind = rng.randrange(len(data)), rng.choice(["flip", "overwrite", "insert", "delete", "truncate", "integer"])
        if kind == "flip":
            data[at] ^= 1 << rng.randrange(8)
        elif kind == "overwrite":
            chunk = rng.randbytes(rng.randint(1, 8))
            data[at:at + len(chunk)] = chunk
        elif kind == "insert":
            data[at:at] = rng.randbytes(rng.randint(1, 64))
        elif kind == "delete":
            del data[at:at + rng.randint(1, 64)]
        elif kind == "truncate":
            del data[at:]
        else:
            layout = rng.choice([">H", "<H", ">I", "<I"])
            packed = struct.pack(layout, rng.choice(INTERESTING) & (0xFFFF if "H" in layout else 0xFFFFFFFF))
            data[at:at + len(packed)] = packed
    return name, bytes(data)


class Findings:
    """Counts of outcomes, and the first failing inputs."""

    def __init__(self, kind: str):
        self.kind, self.tried, self.failed, self.outcomes, self.failures = kind, 0, 0, collections.Counter(), []
        self.slowest = (0.0, None)

    def record(self, outcome: str, failed: bool, sample: bytes, seconds: float, detail: str = "") -> None:
        self.tried += 1
        self.outcomes[outcome] += 1
        if seconds > self.slowest[0]:
            self.slowest = (seconds, outcome)
        self.failed += failed
        if failed and len(self.failures) < 20:
            self.failures.append((outcome, detail, sample))

    def report(self, started: float) -> dict:
        OUTPUT.mkdir(parents=True, exist_ok=True)
        for i, (outcome, detail, sample) in enumerate(self.failures):
            (OUTPUT / f"{self.kind}-{i:02d}.bin").write_bytes(sample)
        report = {"kind": self.kind, "tried": self.tried, "seconds": round(time.perf_counter() - started, 1),
                  "failures": self.failed, "failure_kinds": sorted({f"{o}: {d}"[:200] for o, d, _ in self.failures}),
                  "outcomes": dict(self.outcomes.most_common()), "slowest_s": round(self.slowest[0], 3), "slowest_outcome": self.slowest[1]}
        (OUTPUT / f"{self.kind}.json").write_text(json.dumps(report, indent=1) + "\n")
        return report


def _settings(examples: int, seed: int):
    return settings(max_examples=examples, deadline=None, database=None, derandomize=False, phases=[Phase.generate],
                    suppress_health_check=list(HealthCheck), print_blob=False)


def fuzz_images(examples: int, seed: int) -> dict:
    """``examples`` mutated files through ``prepare_image``; a crash is any exception but ``ImageError``."""
    findings, started = Findings("images"), time.perf_counter()
    warnings.simplefilter("ignore")  # Pillow warns about every large or odd header; the outcomes say what happened

    @_settings(examples, seed)
    @given(mutated_files())
    def one(case):
        name, data = case
        start = time.perf_counter()
        try:
            sd.prepare_image(data)
            outcome, failed, detail = f"{name} -> decoded", False, ""
        except sd.ImageError as exc:
            outcome, failed, detail = f"{name} -> {type(exc).__name__}", False, ""
        except Exception as exc:  # noqa: BLE001 - what the fuzzer looks for
            outcome, failed, detail = f"{name} -> CRASH {type(exc).__name__}", True, str(exc)
        findings.record(outcome, failed, data, time.perf_counter() - start, detail)

    _seeded(one, seed)
    return findings.report(started)


# ----------------------------------------------------------------------------------------------------
# HTTP
# ----------------------------------------------------------------------------------------------------
def _pick(rng, usual, odd, odd_share: float = 0.1):
    """Mostly one of ``usual``; with ``odd_share`` chance one of ``odd`` (a callable gives fresh bytes)."""
    value = rng.choice(odd) if rng.random() < odd_share else rng.choice(usual)
    return value(rng) if callable(value) else value


@st.composite
def raw_requests(draw):
    """One raw HTTP/1.1 request: mostly a well-formed upload, so most reach the app, with a share of every oddity."""
    rng = draw(st.randoms(use_true_random=True))
    junk = lambda n: lambda r: r.randbytes(r.randint(0, n))  # noqa: E731
    method = _pick(rng, [b"POST"] * 8 + [b"GET", b"HEAD"], [b"PUT", b"OPTIONS", b"DELETE", b"BREW", b"post", junk(8)])
    path = _pick(rng, [b"/predict"] * 8 + [b"/health", b"/"], [b"/predict?image=1", b"//predict", b"/%00", b"/../etc/passwd",
                                                           b"/predict/" + b"a" * 3000, junk(24)])
    version = _pick(rng, [b"HTTP/1.1"] * 4 + [b"HTTP/1.0"], [b"HTTP/2.0", b"HTTP/1.x", b""], 0.05)
    boundary = _pick(rng, [b"b0undary", b"----WebKitFormBoundary7MA4YWxkTrZu0gW"], [b"", b"x" * 80, b"\"quoted\"", b"a;b", junk(12)])
    parts = []
    for _ in range(rng.choice([1, 1, 1, 1, 0, 2, 3])):
        field = _pick(rng, [b"image"], [b"file", b"", b"images", junk(10)])
        filename = _pick(rng, [b"photo.jpg", b"IMG_0001.png"], [b"\xff\xfe.png", b"", b"../../x", "\u0444\u043e\u0442\u043e.png".encode(), junk(20)], 0.3)
        content = draw(mutated_files())[1] if rng.random() < 0.8 else rng.randbytes(rng.randint(0, 200))
        parts.append(b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"" + field + b"\"; filename=\"" + filename
                     + b"\"\r\nContent-Type: application/octet-stream\r\n\r\n" + content + b"\r\n")
    body = b"".join(parts) + (b"--" + boundary + b"--\r\n" if rng.random() < 0.9 else b"")
    if rng.random() < 0.05:
        body = rng.randbytes(rng.randint(0, 300))
    content_type = _pick(rng, [b"multipart/form-data; boundary=" + boundary], [b"multipart/form-data", b"application/json", b"image/png", b""])
    headers = [b"Host: 127.0.0.1"] + ([b"Content-Type: " + content_type] if content_type else [])
    framing = _pick(rng, ["length"], ["none", "short", "twice", "chunked", "bad chunked"], 0.2)
    if framing == "length":
        headers.append(b"Content-Length: %d" % len(body))
    elif framing == "short":
        headers.append(b"Content-Length: %d" % max(0, len(body) - rng.randint(1, 50)))
    elif framing == "twice":
        headers += [b"Content-Length: %d" % len(body), b"Content-Length: %d" % (len(body) + 1)]
    elif framing in ("chunked", "bad chunked"):
        headers.append(b"Transfer-Encoding: chunked")
        body = (b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n") if framing == "chunked" else (b"zz\r\n" + body)
    if rng.random() < 0.1:
        headers.append(rng.choice([b"Expect: 100-continue", b"X-Forwarded-For: ::1", b"Accept: */*", b"Content-Encoding: gzip",
                                   b": empty", b"Bad Header", b"X-Long: " + b"a" * 20000]))
    headers.append(b"Connection: close")
    return method + b" " + path + b" " + version + b"\r\n" + b"\r\n".join(headers) + b"\r\n\r\n" + body


def send_raw(port: int, request: bytes, timeout: float = 10) -> bytes:
    """Send ``request`` on a new connection, close the sending side, and read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(request)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may answer and close before reading everything
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    return b"".join(chunks)


def classify(answer: bytes) -> tuple[str, bool]:
    """``(outcome, failed)`` for one raw answer: a 5xx from the app, or an answer that is not JSON from it, fails."""
    if not answer:
        return "closed without an answer", False
    while answer.startswith(b"HTTP/1.1 100 "):  # "100 Continue" for an Expect header; the answer follows
        answer = answer.partition(b"\r\n\r\n")[2]
        if not answer:
            return "closed after 100 Continue", False
    head, _, _ = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.split(b"\r\n")
    fields = status_line.split(b" ")
    status = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else 0
    headers = {line.split(b":", 1)[0].strip().lower(): line.split(b":", 1)[1].strip() for line in header_lines if b":" in line}
    from_waitress = headers.get(b"content-type", b"").startswith(b"text/plain")  # the app only ever answers JSON
    origin = "Waitress (plain text)" if from_waitress else "the app"
    failed = status >= 500 and not from_waitress or (not from_waitress and not headers.get(b"content-type", b"").startswith(b"application/json")
                                                     and status != 0)
    return f"HTTP {status} from {origin}", failed


def fuzz_http(examples: int, seed: int, model: Path | None = None) -> dict:
    import api
    import proxy

    with tempfile.TemporaryDirectory() as scratch:
        model = model or _stand_in_model(Path(scratch) / "stand_in.keras")
        url, process = api.start_in_background(model, threads=4)
        port = int(url.rsplit(":", 1)[1])
        findings, started = Findings("http"), time.perf_counter()
        try:
            @_settings(examples, seed)
            @given(raw_requests())
            def one(request):
                start = time.perf_counter()
                try:
                    outcome, failed = classify(send_raw(port, request))
                except OSError as exc:
                    outcome, failed = f"connection error {type(exc).__name__}", isinstance(exc, TimeoutError)
                findings.record(outcome, failed, request, time.perf_counter() - start)

            _seeded(one, seed)
            alive = process.poll() is None and b" 200 " in send_raw(port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        finally:
            proxy.stop([process])
    report = findings.report(started)
    report["health_after"] = "answers 200" if alive else "NOT ANSWERING"
    (OUTPUT / "http.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def _stand_in_model(path: Path) -> Path:
    import resnets_utils as ru

    keras, layers = ru.keras, ru.layers
    inputs = keras.Input((64, 64, 3))
    x = layers.GlobalAveragePooling2D()(layers.Conv2D(4, 5, strides=4)(inputs))
    keras.Model(inputs, layers.Dense(6, activation="softmax")(x)).save(path)
    return path


def _seeded(test, seed: int) -> None:
    """Run a Hypothesis test with its random source fixed by ``seed``: the same inputs on every run."""
    import random

    from hypothesis import seed as hypothesis_seed

    random.seed(seed)
    hypothesis_seed(seed)(test)()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/fuzz.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("target", choices=["images", "http"])
    parser.add_argument("--examples", type=int, help="inputs to try (default: 100000 images, 20000 requests)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", type=Path, help="http: serve this model instead of a small stand-in")
    args = parser.parse_args(argv)
    examples = args.examples or (100_000 if args.target == "images" else 20_000)
    if not 1 <= examples <= 1_000_000:
        parser.error("--examples must be between 1 and 1,000,000")
    report = fuzz_images(examples, args.seed) if args.target == "images" else fuzz_http(examples, args.seed, args.model)
    print(json.dumps({k: v for k, v in report.items() if k != "outcomes"}, indent=1))
    print("outcomes:", ", ".join(f"{k}: {v}" for k, v in report["outcomes"].items()))
    return 1 if report["failures"] or report.get("health_after", "answers 200") != "answers 200" else 0


if __name__ == "__main__":
    sys.exit(main())
