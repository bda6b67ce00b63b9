"""WebShop-like environment family: the WebShop protocol and reward over a procedural catalogue."""

from agentenv.registry import register
from agentenv.service import register_service

register(
    "webshop-v0",
    "agentenv.envs.webshop.env:WebShopEnv",
    description="Buy the instructed product in a WebShop-like store (WebShop text protocol)",
    expert="agentenv.envs.webshop.expert",
    pretraining="agentenv.envs.webshop.pretraining:pretraining_texts",
)
register_service(
    "webshop",
    "agentenv.envs.webshop.server:create_app",
    description="WebShop-like store: one shared catalogue and BM25 index, one browser per session",
)
