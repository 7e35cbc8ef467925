"""The distributions as a release builds them (`make dist`), once per session, and the tools that run them.

uv comes from the dev extras and `make` from the machine; uv's cache is the one tests/bundle uses, kept between runs
in .tools/ (a cold cache downloads the build backend and ~30 wheels from PyPI first).
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from email.parser import Parser
from pathlib import Path
from typing import Any

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


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="session")
def package_index(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A package index on 127.0.0.1 holding only this checkout's wheel (the simple API, PEP 503): it stands in for
    dessert-mcp's PyPI upload, while everything else comes from PyPI. Its URL, for UV_INDEX."""
    root = tmp_path_factory.mktemp("index")
    project = root / "simple" / "dessert-mcp"
    project.mkdir(parents=True)
    shutil.copy(dist.wheel, root / dist.wheel.name)
    link = f'<a href="../../{dist.wheel.name}">{dist.wheel.name}</a>'
    (project / "index.html").write_text(f"<!DOCTYPE html><html><body>{link}</body></html>\n")
    handler = functools.partial(_Quiet, directory=str(root))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/simple/"
        finally:
            server.shutdown()
            thread.join(timeout=10)
