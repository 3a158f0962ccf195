"""environment.yml and the pip requirements agree, and the installed packages are the pinned ones."""

import re
from importlib.metadata import version
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pins(path):
    pins = {}
    for line in (ROOT / path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
            assert match, f"{path}: '{line}' is not pinned as name==version"
            pins[match[1].lower().replace("_", "-")] = match[2]
    return pins


def test_every_direct_requirement_is_locked_at_the_same_version():
    direct, locked = _pins("requirements.in"), _pins("requirements.txt")
    for name, pinned in direct.items():
        assert locked.get(name) == pinned, f"{name}: requirements.in says {pinned}, requirements.txt says {locked.get(name)}"


def test_environment_yml_installs_the_same_requirements():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps
    assert "graphviz" in deps and "pip" in deps
    pip_sections = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    assert pip_sections == [["-r requirements.txt", "-e ."]], "environment.yml must install requirements.txt and nothing else by pip"
    conda_names = {re.split(r"[=<>]", d)[0] for d in deps if isinstance(d, str)}
    assert conda_names == {"python", "pip", "graphviz"}, "pin Python packages in requirements.in, not in environment.yml"


def test_installed_versions_are_the_locked_ones():
    for name, pinned in _pins("requirements.in").items():
        assert version(name) == pinned, f"{name} {version(name)} is installed; {pinned} is pinned. Run `make setup`."
