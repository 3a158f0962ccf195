"""Colab and Kaggle: the badges that open a chapter there, and what the chapter's setup cell does there.

The repository's address is set once, in pyproject.toml (``[project.urls] Repository``). From it:

* ``python -m hosted write`` (``make hosted``) writes the "Open in Colab / Kaggle" badges into every solved
  chapter and the README, and the hosted block into each chapter's setup cell; ``make exercises`` gives the
  student notebooks the same, pointing at themselves. ``python -m hosted check`` lists what is stale.
* On Colab or Kaggle the setup cell clones the repository into ``~/resnets-step-by-step`` and runs
  ``python -m hosted install`` there: the pinned versions (requirements.txt) of the packages the chapters
  import, where the platform has another version, then the dataset through ``signs_dataset``, which
  downloads the pinned archive and verifies every photo. Everywhere else the block does nothing.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent
BRANCH = "main"
CLONE_DIR = "~/resnets-step-by-step"
# What the chapters import that a hosted platform may lack or have in another version; versions come from the lock.
PACKAGES = ("tensorflow", "keras", "numpy", "h5py", "scipy", "matplotlib", "pillow", "scikit-learn", "pydot",
            "requests", "flask", "waitress")
BADGE_LINE = re.compile(r"^\[!\[Open in Colab\].*$", re.MULTILINE)
HOSTED_BEGIN, HOSTED_END = "# extra code: on Colab or Kaggle", "    os.chdir("
README_BEGIN, README_END = "<!-- hosted badges: python -m hosted write -->", "<!-- end hosted badges -->"


def repository_url(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """The repository's web address, e.g. https://github.com/owner/name (the one place it is set)."""
    url = tomllib.loads(pyproject.read_text())["project"]["urls"]["Repository"].rstrip("/")
    if not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url):
        raise ValueError(f"pyproject.toml: [project.urls] Repository must be https://github.com/OWNER/NAME, not {url!r}")
    return url


def badges(path: str, url: str | None = None) -> str:
    """One Markdown line: open the notebook at ``path`` (relative to the repository root) on Colab or Kaggle."""
    url = url or repository_url()
    github_path = url.removeprefix("https://github.com/")
    colab = f"https://colab.research.google.com/github/{github_path}/blob/{BRANCH}/{path}"
    kaggle = f"https://kaggle.com/kernels/welcome?src={url}/blob/{BRANCH}/{path}"
    return (f"[![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab}) "
            f"[![Open in Kaggle](https://kaggle.com/static/images/open-in-kaggle.svg)]({kaggle})")


def setup_block(folder: str, url: str | None = None) -> str:
    """The lines that open a chapter's setup cell: nothing happens unless the kernel runs on Colab or Kaggle."""
    url = url or repository_url()
    return "\n".join([
        "import os, subprocess, sys",
        f'if "google.colab" in sys.modules or "KAGGLE_KERNEL_RUN_TYPE" in os.environ:  {HOSTED_BEGIN}, fetch the course first',
        f'    course = os.path.expanduser("{CLONE_DIR}")',
        "    if not os.path.isdir(course):",
        f'        subprocess.run(["git", "clone", "--quiet", "--depth=1", "{url}.git", course], check=True)',
        '    subprocess.run([sys.executable, "-m", "hosted", "install"], cwd=course, check=True)  # packages, dataset',
        f'    os.chdir(os.path.join(course, "{folder}")); sys.path.insert(0, course)',
    ])


def apply(notebook: dict, path: str, url: str | None = None) -> dict:
    """Give a notebook (an nbformat notebook) its badges under the title and the hosted block in its setup cell."""
    url = url or repository_url()
    title = notebook["cells"][0]
    source = title["source"]
    line = badges(path, url)
    if BADGE_LINE.search(source):
        source = BADGE_LINE.sub(lambda _: line, source, count=1)
    else:
        heading, _, rest = source.partition("\n")
        source = f"{heading}\n\n{line}\n{rest}"
    title["source"] = source
    setup = next(cell for cell in notebook["cells"] if cell["cell_type"] == "code")
    lines = setup["source"].split("\n")
    if not lines[0].startswith("# Setup"):
        raise ValueError(f"{path}: the first code cell must be the setup cell ('# Setup: ...'), not {lines[0]!r}")
    if len(lines) > 1 and lines[1] == "import os, subprocess, sys":  # replace the block written before
        end = next(i for i, text in enumerate(lines) if text.startswith(HOSTED_END))
        lines = [lines[0]] + lines[end + 1:]
    setup["source"] = "\n".join([lines[0], setup_block(str(Path(path).parent), url)] + lines[1:])
    return notebook


