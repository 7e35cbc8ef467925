"""The distributions as a release builds them (`make dist`), once per session, and the tools that run them.

uv comes from the dev extras and `make` from the machine; uv's cache is the one tests/bundle uses, kept between runs
in .tools/ (a cold cache downloads the build backend and ~30 wheels from PyPI first).
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from email.message import Message
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
UV = BIN / "uv"
UVX = BIN / "uvx"
UV_CACHE = ROOT / ".tools" / "uv-cache"
# What `make install` and `make foreign-tools` leave behind; the tests run in that set-up and must not redo it.
INSTALLED_STAMPS = (".venv/.installed", ".tools/.installed")


def host_env(**extra: str) -> dict[str, str]:
    """A host's environment: this machine's (its proxy and CA settings reach uv), no DESSERT_* variable, uv on the
    PATH, and this machine's rule for uv: PyPI only, so it uses an installed Python instead of downloading one."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("DESSERT_")}
    return (
        inherited
        | {
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "UV_CACHE_DIR": str(UV_CACHE),
            "UV_PYTHON_DOWNLOADS": "never",
        }
        | extra
    )


def make(target: str, *, cwd: Path = ROOT, **variables: str | Path) -> subprocess.CompletedProcess[str]:
    """`make <target> NAME=value ...` as a developer runs it, without re-running the installs this session did."""
    for tool in (UV, UVX):
        if not tool.exists():
            pytest.fail(f"{tool.name} is not installed next to {sys.executable}; run `make install`.")
    return subprocess.run(
        [
            "make",
            "--no-print-directory",
            *(f"--old-file={stamp}" for stamp in INSTALLED_STAMPS),
            target,
            *(f"{name}={value}" for name, value in variables.items()),
        ],
        cwd=cwd,
        env=host_env(),
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        check=False,
    )


@dataclass(frozen=True, slots=True)
class Dist:
    wheel: Path
    sdist: Path

    def wheel_names(self) -> set[str]:
        with zipfile.ZipFile(self.wheel) as archive:
            return set(archive.namelist())

    def read(self, name: str) -> str:
        """A file of the wheel's .dist-info folder."""
        with zipfile.ZipFile(self.wheel) as archive:
            (found,) = (n for n in archive.namelist() if n.endswith(f".dist-info/{name}"))
            return archive.read(found).decode()

    def metadata(self) -> Message:
        return Parser().parsestr(self.read("METADATA"))


def build(out: Path, *, cwd: Path = ROOT) -> Dist:
    result = make("dist", cwd=cwd, DIST=out, BIN=BIN)
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return Dist(wheel, sdist)


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    """The wheel and sdist of this checkout, built once for the session by `make dist`."""
    return build(tmp_path_factory.mktemp("dist"))
