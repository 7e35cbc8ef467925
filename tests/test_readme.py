"""The README's promises that can drift from the code are checked here."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from mcp import Client

from dessert_mcp.cli import settings
from dessert_mcp.config import Settings
from dessert_mcp.listing import TOOL_NAMES
from dessert_mcp.tools import build_server
from tests.support.settings import settings_the_code_reads

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"
REGENERATE = "DESSERT_UPDATE_SNAPSHOTS=1 rewrites it"


def _check_generated(section: str, table: str) -> None:
    """README.md holds `table` between the section's markers; DESSERT_UPDATE_SNAPSHOTS=1 writes it there."""
    start = f"<!-- {section}:start (generated from the code by {Path(__file__).relative_to(ROOT)}; {REGENERATE}) -->"
    text = README.read_text()
    before, rest = text.split(start + "\n", 1)
    current, after = rest.split(f"<!-- {section}:end -->", 1)
    if os.environ.get("DESSERT_UPDATE_SNAPSHOTS") == "1":
        README.write_text(f"{before}{start}\n{table}\n<!-- {section}:end -->{after}")
        current = table + "\n"
    assert current == table + "\n", f"README {section} section drifted; regenerate it (see tests/test_readme.py)"


async def _tools_table() -> str:
    async with Client(build_server(Settings.from_env({"DESSERT_MCP_TOOL_NAMES": "dotted"}))) as client:
        tools = (await client.list_tools()).tools
    rows = ["| tool | portable name | title | arguments |", "| --- | --- | --- | --- |"]
    for tool in tools:
        props = list(tool.input_schema.get("properties", {}))
        required = tool.input_schema.get("required", [])
        args = ", ".join(f"`{p}`" for p in props) + (" (all optional)" if not required else "") if props else "none"
        rows.append(f"| `{tool.name}` | `{TOOL_NAMES[tool.name]}` | {tool.title} | {args} |")
    return "\n".join(rows)


async def test_the_readme_tools_section_is_generated_from_the_code() -> None:
    _check_generated("tools", await _tools_table())


def test_the_readme_configuration_table_is_generated_from_the_declared_settings() -> None:
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for setting in settings():
        if setting.env:
            default = setting.default_text()
            shown = "—" if default is None else default if setting.shown else f"`{default}`"
            also = f" `{setting.option}` overrides it." if setting.option else ""
            rows.append(f"| `{setting.env}` | {shown} | {setting.describe(markdown=True)}{also} |")
    _check_generated("settings", "\n".join(rows))


def test_the_readme_opens_with_the_two_commands_that_work_on_a_fresh_clone() -> None:
    head = README.read_text().split("\n## ", 1)[0]
    first_block = head.split("```sh\n", 1)[1].split("```", 1)[0]
    assert [line.split()[:2] for line in first_block.splitlines()] == [["make", "demo"], ["make", "test"]]
    # What `make test` costs a newcomer: its time, and the system packages it installs (a password prompt).
    assert re.search(r"make test .*(minutes|hour)", first_block)
    assert "apt-get" in head
    assert "sudo" in head
    # Registry installs work only after a release, and are said to.
    assert head.index("released") < head.index("uvx dessert-mcp --version")


def test_every_setting_the_code_reads_is_in_the_readme_configuration_table() -> None:
    table = README.read_text().split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"(?m)^\| `(DESSERT_[A-Z0-9_]+)` \|", table))
    missing = settings_the_code_reads() - documented
    assert not missing, f"read by the code, missing from README.md's Configuration table: {sorted(missing)}"


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in (ROOT / ".ci" / "run").read_text()


DOCS = ROOT / "docs"
RELIABILITY = DOCS / "reliability.md"
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_the_readme_links_the_write_ups_it_no_longer_holds_and_the_dashboard_picture() -> None:
    readme = README.read_text()
    for target in ("docs/reliability.md", "docs/performance.md", "docs/development.md", "docs/dashboard.png"):
        assert f"]({target})" in readme, target


def test_every_relative_link_in_the_readme_and_docs_resolves() -> None:
    for page in [README, *sorted(DOCS.glob("*.md"))]:
        for target in LINK.findall(page.read_text()):
            if "://" not in target:
                assert (page.parent / target).exists(), f"{page.name} links {target}, which does not exist"


def test_every_make_target_the_docs_name_exists() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"(?m)^([a-z][\w-]*):", makefile))
    for page in [README, *sorted(DOCS.glob("*.md"))]:
        for target in re.findall(r"(?m)(?:`|^)make ([a-z][\w-]*)", page.read_text()):
            assert target in targets, f"{page.name} names `make {target}`, which the Makefile lacks"


def test_the_http_numbers_in_the_readme_are_the_codes() -> None:
    from dessert_mcp.http import app

    readme = README.read_text()
    assert f"bounded to {app.STATEFUL_MAX_SESSIONS:,} sessions" in readme
    assert f"each closed\n  after {app.STATEFUL_IDLE_TIMEOUT_S / 60:g} minutes idle" in readme
    assert f"**Request bodies over {app.MAX_BODY_BYTES // 1024} KiB get 413**" in readme
    assert f"with a {app.READY_TIMEOUT_S:g}-second deadline" in readme


