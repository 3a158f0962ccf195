"""What the worst images cost ``prepare_image``: peak memory and CPU time, each in a fresh process.

Each input is the largest of its kind that the limits let through (or one just past them), made
small on disk the way an attacker would make it (one colour compresses to almost nothing). Run:

    python tools/decode_cost.py            # prints a Markdown table
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import signs_dataset as sd  # noqa: E402


def worst_inputs() -> dict[str, tuple[tuple[int, int], str, str]]:
    """name -> ((width, height), format, mode): at or just past each limit."""
    side = int(sd.MAX_LOSSLESS_PIXELS**0.5)
    return {
        f"JPEG {7700}x{5190} (40 MP, the JPEG limit)": ((7700, 5190), "JPEG", "RGB"),
        f"PNG {side}x{side} RGB ({sd.MAX_LOSSLESS_PIXELS // 10**6} MP, the lossless limit)": ((side, side), "PNG", "RGB"),
        f"PNG {side}x{side} RGBA": ((side, side), "PNG", "RGBA"),
        f"PNG {side}x{side} 1-bit": ((side, side), "PNG", "1"),
        f"WebP {side}x{side}": ((side, side), "WEBP", "RGB"),
        f"GIF {side}x{side}": ((side, side), "GIF", "P"),
        "PNG 6300x6300 (40 MP, refused from its header)": ((6300, 6300), "PNG", "1"),
    }


def _peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited from the parent)."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def measure_one(path: Path) -> dict:
    """In this process: decode ``path`` once; peak memory above the baseline, CPU seconds, outcome."""
    data = path.read_bytes()
    baseline = _peak_rss_mb()
    cpu = time.process_time()
    try:
        sd.prepare_image(data)
        outcome = "decoded"
    except sd.ImageError as exc:
        outcome = type(exc).__name__
    return {"cpu_s": time.process_time() - cpu, "peak_mb": _peak_rss_mb() - baseline,
            "outcome": outcome, "file_kb": len(data) / 1024}


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        print(json.dumps(measure_one(Path(sys.argv[2]))))
        return 0
    from PIL import Image
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name, (size, format, mode) in worst_inputs().items():
            path = Path(scratch) / f"input.{format.lower()}"
            buffer = io.BytesIO()
            Image.new(mode, size, 1 if mode in ("1", "P") else (200, 120, 40, 255)[: len(mode)]).save(buffer, format)
            path.write_bytes(buffer.getvalue())
            measured = json.loads(subprocess.run([sys.executable, __file__, "--one", str(path)], capture_output=True, text=True, check=True).stdout)
            rows.append((name, measured))
    print("| input | file | outcome | peak memory | CPU time |")
    print("| --- | ---: | --- | ---: | ---: |")
    for name, m in rows:
        print(f"| {name} | {m['file_kb']:.0f} kB | {m['outcome']} | {m['peak_mb']:.0f} MB | {m['cpu_s']:.2f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
