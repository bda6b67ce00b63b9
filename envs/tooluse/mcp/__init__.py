"""MCP servers as tool-use envs (``mcp-v0``, ``mcp-time-v0``).

:mod:`.tasks` reads task files (no MCP import); :mod:`.client` holds the SDK-facing parts (server
specs, bounded connections, the process's pool) and is the only module that imports ``mcp``;
:mod:`.env` is the env; :mod:`.expert` the scripted solver of the time example. Nothing here is
imported until an env is made, so agentenv works without the ``mcp`` extra.
"""
