"""Attack the prediction service from this machine, alone and behind nginx: slow clients and costly uploads.

    python tools/attack.py [--duration 30] [--setups alone proxy] [--model runs/default-seed0/model.keras]

For each set-up it starts its own servers on free loopback ports (``alone``: ``python api.py``, Waitress
with ``api.WAITRESS_LIMITS``; ``proxy``: ``proxy.py``'s nginx in front of it) and for ``--duration``
seconds runs all of these at once from 127.0.0.1:

* slow headers: 150 connections, each sending a request's headers one byte every 2 s, never finishing;
* slow bodies: 30 ``POST /predict`` declaring 5 MB and sending 1 KB every 2 s;
* short bodies: 30 ``POST /predict`` declaring 8 MB, sending 1 MB, then going silent;
* big images: 2 clients posting the costliest image the limits accept (a 12-megapixel WebP), one after another.

A connection the server closes is opened again, as an attacker would. Meanwhile a probe sends ``GET
/health`` every 100 ms from 127.0.0.2 (another loopback address, as a real client would have: nginx's
per-address limits are meant for the attacker), with a 5 s timeout. The report: probes, p50/p99/max
latency and failures per set-up, in ``runs/attack/attack.{json,md}``. It only ever attacks the servers it
started, on loopback, and stops by itself.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import api  # noqa: E402
import proxy  # noqa: E402
import signs_dataset as sd  # noqa: E402

PROBE_SOURCE = "127.0.0.2"
PROBE_TIMEOUT_S = 5.0
MAX_DURATION_S = 300


def costly_image() -> bytes:
    """The costliest accepted upload: a WebP at the lossless pixel limit, one colour, so a few KB on disk."""
    from PIL import Image

    side = int(sd.MAX_LOSSLESS_PIXELS**0.5)
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (200, 160, 140)).save(buffer, "WEBP", quality=50)
    return buffer.getvalue()


def multipart(photo: bytes, boundary: str = "attackboundary") -> tuple[bytes, str]:
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.webp\"\r\n"
            f"Content-Type: image/webp\r\n\r\n").encode() + photo + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


class Trickler:
    """Many connections, each fed a little every few seconds; reopened when the server closes them."""

    def __init__(self, port: int, count: int, opening: bytes, drip: bytes, every_s: float):
        self.port, self.count, self.opening, self.drip, self.every_s = port, count, opening, drip, every_s
        self.sockets: list[socket.socket | None] = [None] * count
        self.opened = self.closed_by_server = 0

    def _open(self) -> socket.socket | None:
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=2)
            s.sendall(self.opening)
            self.opened += 1
            return s
        except OSError:
            return None

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            for i in range(self.count):
                if stop.is_set():
                    break
                s = self.sockets[i]
                if s is not None:
                    try:
                        s.sendall(self.drip)
                        continue
                    except OSError:
                        self.closed_by_server += 1
                        s.close()
                self.sockets[i] = self._open()
            stop.wait(self.every_s)
        for s in self.sockets:
            if s is not None:
                s.close()


def big_images(port: int, stop: threading.Event, counts: dict) -> None:
    body, content_type = multipart(costly_image())
    while not stop.is_set():
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            connection.request("POST", "/predict", body=body, headers={"Content-Type": content_type})
            status = connection.getresponse().status
            counts[status] = counts.get(status, 0) + 1
            connection.close()
        except OSError:
            counts["error"] = counts.get("error", 0) + 1
            stop.wait(0.2)


def probe(port: int, stop: threading.Event, latencies: list, failures: list) -> None:
    while not stop.is_set():
        start = time.perf_counter()
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=PROBE_TIMEOUT_S, source_address=(PROBE_SOURCE, 0))
            connection.request("GET", "/health")
            response = connection.getresponse()
            response.read()
            connection.close()
            if response.status != 200:
                failures.append(f"HTTP {response.status}")
        except OSError as exc:
            failures.append(type(exc).__name__)
        latencies.append(time.perf_counter() - start)
        stop.wait(0.1)


def attack(url: str, duration_s: float) -> dict:
    """Run every attack and the probe against ``url`` (loopback) for ``duration_s``; return the measurements."""
    port = int(url.rsplit(":", 1)[1])
    request_head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    body_head = lambda size: (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=x\r\n"  # noqa: E731
                              f"Content-Length: {size}\r\n\r\n").encode()
    tricklers = {
        "slow headers": Trickler(port, 150, request_head, b"X", 2.0),
        "slow bodies": Trickler(port, 30, body_head(5 * 2**20), b"a" * 1024, 2.0),
        "short bodies": Trickler(port, 30, body_head(8 * 2**20) + b"a" * 2**20, b"", 30.0),
    }
    stop = threading.Event()
    latencies, failures, image_counts = [], [], {}
    threads = [threading.Thread(target=t.run, args=(stop,), daemon=True) for t in tricklers.values()]
    threads += [threading.Thread(target=big_images, args=(port, stop, image_counts), daemon=True) for _ in range(2)]
    threads.append(threading.Thread(target=probe, args=(port, stop, latencies, failures), daemon=True))
    for thread in threads:
        thread.start()
    time.sleep(duration_s)
    stop.set()
    for thread in threads:
        thread.join(timeout=PROBE_TIMEOUT_S + 35)
    ms = np.array(latencies) * 1000
    return {
        "probes": len(latencies), "failed": len(failures), "failures": sorted(set(failures)),
        "p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
        "p99_ms": round(float(np.percentile(ms, 99)), 1) if len(ms) else None,
        "max_ms": round(float(ms.max()), 1) if len(ms) else None,
        "attack_connections": {name: {"opened": t.opened, "closed_by_server": t.closed_by_server} for name, t in tricklers.items()},
        "big_image_answers": {str(k): v for k, v in image_counts.items()},
    }


def run_setup(setup: str, model: Path | None, duration_s: float) -> dict:
    if setup == "alone":
        url, processes = api.start_in_background(model)
        processes = [processes]
    else:
        url, processes = proxy.start_behind_nginx(model)
    try:
        print(f"{setup}: attacking {url} for {duration_s:.0f} s ...", flush=True)
        return {"setup": setup, "url": url, "duration_s": duration_s, **attack(url, duration_s)}
    finally:
        proxy.stop(processes)


def markdown(rows: list[dict]) -> str:
    lines = ["| set-up | /health probes | p50 | p99 | max | failed probes |", "| --- | --- | --- | --- | --- | --- |"]
    names = {"alone": "Waitress alone (`make serve`)", "proxy": "nginx in front (`make serve-proxy`)"}
    for r in rows:
        failed = f"{r['failed']} ({', '.join(r['failures'])})" if r["failed"] else "0"
        lines.append(f"| {names[r['setup']]} | {r['probes']} | {r['p50_ms']:.0f} ms | {r['p99_ms']:.0f} ms | {r['max_ms']:.0f} ms | {failed} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/attack.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=30, help=f"seconds per set-up (default 30, at most {MAX_DURATION_S})")
    parser.add_argument("--setups", nargs="+", choices=["alone", "proxy"], default=["alone", "proxy"])
    parser.add_argument("--model", type=Path, help="trained model (default: as api.py)")
    parser.add_argument("--output", type=Path, default=ROOT / "runs" / "attack")
    args = parser.parse_args(argv)
    if not 1 <= args.duration <= MAX_DURATION_S:
        parser.error(f"--duration must be between 1 and {MAX_DURATION_S} seconds")
    try:
        with socket.socket() as s:
            s.bind((PROBE_SOURCE, 0))
    except OSError:
        print(f"error: cannot bind the probe to {PROBE_SOURCE} (Linux routes all of 127.0.0.0/8 to loopback; this system does not)", file=sys.stderr)
        return 1
    try:
        rows = [run_setup(setup, args.model, args.duration) for setup in args.setups]
    except (proxy.ProxyError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "attack.json").write_text(json.dumps(rows, indent=1) + "\n")
    table = markdown(rows)
    (args.output / "attack.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
