"""`python -m dessert_mcp`: the same as the `dessert-mcp` command."""

from dessert_mcp.cli import main

if __name__ == "__main__":
    main()
