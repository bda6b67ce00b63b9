"""Search environment family (Search-R1 protocol over a BM25 retriever service)."""

from agentenv.registry import register
from agentenv.service import register_service

register(
    "search-v0",
    "agentenv.envs.search.env:SearchEnv",
    description="Multi-hop QA over a BM25 retriever (Search-R1 protocol)",
    expert="agentenv.envs.search.expert",
    pretraining="agentenv.envs.search.pretraining:pretraining_texts",
)
register_service(
    "search",
    "agentenv.envs.search.server:create_app",
    description="BM25 retriever speaking the Search-R1 /retrieve protocol",
)
