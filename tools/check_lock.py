"""Does requirements.txt install on the platforms students use? A dry run of pip for each one.

    python tools/check_lock.py            # every platform x Python 3.11, 3.12, 3.13 -> runs/check_lock/
    python tools/check_lock.py --python 3.13 --platform windows

For each pair this asks pip to resolve the whole lock from binary wheels only (``--only-binary=:all:``:
a student's machine may have no compiler), as if it were that platform, and reports which pins have no
wheel there. It needs the package index, so it is a tool, not a test. pip's ``--platform`` matches tags
exactly, so each platform is given as the list of tags its oldest supported release accepts.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHONS = ("3.11", "3.12", "3.13")


def _manylinux(arch: str, newest_glibc: int = 28) -> list[str]:
    """The tags a Linux with glibc 2.`newest_glibc` accepts (Debian 10 / RHEL 8 era and newer: 2.28)."""
    legacy = {"x86_64": ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"],
              "aarch64": ["manylinux2014_aarch64"]}[arch]
    return [f"manylinux_2_{minor}_{arch}" for minor in range(newest_glibc, 4, -1)] + legacy


PLATFORMS = {
    "linux-x86_64": _manylinux("x86_64"),
    "linux-aarch64": _manylinux("aarch64"),
    # macOS 12 (the oldest TensorFlow's arm64 wheels support) on Apple silicon
    "macos-arm64": [f"macosx_{major}_0_{arch}" for major in (12, 11) for arch in ("arm64", "universal2")],
    "windows": ["win_amd64"],
}


def check(python: str, platform: str, requirements: Path) -> dict:
    """pip's dry run of the lock for one Python and platform: ok, seconds, and what pip could not find."""
    tags = [option for tag in PLATFORMS[platform] for option in ("--platform", tag)]
    with tempfile.TemporaryDirectory() as scratch:
        command = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed",
                   "--disable-pip-version-check", "--only-binary=:all:", "--python-version", python,
                   *tags, "--target", scratch, "-r", str(requirements)]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
    missing = re.findall(r"satisfies the requirement (\S+)", done.stderr)
    return {"python": python, "platform": platform, "ok": done.returncode == 0,
            "seconds": round(time.perf_counter() - start, 1), "missing": missing, "errors": errors[:3]}


def table(results: list[dict]) -> str:
    """Markdown: one row per platform, one column per Python."""
    pythons = sorted({r["python"] for r in results}, key=lambda v: tuple(map(int, v.split("."))))
    lines = ["| platform | " + " | ".join(f"Python {v}" for v in pythons) + " |",
             "| --- |" + " --- |" * len(pythons)]
    for platform in dict.fromkeys(r["platform"] for r in results):
        cells = []
        for python in pythons:
            found = [r for r in results if r["platform"] == platform and r["python"] == python]
            if not found:
                cells.append("")
            else:
                cells.append("resolves" if found[0]["ok"] else "fails: " + (", ".join(found[0]["missing"]) or "see JSON"))
        lines.append(f"| {platform} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", action="append", choices=PYTHONS, help="default: all three")
    parser.add_argument("--platform", action="append", choices=sorted(PLATFORMS), help="default: all four")
    parser.add_argument("--requirements", type=Path, default=ROOT / "requirements.txt")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "check_lock")
    args = parser.parse_args(argv)
    results = []
    for platform in args.platform or PLATFORMS:
        for python in args.python or PYTHONS:
            result = check(python, platform, args.requirements)
            print(f"{platform:14} Python {python}: {'resolves' if result['ok'] else 'FAILS ' + ' '.join(result['errors'])}"
                  f" ({result['seconds']} s)", flush=True)
            results.append(result)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "check_lock.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "check_lock.md").write_text(table(results) + "\n")
    print(table(results))
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
