"""Colab and Kaggle: badges generated from the one repository address, and the setup cell's hosted path,
run here offline in a fresh virtual environment against a local clone given as a file:// URL."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import hosted

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(ROOT.glob("notebooks/[0-9][0-9]_*.ipynb")) + sorted(ROOT.glob("exercises/[0-9][0-9]_*.ipynb"))


def _setup_cell(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    return "".join(next(cell for cell in cells if cell["cell_type"] == "code")["source"])


def test_solved_chapters_and_readme_have_the_badges_and_setup_block_of_the_one_address():
    assert hosted.stale() == [], "run `make hosted` (python -m hosted write), then `make exercises`"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_each_notebook_opens_itself_on_colab_and_kaggle(path):
    relative = path.relative_to(ROOT).as_posix()
    title = "".join(json.loads(path.read_text())["cells"][0 if path.parent.name == "notebooks" else 1]["source"])
    url = hosted.repository_url()
    assert f"https://colab.research.google.com/github/{url.removeprefix('https://github.com/')}/blob/main/{relative})" in title
    assert f"https://kaggle.com/kernels/welcome?src={url}/blob/main/{relative})" in title
    assert hosted.setup_block(path.parent.name) in _setup_cell(path)


def test_the_address_is_checked():
    with pytest.raises(ValueError, match="github.com/OWNER/NAME"):
        hosted.repository_url(_pyproject_with('Repository = "https://example.com/x"'))


def _pyproject_with(line: str) -> Path:
    import tempfile

    path = Path(tempfile.mkdtemp()) / "pyproject.toml"
    path.write_text(f"[project]\nname = 'x'\n[project.urls]\n{line}\n")
    return path


def test_install_takes_the_locked_version_of_what_differs(monkeypatch, tmp_path):
    (tmp_path / "requirements.txt").write_text("".join(f"{name}==1.0\n" for name in hosted.PACKAGES))
    installed = {name: "1.0" for name in hosted.PACKAGES} | {"keras": "3.0.0"}
    del installed["waitress"]

    def version(name):
        if name not in installed:
            raise hosted.importlib.metadata.PackageNotFoundError(name)
        return installed[name]

    commands = []
    monkeypatch.setattr(hosted.importlib.metadata, "version", version)
    monkeypatch.setattr(hosted.subprocess, "run", lambda command, **kwargs: commands.append(command))
    assert hosted.install(tmp_path) == ["keras==1.0", "waitress==1.0"]
    assert commands[0][-3:] == ["--quiet", "keras==1.0", "waitress==1.0"]
    assert [c[-2:] for c in commands[1:]] == [["--digits", "0-5"], ["--digits", "6-9"]]


def _working_tree_as_repository(target: Path) -> str:
    """The files git would commit (tracked and untracked, not ignored) as a fresh repository: a file:// URL."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost", "-c", "init.defaultBranch=main"]
    for command in (["init", "--quiet"], ["add", "-A"], ["commit", "--quiet", "-m", "course"]):
        subprocess.run(git + command, cwd=target, check=True)
    return target.as_uri()


def test_hosted_setup_cell_fetches_the_course_and_builds_the_data_offline(tmp_path, source_archive):
    """Kaggle as far as this machine can be it: a fresh interpreter that already has the platform's packages
    (here: the pinned ones, on its path), no copy of the course, the setup cell of exercise 01 as a student
    opens it. The cell clones the course from a file:// URL, installs nothing (every version matches), builds
    both datasets from the offline archive and imports the clone's modules."""
    origin = tmp_path / "origin"
    origin.mkdir()
    url = _working_tree_as_repository(origin)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    venv_python = venv / "bin" / "python"
    site = subprocess.run([venv_python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "platform_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # not its .pth files

    cell = _setup_cell(ROOT / "exercises" / "01_identity_block.ipynb")
    assert f'"{hosted.repository_url()}.git"' in cell
    script = cell.replace(f"{hosted.repository_url()}.git", url) + "\nprint('course at', ru.__file__, 'in', os.getcwd())\n"
    script += "x_train, y_train, x_test, y_test, classes = ru.load_dataset()\nprint('train', x_train.shape, 'test', x_test.shape)\n"
    home = tmp_path / "home"
    home.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {"HOME": str(home), "KAGGLE_KERNEL_RUN_TYPE": "Interactive", "SIGNS_SOURCE": str(source_archive),
            "PIP_NO_INDEX": "1", "MPLBACKEND": "Agg", "TF_CPP_MIN_LOG_LEVEL": "3"}  # PIP_NO_INDEX: a pip call fails, not downloads
    done = subprocess.run([venv_python, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    course = home / "resnets-step-by-step"
    assert f"course at {course / 'resnets_utils.py'} in {course / 'exercises'}" in done.stdout
    assert "train (1080, 64, 64, 3) test (120, 64, 64, 3)" in done.stdout
    assert "Installing" not in done.stdout, done.stdout
    for built in ("datasets/train_signs.h5", "datasets/test_signs.h5", "datasets/digits_6_9/train_signs.h5"):
        assert (course / built).is_file(), built
    assert not (ROOT / "exercises" / "datasets").exists()

    # Run again, as a student re-running the cell: no second clone, the data is already there.
    again = subprocess.run([venv_python, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Dataset ready" in again.stdout and "Built" not in again.stdout


def test_outside_colab_and_kaggle_the_setup_block_does_nothing(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "KAGGLE_KERNEL_RUN_TYPE"} | {"HOME": str(tmp_path)}
    block = hosted.setup_block("notebooks")
    done = subprocess.run([sys.executable, "-c", block + "\nprint(os.getcwd())"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == str(tmp_path) and list(tmp_path.iterdir()) == []
