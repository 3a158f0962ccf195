"""The prediction service behind nginx, on this machine: the production set-up, started with one command.

    python proxy.py                    # nginx on http://127.0.0.1:8080 -> api.py (Waitress) on a free loopback port
    make serve-proxy ARGS="--port 8080 --model runs/default-seed0/model.keras"

nginx (from your system's packages: ``sudo apt-get install nginx``) reads every request with its own
timeouts and size limits, answers abuse with JSON, and passes only complete requests to Waitress, so slow
or stalled clients cannot take Waitress's worker channels (``tools/attack.py`` measures it). The
configuration is ``deploy/nginx.conf``; this script fills in ports and a state folder under ``runs/``.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import api

ROOT = Path(__file__).resolve().parent
DEPLOY_DIR = ROOT / "deploy"
STATE_ROOT = ROOT / "runs" / "nginx"
PREDICTIONS_PER_SECOND = 20  # per client address; a burst of as many more passes at once
CONNECTIONS_PER_CLIENT = 32


class ProxyError(RuntimeError):
    """nginx is missing, its configuration is refused, or it does not start; the message says what to do."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def nginx_binary() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).is_file()), None)
    if found is None:
        raise ProxyError("nginx is not installed. Install it from your system's packages (Debian/Ubuntu: "
                         "`sudo apt-get install nginx`; macOS: `brew install nginx`), or run the service alone with `make serve`.")
    return found


def render_config(listen_port: int, api_port: int, state_dir: Path, listen_host: str = "127.0.0.1", api_host: str = "127.0.0.1",
                  max_upload_bytes: int = api.MAX_UPLOAD_BYTES) -> str:
    """``deploy/nginx.conf`` with its ``$``-names filled in."""
    template = string.Template((DEPLOY_DIR / "nginx.conf").read_text())
    megabytes = max_upload_bytes // 2**20
    return template.substitute(
        state_dir=state_dir, deploy_dir=DEPLOY_DIR, listen_host=listen_host, listen_port=listen_port, api_host=api_host,
        api_port=api_port, max_body=f"{megabytes}m", max_body_text=f"{megabytes} MB", predict_rate=f"{PREDICTIONS_PER_SECOND}r/s",
        predict_burst=PREDICTIONS_PER_SECOND, connections_per_client=CONNECTIONS_PER_CLIENT,
    )


def write_config(listen_port: int, api_port: int, state_dir: Path, **kwargs) -> Path:
    """Write the filled-in configuration into ``state_dir`` (with nginx's temporary folders) and check it with ``nginx -t``."""
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "error.log").unlink(missing_ok=True)  # its messages are this run's only
    config = state_dir / "nginx.conf"
    config.write_text(render_config(listen_port, api_port, state_dir.resolve(), **kwargs))
    checked = subprocess.run([nginx_binary(), "-t", "-q", "-p", str(state_dir), "-c", str(config.resolve()), "-e", str(state_dir / "error.log")],
                             capture_output=True, text=True)
    if checked.returncode != 0:
        raise ProxyError(f"nginx refused {config}: {(checked.stderr or checked.stdout).strip()}")
    return config


def start_nginx(config: Path, url: str, timeout_s: float = 20) -> subprocess.Popen:
    """Run nginx in the foreground (a child process) with ``config``; return once ``url``/health answers through it."""
    state_dir = config.parent
    process = subprocess.Popen([nginx_binary(), "-p", str(state_dir), "-c", str(config.resolve()), "-e", str(state_dir / "error.log"),
                                "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = (state_dir / "error.log").read_text().strip().splitlines() if (state_dir / "error.log").is_file() else []
            first = next((line for line in log if "[emerg]" in line), log[-1] if log else "no message")
            reason = first.split(": ", 1)[-1] if "[emerg]" in first else first  # without the time stamp and process id
            hint = "; another program uses that port: pick another with --port" if "Address already in use" in reason else ""
            raise ProxyError(f"nginx did not start: {reason}{hint}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1):
                return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise ProxyError(f"nginx did not answer {url}/health within {timeout_s:.0f} s; see {state_dir / 'error.log'}")


def start_behind_nginx(model_path=None, port: int | None = None, threads: int = 4, state_dir: Path | None = None):
    """Start api.py on a free loopback port and nginx in front of it on ``port``; return ``(url, [nginx, api])``.

    Stop both with ``stop(processes)``. For the make target, the tests and ``tools/attack.py``."""
    api_url, service = api.start_in_background(model_path, threads=threads)
    try:
        port = port or free_port()
        temporary = state_dir is None
        state_dir = state_dir or Path(tempfile.mkdtemp(prefix="resnets-nginx-"))
        config = write_config(port, int(api_url.rsplit(":", 1)[1]), state_dir)
        url = f"http://127.0.0.1:{port}"
        nginx = start_nginx(config, url)
        nginx.temporary_state_dir = state_dir if temporary else None  # removed by stop()
        return url, [nginx, service]
    except BaseException:
        stop([service])
        raise


def stop(processes) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # nginx: fast shutdown; Waitress: stop serving
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        if getattr(process, "temporary_state_dir", None):
            shutil.rmtree(process.temporary_state_dir, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python proxy.py", description="Serve the trained model behind nginx on this machine.")
    parser.add_argument("--model", type=Path, help="trained model (default: as api.py)")
    parser.add_argument("--port", type=int, default=8080, help="nginx's port on 127.0.0.1 (default 8080)")
    parser.add_argument("--threads", type=int, default=4, help="Waitress worker threads (default 4)")
    args = parser.parse_args(argv)
    try:
        url, processes = start_behind_nginx(args.model, args.port, args.threads, STATE_ROOT / str(args.port))
    except (ProxyError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"Serving on {url} (nginx -> Waitress; POST /predict, GET /health); Ctrl+C stops both.", flush=True)
    try:
        while all(p.poll() is None for p in processes):
            time.sleep(0.5)
        print("error: " + ("nginx" if processes[0].poll() is not None else "the service") + " stopped; stopping the other.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop(processes)


if __name__ == "__main__":
    sys.exit(main())
