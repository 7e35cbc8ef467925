"""server.json, the MCP Registry entry: valid under the registry's 2025-12-11 schema and in step with the project.

data/server.schema.2025-12-11.json is the registry's own copy of that schema, the one it validates publications with
(modelcontextprotocol/registry, internal/validators/schemas/2025-12-11.json), kept unchanged as test data.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator

from dessert_mcp import __version__
from dessert_mcp.config import ConfigError, Settings
from dessert_mcp.http.app import MCP_PATH
from tests.packaging.conftest import ROOT, Dist, make
from tests.support.settings import settings_the_code_reads

SCHEMA_URL = "https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json"
SCHEMA_PATH = Path(__file__).with_name("data") / "server.schema.2025-12-11.json"
SCHEMA_SHA256 = "d4c163f299ece68b7432f4e44c4108f2fdb663d99dc088c8344142e5b0a4b520"
SCHEMA: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
SERVER_JSON_TEXT = (ROOT / "server.json").read_text()
SERVER: dict[str, Any] = json.loads(SERVER_JSON_TEXT)
MANIFEST: dict[str, Any] = json.loads((ROOT / "manifest.json").read_text())
PROJECT: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
SETTINGS_READ = settings_the_code_reads()  # every wing's, not only the core's config.py
VALIDATOR = Draft7Validator(SCHEMA, format_checker=Draft7Validator.FORMAT_CHECKER)


def package(registry_type: str, server: dict[str, Any] = SERVER) -> dict[str, Any]:
    (found,) = (p for p in server["packages"] if p["registryType"] == registry_type)
    return found


def documented_variables() -> dict[str, str]:
    """The variables `dessert-mcp --help` documents, each with the first line of what it says about it."""
    help_text = subprocess.run(
        [sys.executable, "-m", "dessert_mcp", "--help"], capture_output=True, text=True, check=True
    ).stdout
    return dict(re.findall(r"(?m)^  (DESSERT_[A-Z_]+) +(.+)$", help_text))


HELP_VARIABLES = documented_variables()


def test_the_vendored_schema_is_the_registrys_2025_12_11_file_unchanged() -> None:
    assert hashlib.sha256(SCHEMA_PATH.read_bytes()).hexdigest() == SCHEMA_SHA256
    assert SCHEMA["$id"] == SCHEMA_URL
    assert SERVER["$schema"] == SCHEMA_URL


def test_server_json_is_valid_under_the_schema() -> None:
    errors = [f"{'/'.join(map(str, e.absolute_path)) or '/'}: {e.message}" for e in VALIDATOR.iter_errors(SERVER)]
    assert errors == []


@pytest.mark.parametrize(
    "break_it",
    [
        lambda s: s.pop("version"),
        lambda s: s.update(description="x" * 101),
        lambda s: s.update(name="dessert-mcp"),
        lambda s: package("pypi", s).update(transport={"type": "websocket"}),
        lambda s: package("pypi", s).update(version="latest"),
        lambda s: package("mcpb", s).update(fileSha256="not-a-sha"),
        lambda s: s["remotes"][0].update(url="mcp.example.com/mcp"),
        lambda s: package("pypi", s)["environmentVariables"][0].update(isSecret="yes"),
    ],
    ids=[
        "no version",
        "description over 100 characters",
        "name without namespace",
        "unknown transport",
        "package version latest",
        "malformed sha256",
        "remote url without scheme",
        "isSecret not a boolean",
    ],
)
def test_the_schema_check_is_not_vacuous(break_it: Any) -> None:
    broken = copy.deepcopy(SERVER)
    break_it(broken)
    assert list(VALIDATOR.iter_errors(broken))


def _definition(ref: str) -> dict[str, Any]:
    found: dict[str, Any] = SCHEMA["definitions"][ref.rsplit("/", 1)[-1]]
    return found


def _objects(definition: dict[str, Any]) -> list[dict[str, Any]]:
    """The object schemas a definition is made of, following `$ref` and `allOf` (not `anyOf`, a choice)."""
    if "$ref" in definition:
        return _objects(_definition(definition["$ref"]))
    parts = [definition] if "properties" in definition or "required" in definition else []
    for part in definition.get("allOf", []):
        parts += _objects(part)
    return parts


TYPES = {"string": str, "boolean": bool, "object": dict, "array": list, "integer": int, "number": (int, float)}


def _required_fields_present_with_their_types(value: dict[str, Any], ref: str) -> list[str]:
    problems = []
    for part in _objects({"$ref": ref}):
        for name in part.get("required", []):
            if name not in value:
                problems.append(f"{ref}: {name} missing")
        for name, prop in part.get("properties", {}).items():
            if name in value and "type" in prop and not isinstance(value[name], TYPES[prop["type"]]):
                problems.append(f"{ref}: {name} is not a {prop['type']}")
    return problems


def test_each_required_field_of_the_schema_is_present_with_the_right_type() -> None:
    """The schema's `required` lists and property types, read from the schema itself, checked one object at a time."""
    problems = _required_fields_present_with_their_types(SERVER, "ServerDetail")
    problems += _required_fields_present_with_their_types(SERVER["repository"], "Repository")
    for pkg in SERVER["packages"]:
        problems += _required_fields_present_with_their_types(pkg, "Package")
        problems += _required_fields_present_with_their_types(pkg["transport"], "StdioTransport")
        for variable in pkg.get("environmentVariables", []):
            problems += _required_fields_present_with_their_types(variable, "KeyValueInput")
    for remote in SERVER["remotes"]:
        problems += _required_fields_present_with_their_types(remote, "StreamableHttpTransport")
        for header in remote.get("headers", []):
            problems += _required_fields_present_with_their_types(header, "KeyValueInput")
    assert problems == []
    # The registry also wants these, though the schema cannot say so: a version for PyPI, a hash for a bundle.
    assert package("pypi")["version"]
    assert re.fullmatch(r"[a-f0-9]{64}", package("mcpb")["fileSha256"])