def readme_block(url: str | None = None) -> str:
    url = url or repository_url()
    return (f"{README_BEGIN}\nNo set-up at all: open chapter 01 on Colab or Kaggle {badges('exercises/01_identity_block.ipynb', url)} "
            f"(the student edition; every chapter has its own badges at the top;\n"
            f"[how it works](docs/guide.md#colab-and-kaggle))\n{README_END}")


def _write_if_changed(path: Path, text: str) -> bool:
    if path.read_text() == text:
        return False
    temporary = path.with_name(f".{path.name}.partial")
    temporary.write_text(text)
    os.replace(temporary, path)
    return True


def _notebook_text(path: Path, url: str) -> str:
    import nbformat  # here: `install` runs before the platform has everything

    notebook = nbformat.read(path, as_version=4)
    apply(notebook, path.relative_to(ROOT).as_posix(), url)
    return nbformat.writes(notebook) + "\n"


def _readme_text(url: str) -> str:
    readme = (ROOT / "README.md").read_text()
    pattern = re.compile(re.escape(README_BEGIN) + ".*?" + re.escape(README_END), re.DOTALL)
    if not pattern.search(readme):
        raise ValueError(f"README.md has no '{README_BEGIN}' ... '{README_END}' block")
    return pattern.sub(lambda _: readme_block(url), readme)


def write(url: str | None = None) -> list[Path]:
    """Badges and setup blocks into notebooks/*.ipynb and the README; returns the files changed."""
    url = url or repository_url()
    changed = [path for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
               if _write_if_changed(path, _notebook_text(path, url))]
    if _write_if_changed(ROOT / "README.md", _readme_text(url)):
        changed.append(ROOT / "README.md")
    return changed


def stale(url: str | None = None) -> list[str]:
    """Solved chapters and README whose badges or setup block differ from what ``write`` would make."""
    url = url or repository_url()
    names = [path.name for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
             if path.read_text() != _notebook_text(path, url)]
    if (ROOT / "README.md").read_text() != _readme_text(url):
        names.append("README.md")
    return names


def _pins(lock: Path) -> dict[str, str]:
    pins = {}
    for line in lock.read_text().splitlines():
        name, _, version = line.split("#", 1)[0].split(";", 1)[0].strip().partition("==")
        if version:
            pins[name.lower().replace("_", "-")] = version
    return pins


def install(root: Path = ROOT, build_data: bool = True) -> list[str]:
    """On a hosted platform: the locked version of each package in PACKAGES that is missing or different,
    then both datasets (the course's digits 0-5 and chapter 05's 6-9). Returns what pip installed."""
    pins = _pins(root / "requirements.txt")
    needed = []
    for name in PACKAGES:
        try:
            present = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            present = None
        if present != pins[name]:
            needed.append(f"{name}=={pins[name]}")
    if needed:
        print(f"Installing the course's versions of {len(needed)} packages: {' '.join(needed)}", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *needed], check=True)
        print("If a package was already imported, restart the session (Runtime > Restart) and run this cell again.")
    if build_data:
        for digits in ("0-5", "6-9"):
            subprocess.run([sys.executable, "-m", "signs_dataset", "--digits", digits], cwd=root, check=True)
    return needed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hosted", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["write", "check", "install"])
    args = parser.parse_args(argv)
    try:
        if args.command == "write":
            for path in write():
                print(f"updated {path.relative_to(ROOT)}")
            print("Now run `make exercises` so the student notebooks get the same.")
        elif args.command == "check":
            names = stale()
            if names:
                print(f"stale: {', '.join(names)}; run `python -m hosted write`", file=sys.stderr)
                return 1
            print("Badges and setup blocks are up to date.")
        else:
            install()
    except (ValueError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
