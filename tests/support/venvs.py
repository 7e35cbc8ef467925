"""Each example's own virtual environment, as a user of its framework has: built with uv, cached under .cache/.

An environment is named after its requirements file's hash (and this Python), so editing the file builds a new one
and drops the old; `.complete`, written last, marks a build that finished. `make clean` removes the cache.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
CACHE = ROOT / ".cache"
ENVS = CACHE / "example-envs"
UV = Path(sys.executable).with_name("uv")
BUILD_TIMEOUT_S = 600  # a cold uv cache downloads every wheel first


def requirements(name: str) -> Path:
    return EXAMPLES / f"requirements-{name}.txt"


def example_venv(name: str) -> Path:
    """The virtual environment holding `examples/requirements-<name>.txt`, built on first use."""
    recipe = requirements(name).read_bytes() + sys.version.encode()
    venv = ENVS / f"{name}-{hashlib.sha256(recipe).hexdigest()[:12]}"
    ENVS.mkdir(parents=True, exist_ok=True)
    with _locked(ENVS / f".{name}.lock"):  # two test runs in one checkout build it once
        if (venv / ".complete").exists():
            return venv
        for stale in ENVS.glob(f"{name}-*"):  # other requirements, or a build that was cut short
            shutil.rmtree(stale)
        _uv("venv", "--quiet", "--python", sys.executable, str(venv))
        python = str(venv / "bin" / "python")
        # Compiled once, here: where PYTHONDONTWRITEBYTECODE is set (as on this machine), every run would compile again.
        _uv("pip", "install", "--quiet", "--compile-bytecode", "--python", python, "-r", str(requirements(name)))
        (venv / ".complete").write_text(requirements(name).read_text())
    return venv


def _uv(*args: str) -> None:
    assert UV.exists(), f"uv is not installed next to {sys.executable}; run `make install`."
    # This machine's environment (its proxy and CA settings reach PyPI), a cache inside the checkout, and no Python
    # downloads: the environment is built on the interpreter running the tests.
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env |= {"UV_CACHE_DIR": str(CACHE / "uv"), "UV_PYTHON_DOWNLOADS": "never"}
    result = subprocess.run(
        [str(UV), *args], env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False
    )
    assert result.returncode == 0, f"uv {' '.join(args)} failed:\n{result.stderr}"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