def test_name_version_and_description_agree_with_pyproject_and_the_manifest() -> None:
    repository = PROJECT["urls"]["Repository"]
    github = re.fullmatch(r"https://github\.com/([^/]+)/([^/]+)", repository)
    assert github is not None, repository
    owner, repo = github.groups()
    assert SERVER["name"] == f"io.github.{owner}/{repo}"  # the namespace a GitHub login may publish under
    assert SERVER["repository"] == {"url": repository, "source": "github"}
    assert SERVER["version"] == __version__ == MANIFEST["version"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__), "one exact release version, valid for both PyPI and SemVer"
    assert SERVER["description"] == PROJECT["description"]
    assert SERVER["title"] == MANIFEST["display_name"]
    assert SERVER["websiteUrl"] == MANIFEST["homepage"]


def test_the_pypi_package_is_this_project_run_by_uvx_over_stdio() -> None:
    pypi = package("pypi")
    assert pypi["identifier"] == PROJECT["name"]
    assert pypi["version"] == __version__
    assert pypi["registryBaseUrl"] == "https://pypi.org"  # the only PyPI the official registry accepts
    assert pypi["runtimeHint"] == "uvx"
    assert pypi["transport"] == {"type": "stdio"}
    assert "dessert-mcp" in PROJECT["scripts"], "uvx runs the command named like the package"


def test_the_bundle_is_the_release_asset_make_bundle_builds() -> None:
    mcpb = package("mcpb")
    bundle = re.search(r"(?m)^BUNDLE := (\S+)$", (ROOT / "Makefile").read_text())
    assert bundle is not None
    asset = Path(bundle.group(1)).name
    assert mcpb["identifier"] == f"{PROJECT['urls']['Repository']}/releases/download/v{__version__}/{asset}"
    assert "mcp" in mcpb["identifier"]  # the registry's ownership rule for bundles
    assert mcpb["version"] == __version__
    assert mcpb["transport"] == {"type": "stdio"}


def test_the_pypi_variables_are_the_ones_the_cli_documents_for_stdio() -> None:
    names = [v["name"] for v in package("pypi")["environmentVariables"]]
    stdio = {name for name, text in HELP_VARIABLES.items() if not text.startswith("HTTP transports only")}
    assert len(names) == len(set(names))
    assert set(names) == stdio, "server.json and `dessert-mcp --help` disagree on the variables"
    assert set(names) <= SETTINGS_READ, "server.json lists a variable the server does not read"


