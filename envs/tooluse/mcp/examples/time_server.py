"""``mcp-server-time`` as an in-memory server: ``server="agentenv.envs.tooluse.mcp.examples.time_server:server"``.

The same server ``mcp-time-v0`` runs over stdio, built in this process (local timezone UTC), for
tests and for comparing the two transports.
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer
from mcp_server_time.server import create_server


def server() -> MCPServer:
    """A new ``mcp-server-time`` server whose local timezone is UTC."""
    return create_server("UTC")
