"""Host configuration entries as the tests read them: print one, parse it, resolve it as its host would."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import subprocess
import tomllib
from typing import Any

from dessert_mcp.cli import main
from dessert_mcp.cli.hosts import KEY_PLACEHOLDER


def print_config(host: str, *options: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`dessert-mcp config HOST [options]` with these DESSERT_* variables, as its exit code, stdout and stderr.

    Run in this process: `config` reads only its arguments, the environment and this interpreter's paths, so a
    subprocess proves nothing more (tests/cli/test_cli.py runs the real command).
    """
    argv = ["config", host, *options]
    out, err = io.StringIO(), io.StringIO()
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update({k: v for k, v in saved.items() if not k.startswith("DESSERT_")} | env)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(argv)
                code = 0
            except SystemExit as exc:  # as the interpreter reports it: a message goes to stderr with status 1
                if isinstance(exc.code, str):
                    err.write(exc.code + "\n")
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return subprocess.CompletedProcess(["dessert-mcp", *argv], code, out.getvalue(), err.getvalue())


def parse(host: str, text: str) -> dict[str, Any]:
    """The server entry in the host's own format: {"command", "args", "env", ...}."""
    if host == "codex":
        entry: dict[str, Any] = tomllib.loads(text)["mcp_servers"]["dessert"]
        return entry
    if host == "claude-code":
        argv = shlex.split(text)
        assert argv[:5] == ["claude", "mcp", "add", "--scope", "user"], argv
        split = argv.index("--")
        options, launch = argv[5:split], argv[split + 1 :]
        # The server name first: `--env` takes several values and would swallow a name that followed it.
        assert options[0] == "dessert", options
        env = dict(value.split("=", 1) for flag, value in zip(options[1::2], options[2::2], strict=True))
        assert set(options[1::2]) == {"--env"}, options
        return {"command": launch[0], "args": launch[1:], "env": env}
    data = json.loads(text)
    servers = data["servers"] if host == "vscode" else data["mcpServers"]
    assert list(servers) == ["dessert"]
    result: dict[str, Any] = servers["dessert"]
    return result


def resolve_as_the_host_would(host: str, text: str, key: str) -> tuple[str, list[str], dict[str, str]]:
    """The command, arguments and environment each host derives from its snippet, with the key it was given."""
    if host == "claude-code":
        # The user's shell runs the line: a `claude` function records the arguments it would receive.
        shell = 'claude() { printf "%s\\0" "$@"; }\n' + text
        argv = subprocess.run(
            ["bash", "-c", shell], env={"DESSERT_API_KEY": key}, capture_output=True, check=True
        ).stdout.decode()
        text = shlex.join(["claude", *argv.split("\0")[:-1]])
    entry = parse(host, text)
    env: dict[str, str] = {}
    for name, value in entry.get("env", {}).items():
        value = value.replace("${env:DESSERT_API_KEY}", key).replace("${input:dessert-api-key}", key)
        env[name] = key if value == KEY_PLACEHOLDER else value
    for name in entry.get("env_vars", []):  # Codex forwards these from its own environment
        env[name] = {"DESSERT_API_KEY": key}[name]
    return entry["command"], entry["args"], env