def test_the_key_and_the_webhook_settings_are_secret_and_only_the_key_is_required() -> None:
    variables = {v["name"]: v for v in package("pypi")["environmentVariables"]}
    assert variables["DESSERT_API_KEY"]["isSecret"] is True
    assert variables["DESSERT_API_KEY"]["isRequired"] is True
    # A webhook URL is a secret too: Slack's and Discord's carry their token.
    secret = ["DESSERT_API_KEY", "DESSERT_ALERT_WEBHOOK_URL", "DESSERT_ALERT_WEBHOOK_SECRET"]
    assert [n for n, v in variables.items() if v.get("isSecret")] == secret
    assert [n for n, v in variables.items() if v.get("isRequired")] == ["DESSERT_API_KEY"]
    assert all("default" not in v for v in variables.values() if v.get("isSecret"))


@pytest.mark.parametrize("variable", [v for v in package("pypi")["environmentVariables"] if "default" in v])
def test_each_documented_default_is_the_servers_own_default(variable: dict[str, Any]) -> None:
    assert Settings.from_env({variable["name"]: variable["default"]}) == Settings.from_env({})


@pytest.mark.parametrize("variable", [v for v in package("pypi")["environmentVariables"] if "choices" in v])
def test_each_offered_choice_is_accepted_and_others_are_not(variable: dict[str, Any]) -> None:
    for choice in variable["choices"]:
        Settings.from_env({variable["name"]: choice})
    assert variable["default"] in variable["choices"]
    with pytest.raises(ConfigError):
        Settings.from_env({variable["name"]: "not-a-choice"})


def test_the_remote_is_a_template_for_a_streamable_http_deployment_behind_its_own_token() -> None:
    (remote,) = SERVER["remotes"]
    assert remote["type"] == "streamable-http"
    assert remote["url"].startswith("https://")  # TLS is the load balancer's job (README, Deployment)
    assert remote["url"].endswith(MCP_PATH)
    assert set(re.findall(r"\{(\w+)\}", remote["url"])) == set(remote["variables"])
    (header,) = remote["headers"]
    assert header["name"] == "Authorization"
    assert header["isSecret"] is True
    assert header["value"] == "Bearer {token}"
    assert header["variables"]["token"]["isSecret"] is True
    assert "DESSERT_MCP_AUTH_TOKEN" in header["description"]
    assert HELP_VARIABLES["DESSERT_MCP_AUTH_TOKEN"].startswith("HTTP transports only")


def test_the_readme_carries_the_registry_name_on_a_line_of_its_own() -> None:
    readme = (ROOT / "README.md").read_text()
    assert f"\n<!-- mcp-name: {SERVER['name']} -->\n" in readme


def test_server_json_is_written_as_make_bundle_rewrites_it() -> None:
    assert json.dumps(SERVER, indent=2, ensure_ascii=False) + "\n" == SERVER_JSON_TEXT


def test_make_bundle_writes_the_bundles_sha256_into_a_copy_of_server_json_and_changes_nothing_else(
    tmp_path: Path,
) -> None:
    source = tmp_path / "server.json"
    shutil.copy(ROOT / "server.json", source)
    target = tmp_path / "out" / "server.json"
    bundle = tmp_path / "dessert-mcp.mcpb"
    result = make("bundle", BUNDLE=bundle, SERVER_JSON=source, SERVER_JSON_OUT=target)
    assert result.returncode == 0, result.stdout + result.stderr
    assert source.read_text() == SERVER_JSON_TEXT
    written = json.loads(target.read_text())
    digest = hashlib.sha256(bundle.read_bytes()).hexdigest()
    assert package("mcpb", written)["fileSha256"] == digest
    package("mcpb", written)["fileSha256"] = package("mcpb")["fileSha256"]
    assert written == SERVER


def test_the_pypi_description_carries_the_registry_name_the_registry_looks_for(dist: Dist) -> None:
    """PyPI shows the wheel's description; the MCP Registry proves the package is ours by finding this line in it."""
    description = dist.metadata().get_payload()
    assert isinstance(description, str)
    assert f"<!-- mcp-name: {SERVER['name']} -->" in description
