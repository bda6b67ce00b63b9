"""The shipped MCP example: ``mcp-server-time`` with generated timezone-conversion tasks."""
