"""Load-test the prediction service on this machine: latency and throughput with 1, 4 and 16 clients.

    python tools/load_test.py [--model runs/default-seed0/model.keras] [--requests 400] [--clients 1 4 16]

Starts ``python api.py`` (Waitress) on a free loopback port, or uses ``--url`` if it points at this machine
(loopback only: this script never loads someone else's server). Each client keeps one connection open and
posts a 64x64 test photo (PNG) as the curl line in docs/guide.md does, one request after another; the number of
requests per level is fixed, so a run is bounded. Reports p50/p95/max latency, requests per second and
errors per level, and writes them to ``load_test.json`` and ``load_test.md`` in ``--output``.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import requests
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import api  # noqa: E402
from resnets_predict import DEFAULT_MODEL  # noqa: E402
from signs_dataset import DATA_DIR, TEST_FILE  # noqa: E402


def test_photo() -> bytes:
    """The first test photo as a PNG file, read with h5py (no TensorFlow in this process)."""
    import h5py

    with h5py.File(DATA_DIR / TEST_FILE, "r") as f:
        image = f["test_set_x"][0]
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return buffer.getvalue()


def run_level(url: str, photo: bytes, clients: int, total: int) -> dict:
    """``clients`` threads, each with its own connection, share ``total`` requests."""
    per_client = [total // clients + (i < total % clients) for i in range(clients)]

    def client(n: int) -> tuple[list[float], int]:
        latencies, errors = [], 0
        with requests.Session() as session:
            for _ in range(n):
                start = time.perf_counter()
                try:
                    response = session.post(f"{url}/predict", files={"image": ("sample.png", photo, "image/png")}, timeout=60)
                    ok = response.status_code == 200 and "label" in response.json()
                except requests.RequestException:
                    ok = False
                latencies.append(time.perf_counter() - start)
                errors += not ok
        return latencies, errors

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(client, per_client))
    elapsed = time.perf_counter() - start
    latencies = np.array([t for lat, _ in results for t in lat]) * 1000
    return {
        "clients": clients,
        "requests": int(latencies.size),
        "errors": int(sum(e for _, e in results)),
        "p50_ms": float(np.percentile(latencies, 50)),
        "p95_ms": float(np.percentile(latencies, 95)),
        "max_ms": float(latencies.max()),
        "requests_per_s": latencies.size / elapsed,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="model to serve (default: what `make train` writes)")
    parser.add_argument("--url", help="an already running service on this machine, e.g. http://127.0.0.1:5000")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=400, help="requests per level (default 400)")
    parser.add_argument("--threads", type=int, default=4, help="Waitress threads of the server it starts (default 4, as `python api.py`)")
    parser.add_argument("--output", type=Path, default=ROOT / "runs" / "load_test")
    args = parser.parse_args(argv)
    if args.url and urlparse(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        parser.error("--url must be a loopback address (127.0.0.1, localhost or ::1)")
    if not args.url and not args.model.is_file():
        parser.error(f"no trained model at {args.model}; train one with `make train` or pass --model")
    if not (DATA_DIR / TEST_FILE).is_file():
        parser.error(f"{DATA_DIR / TEST_FILE} is missing; build the data with `make data`")

    photo = test_photo()
    url, process = (args.url, None) if args.url else api.start_in_background(args.model, threads=args.threads)
    try:
        run_level(url, photo, 1, 20)  # warm-up, not reported
        levels = []
        for clients in args.clients:
            level = run_level(url, photo, clients, args.requests)
            levels.append(level)
            print(
                f"{clients:3d} clients: p50 {level['p50_ms']:6.1f} ms, p95 {level['p95_ms']:6.1f} ms, "
                f"{level['requests_per_s']:6.1f} requests/s, {level['errors']} errors of {level['requests']}",
                flush=True,
            )
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)

    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "load_test.json").write_text(json.dumps(levels, indent=1) + "\n")
    table = ["| concurrent clients | requests | p50 latency | p95 latency | requests/s | errors |", "| --- | --- | --- | --- | --- | --- |"]
    table += [f"| {v['clients']} | {v['requests']} | {v['p50_ms']:.1f} ms | {v['p95_ms']:.1f} ms | {v['requests_per_s']:.1f} | {v['errors']} |" for v in levels]
    (args.output / "load_test.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
