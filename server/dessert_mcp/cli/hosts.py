"""`dessert-mcp config <host>`: a ready-to-paste server entry for each MCP host, never holding a real key."""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, Literal, get_args

from dessert_mcp import __version__

SERVER_NAME: Final = "dessert"
PACKAGE: Final = "dessert-mcp"
# How an entry starts the server: `path` runs this installation by its absolute path (works without anything on the
# host's PATH, but only on this machine); `uvx` runs the published package pinned to this version (the same on every
# machine, so a project's config file can be shared; needs uv's `uvx` on the host's PATH).
Launch = Literal["path", "uvx"]
LAUNCHES: Final[tuple[Launch, ...]] = get_args(Launch)
KEY_VARIABLE: Final = "DESSERT_API_KEY"
KEY_PLACEHOLDER: Final = "<your Dessert API key>"
VSCODE_KEY_INPUT: Final = "dessert-api-key"
# Most hosts below reject dotted tool names (Claude Code 2.1 no longer does); `auto` lists underscores anyway, and
# saying so in the entry keeps it that way whatever the default becomes.
STRICT_NAMES: Final = {"DESSERT_MCP_TOOL_NAMES": "underscore"}

HOSTS: Final = {
    "claude-desktop": "Claude Desktop (claude_desktop_config.json; the .mcpb bundle is simpler)",
    "claude-code": "Claude Code (a `claude mcp add` command line)",
    "cursor": "Cursor (.cursor/mcp.json or ~/.cursor/mcp.json)",
    "vscode": "VS Code with GitHub Copilot (.vscode/mcp.json; asks for the key as a secret)",
    "codex": "OpenAI Codex (~/.codex/config.toml)",
}


def server_command() -> tuple[str, list[str]]:
    """The installed `dessert-mcp` next to this interpreter, else `python -m dessert_mcp`; absolute either way."""
    here = Path(sys.executable)
    for name in ("dessert-mcp", "dessert-mcp.exe"):
        if (script := here.with_name(name)).exists():
            return str(script), []
    found = shutil.which("dessert-mcp")
    return (str(Path(found).resolve()), []) if found else (sys.executable, ["-m", "dessert_mcp"])


def uvx_command() -> tuple[str, list[str]]:
    """`uvx dessert-mcp@<this version>`: the package from PyPI, pinned, so an upgrade is a deliberate edit."""
    return "uvx", [f"{PACKAGE}@{__version__}"]


def in_uv_cache(prefix: str = sys.prefix) -> bool:
    """Whether this interpreter is an environment `uvx` made in uv's cache (`<cache>/archive-v0/<id>/`).

    uv may delete those at any time (`uv cache clean`, `uv cache prune`), so an entry naming a path into one would
    break later. uv documents no marker for them; tests/packaging runs `uvx ... config` to pin this assumption.
    """
    return Path(prefix).parent.name.startswith("archive-v")


@dataclass(frozen=True, slots=True)
class HostConfig:
    """What to paste (`text`) and where it goes (`notes`)."""

    text: str
    notes: str


def host_config(
    host: str, command: str, args: Sequence[str] = (), *, platform: str = sys.platform, launch: Launch = "path"
) -> HostConfig:
    """The configuration for `host` that launches `command args` over stdio with underscore tool names.

    `launch` says which kind of command it is, for the notes: a machine's own path, or the portable `uvx` line.
    """
    if host not in HOSTS:
        raise ValueError(f"unknown host {host!r}; choose one of: {', '.join(HOSTS)}")
    args = list(args)
    if host == "claude-desktop":
        snippet = _claude_desktop(command, args)
    elif host == "claude-code":
        snippet = _claude_code(command, args, platform)
    elif host == "cursor":
        snippet = _cursor(command, args)
    elif host == "vscode":
        snippet = _vscode(command, args, launch)
    else:
        snippet = _codex(command, args)
    return replace(snippet, notes=f"{snippet.notes}\n{_launch_note(host, launch)}")


def _launch_note(host: str, launch: Launch) -> str:
    if launch == "uvx":
        return (
            f"This entry runs `uvx {PACKAGE}@{__version__}`, the same on every machine: uv fetches that version\n"
            "from PyPI on first start. The host must find `uvx` on its PATH (a GUI app started from the Dock or\n"
            "Start menu may not see your shell's PATH); `dessert-mcp config "
            f"{host} --launch path` prints an entry that needs none."
        )
    note = (
        "This entry runs this installation by its absolute path, so it works only on this machine;\n"
        f"`dessert-mcp config {host} --launch uvx` prints the portable form (`uvx {PACKAGE}@{__version__}`)."
    )
    if in_uv_cache():
        note += "\nCareful: that path is inside uv's cache, which uv may delete; prefer the uvx form."
    return note


def print_host_config(host: str, launch: Launch | None) -> None:
    """`dessert-mcp config HOST [--launch ...]`: the entry on stdout, where it goes on stderr."""
    # By default `uvx` when this copy was itself started by `uvx` (its path is not worth keeping), else `path`.
    launch = launch or ("uvx" if in_uv_cache() else "path")
    command, args = uvx_command() if launch == "uvx" else server_command()
    snippet = host_config(host, command, args, launch=launch)
    sys.stdout.write(snippet.text)
    sys.stderr.write(f"\n{snippet.notes}\n")