def test_the_readme_names_the_version_flag_and_what_it_prints(capsys: pytest.CaptureFixture[str]) -> None:
    from dessert_mcp import __version__
    from dessert_mcp.cli import main

    with pytest.raises(SystemExit):
        main(["--version"])
    printed = capsys.readouterr().out.strip()
    readme = README.read_text()
    assert f"| `dessert-mcp --version` | the installed version, e.g. `{printed}` |" in readme
    assert printed == f"dessert-mcp {__version__}"
    quick_start = readme.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    assert "`dessert-mcp --version`" in quick_start


def test_the_reliability_policy_states_the_default_settings() -> None:
    text = RELIABILITY.read_text()
    defaults = Settings()
    assert f"`DESSERT_MAX_ATTEMPTS` = {defaults.max_attempts} attempts" in text
    assert f"`DESSERT_BACKOFF_S` = {defaults.backoff_s:g} s" in text
    assert f"`DESSERT_TIMEOUT_S` = {defaults.timeout_s:g} s" in text
    assert defaults.max_body_bytes == 1024 * 1024
    assert "`DESSERT_MAX_BODY_BYTES` = 1 MiB" in text


def test_the_reliability_proof_counts_the_fault_matrix_as_it_is() -> None:
    from tests.reliability.conftest import TRANSPORTS
    from tests.reliability.test_fault_matrix import CASES

    text = RELIABILITY.read_text()
    assert f"a fault matrix of {len(CASES)} cases" in text
    assert f"({len(CASES) * len(TRANSPORTS)} runs" in text


def test_the_reliability_write_up_lists_every_probe_finding_and_its_limits() -> None:
    from dessert_mcp.client import RETRY_AFTER_MAX_S
    from dessert_mcp.models import LARGEST_NUMBER

    probe = (ROOT / "tests" / "reliability" / "test_probe_findings.py").read_text()
    sections = re.findall(r"(?m)^# (\d+)\. ", probe)
    listed = re.findall(r"(?m)^(\d+)\. \*\*", RELIABILITY.read_text().split("**The hostile probe**", 1)[1])
    assert listed == sections, "docs/reliability.md lists the probe findings one to one with the test's sections"
    text = RELIABILITY.read_text()
    assert "test_after_three_thousand_abandoned_sessions" in probe
    assert "**3,000 abandoned sessions.**" in text
    assert RETRY_AFTER_MAX_S == 24 * 3600
    assert "capped at one\n   day" in text
    assert LARGEST_NUMBER == 2**53 - 1
    assert "±(2^53 \u2212 1)" in text
    assert (
        "test_a_request_with_both_content_length_and_transfer_encoding_is_refused_and_its_connection_closed"
        in (ROOT / "tests" / "http" / "test_app_security.py").read_text()
    )
    assert "Content-Length` and `Transfer-Encoding`" in text


def test_the_readme_lists_what_each_tool_name_setting_shows_and_which_hosts_reject_dots() -> None:
    from dessert_mcp.config import TOOL_NAME_STYLES
    from dessert_mcp.listing import tool_names_for

    readme = " ".join(README.read_text().split())
    for style in TOOL_NAME_STYLES:
        row = re.search(rf"\| `{style}`[^|]* \| ([^|]*) \|", readme)
        assert row is not None, f"the README's table has no row for {style}"
        assert tuple(re.findall(r"`(dessert[._]get_[a-z]+)`", row.group(1))) == tool_names_for(style), style
    # As measured (issue #23): these reject dotted names, Claude Code 2.1 accepts them.
    rejecters = "Claude Desktop, the Anthropic and OpenAI tool APIs, Cursor and GitHub Copilot reject any tool name"
    assert rejecters in readme
    assert readme.count("Claude Code 2.1 accepts") == 2  # Portable tool names and Troubleshooting
    assert "Claude Code fail" not in readme


def _section(title: str) -> str:
    return README.read_text().split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_the_command_line_table_has_a_row_for_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    from dessert_mcp.cli import main

    with pytest.raises(SystemExit):
        main(["--help"])
    commands = re.search(r"\{(\w+(?:,\w+)+)\} \.\.\.", capsys.readouterr().out)
    assert commands is not None
    table = _section("Command line")
    for command in commands[1].split(","):
        assert f"| `dessert-mcp {command}" in table, f"`dessert-mcp {command}` has no row in the Command line table"


def test_the_deployment_section_describes_the_worker_sockets_serve_makes() -> None:
    from dessert_mcp.http import serve

    assert "each with its own `SO_REUSEPORT` socket" in " ".join((serve.serve_workers.__doc__ or "").split())
    deployment = " ".join(_section("Deployment").split())
    assert "its own `SO_REUSEPORT` listening socket" in deployment
    assert "share one listening socket" not in deployment
    assert "uvicorn#" not in deployment  # an upstream proposal the code no longer waits for


def test_docs_remote_names_the_sign_in_button_as_the_page_labels_it() -> None:
    from dessert_mcp.auth import signin

    page = signin._key_form("request", "csrf")
    label = re.search(r'<button type="submit"[^>]*>([^<]+)</button>', page)
    assert label is not None
    assert f"presses *{label[1]}*" in (DOCS / "remote.md").read_text()
