"""dessert-mcp: an MCP server that reads a Dessert account's credit balance and usage."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dessert-mcp")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