def _json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2) + "\n"


def _claude_desktop(command: str, args: list[str]) -> HostConfig:
    # Claude Desktop substitutes no variables in this file, so the key has to be typed into it.
    entry = {"command": command, "args": args, "env": {KEY_VARIABLE: KEY_PLACEHOLDER, **STRICT_NAMES}}
    notes = (
        "Claude Desktop: merge this into claude_desktop_config.json (Settings > Developer > Edit Config opens it):\n"
        "  macOS    ~/Library/Application Support/Claude/claude_desktop_config.json\n"
        "  Windows  %APPDATA%\\Claude\\claude_desktop_config.json\n"
        "  Linux    no official app; community builds read ~/.config/Claude/claude_desktop_config.json\n"
        "then replace the placeholder with your key and restart Claude (quit it from the menu bar or tray).\n"
        "Simpler: install dessert-mcp.mcpb (from the release, or `make bundle`) instead; Claude then keeps the key in\n"
        "the OS keychain."
    )
    return HostConfig(_json({"mcpServers": {SERVER_NAME: entry}}), notes)


def _claude_code(command: str, args: list[str], platform: str) -> HostConfig:
    # The shell expands the variable when the line runs; the name must come before --env, whose values are variadic.
    key = f'"{KEY_VARIABLE}=$env:{KEY_VARIABLE}"' if platform == "win32" else f'{KEY_VARIABLE}="${KEY_VARIABLE}"'
    names = " ".join(f"--env {k}={v}" for k, v in STRICT_NAMES.items())
    line = f"claude mcp add --scope user {SERVER_NAME} --env {key} {names} -- {shlex.join([command, *args])}\n"
    notes = (
        f"Claude Code: run this line in a shell where {KEY_VARIABLE} is set (Claude Code stores the value in\n"
        "~/.claude.json); then `claude mcp list` should show dessert as connected. --scope user makes it available in\n"
        "every project; drop it to add it to this project only."
    )
    return HostConfig(line, notes)


def _stdio_entry(command: str, args: list[str], key: str) -> dict[str, Any]:
    """A stdio server entry as Cursor and VS Code spell it, `key` being how the host fills DESSERT_API_KEY."""
    return {"type": "stdio", "command": command, "args": args, "env": {KEY_VARIABLE: key, **STRICT_NAMES}}


def _cursor(command: str, args: list[str]) -> HostConfig:
    entry = _stdio_entry(command, args, f"${{env:{KEY_VARIABLE}}}")
    notes = (
        "Cursor: merge this into .cursor/mcp.json in a project, or ~/.cursor/mcp.json for every project.\n"
        f"Cursor fills ${{env:{KEY_VARIABLE}}} from its own environment: start Cursor where {KEY_VARIABLE} is set\n"
        "(a Dock or Start-menu launch does not read your shell profile), or write the key there instead."
    )
    return HostConfig(_json({"mcpServers": {SERVER_NAME: entry}}), notes)


def _vscode(command: str, args: list[str], launch: Launch) -> HostConfig:
    key_input = {"type": "promptString", "id": VSCODE_KEY_INPUT, "description": "Dessert API key", "password": True}
    entry = _stdio_entry(command, args, f"${{input:{VSCODE_KEY_INPUT}}}")
    shared = (
        "the file holds no secret and no machine's path, so it can be committed."
        if launch == "uvx"
        else "the file holds no secret, but its command is this machine's absolute path (machine-specific): keep it\n"
        "out of the repository, or use --launch uvx for a file that can be committed."
    )
    notes = (
        "VS Code: save this as .vscode/mcp.json (or merge it, `inputs` and `servers` both), then start the server\n"
        "from that file or the MCP: List Servers command. VS Code asks for the key once and keeps it in its secret\n"
        f"storage; {shared}"
    )
    return HostConfig(_json({"inputs": [key_input], "servers": {SERVER_NAME: entry}}), notes)


def _codex(command: str, args: list[str]) -> HostConfig:
    toml_str = json.dumps  # a JSON string is a valid TOML basic string

    lines = [
        f"[mcp_servers.{SERVER_NAME}]",
        f"command = {toml_str(command)}",
        f"args = [{', '.join(toml_str(a) for a in args)}]",
        f"# Codex forwards {KEY_VARIABLE} from its own environment; the value is never written here.",
        f"env_vars = [{toml_str(KEY_VARIABLE)}]",
        "env = { " + ", ".join(f"{k} = {toml_str(v)}" for k, v in STRICT_NAMES.items()) + " }",
    ]
    notes = (
        "Codex: append this to ~/.codex/config.toml (or .codex/config.toml in a trusted project) and start Codex\n"
        f"where {KEY_VARIABLE} is set; `codex mcp list` should show dessert."
    )
    return HostConfig("\n".join(lines) + "\n", notes)
