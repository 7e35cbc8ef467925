"""dessert-mcp: an MCP server that reads a Dessert account's credit balance and usage."""

# The single source of the version: pyproject.toml reads it from here (cheaper at start than importlib.metadata).
__version__ = "0.1.0"

__all__ = ["__version__"]
