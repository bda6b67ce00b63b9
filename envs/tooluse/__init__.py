"""Tool-use environment family: native function calls over an executable tool world, BFCL files
and MCP servers (docs/envs/tooluse.md). Envs are registered by string: nothing is imported (mcp
included) until one is made."""

from agentenv.registry import register
from agentenv.service import register_service

register(
    "tooluse-v0",
    "agentenv.envs.tooluse.world.env:ToolWorldEnv",
    description="Customer-service requests over a shop database with typed tools",
    expert="agentenv.envs.tooluse.world.expert",
)
register_service(
    "tooluse",
    "agentenv.envs.tooluse.world.server:create_app",
    description="The tool world: one private SQLite shop database per session",
)
register(
    "bfcl-v0",
    "agentenv.envs.tooluse.bfcl.env:BFCLEnv",
    description="BFCL single-turn function calling (BFCL files or shipped samples), AST-checked",
    expert="agentenv.envs.tooluse.bfcl.expert",
)
register(
    "mcp-v0",
    "agentenv.envs.tooluse.mcp.env:McpEnv",
    description="Any MCP server's tools (stdio or in-memory) with tasks from a JSONL task file",
    expert="agentenv.envs.tooluse.mcp.expert",
)
register(
    "mcp-time-v0",
    "agentenv.envs.tooluse.mcp.env:McpTimeEnv",
    description="Timezone conversions with the mcp-server-time MCP server over stdio",
    expert="agentenv.envs.tooluse.mcp.expert",
)
