"""Tool-use environment family: native function calls over executable tool worlds, BFCL files
and MCP servers."""
