"""The package stands on the SDK's documented API: every `mcp.*` name it imports is on a reviewed list.

listing.py is the one fenced module allowed the provisional middleware; anything new fails here, by name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import mcp.types

import dessert_mcp

PACKAGE = Path(dessert_mcp.__file__).parent
FENCED = {"listing.py"}

# (module, name): each documented in the SDK's guides or API reference and reviewed for this project.
DOCUMENTED = {
    ("mcp", "Client"),
    ("mcp", "MCPError"),
    ("mcp", "StdioServerParameters"),
    ("mcp.client.stdio", "get_default_environment"),
    ("mcp.server", "CacheHint"),
    ("mcp.server.apps", "Apps"),
    ("mcp.server.apps", "ResourceCsp"),
    ("mcp.server.mcpserver", "Context"),
    ("mcp.server.mcpserver", "MCPServer"),
    ("mcp.server.mcpserver.exceptions", "ResourceError"),
    ("mcp.server.transport_security", "TransportSecuritySettings"),
    # The subscriptions/listen fan-out seam (2026-07-28): the bus's event types, in the module's __all__.
    ("mcp.server.subscriptions", "PromptsListChanged"),
    ("mcp.server.subscriptions", "ResourceUpdated"),
    ("mcp.server.subscriptions", "ResourcesListChanged"),
    ("mcp.server.subscriptions", "ServerEvent"),
    ("mcp.server.subscriptions", "ToolsListChanged"),
    ("mcp.server.auth.middleware.auth_context", "get_access_token"),
    ("mcp.server.auth.settings", "AuthSettings"),
    ("mcp.server.auth.settings", "ClientRegistrationOptions"),
    ("mcp.server.auth.settings", "RevocationOptions"),
    # The authorization-server provider interface and its parameter and result types.
    *(
        ("mcp.server.auth.provider", name)
        for name in (
            "AccessToken",
            "AuthorizationCode",
            "AuthorizationParams",
            "AuthorizeError",
            "OAuthAuthorizationServerProvider",
            "RefreshToken",
            "RegistrationError",
            "TokenError",
            "TokenVerifier",
        )
    ),
    ("mcp.shared.auth", "OAuthClientInformationFull"),
    ("mcp.shared.auth", "OAuthToken"),
    # The wire types: public by their module's __all__.
    *(("mcp.types", name) for name in mcp.types.__all__),
}


def sdk_imports(path: Path) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mcp":
            found |= {(node.module, alias.name) for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {(alias.name, "*") for alias in node.names if alias.name.split(".")[0] == "mcp"}
    return found


def test_no_module_imports_an_undocumented_sdk_name_outside_the_fenced_listing_module() -> None:
    unreviewed = {
        f"{path.relative_to(PACKAGE)}: from {module} import {name}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name not in FENCED or path.parent != PACKAGE
        for module, name in sdk_imports(path) - DOCUMENTED
    }
    assert not unreviewed, sorted(unreviewed)
