"""SearchEnv against its service in the three modes, over real uvicorn servers on 127.0.0.1:
local servers shared per world within a scope, remote URLs used round-robin, a server killed
mid-episode, and a stalled (SIGSTOPped) server that rollouts must fail fast against."""

from __future__ import annotations

import json
import os
import signal
import time

import httpx
import pytest

from agentenv import EnvServiceError
from agentenv.envs.search.env import SERVICE_FACTORY, SearchEnv
from agentenv.launch import LocalServer, service_scope
from agentenv.policies.scripted import ScriptedPolicy
from agentenv.rollout import EpisodeRequest, RolloutEngine


@pytest.fixture(scope="module")
def servers():
    """Two servers of the default world."""
    pair = [LocalServer(SERVICE_FACTORY, {}).start() for _ in range(2)]
    yield pair
    for server in pair:
        server.stop()


async def test_local_mode_shares_one_server_per_world_and_the_scope_stops_it(
    run_episode,
) -> None:
    async with service_scope() as pool:
        envs = [SearchEnv(service="local") for _ in range(3)]
        for k, env in enumerate(envs):
            results = [await run_episode(env, f"test-h{h}-{k}") for h in (1, 2, 3, 4)]
            assert all(r.success for r in results)
        (server,) = pool.servers
        assert {env._client.url for env in envs} == {server.url}
        for env in envs:
            await env.aclose()
        assert httpx.get(f"{server.url}/health", timeout=1.0).status_code == 200
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.url}/health", timeout=1.0)


async def test_remote_urls_are_used_round_robin(servers, run_episode) -> None:
    env = SearchEnv(service=[s.url for s in servers])
    in_process = SearchEnv()
    for k in range(6):
        remote = await run_episode(env, f"train-h2-{k}")
        local = await run_episode(in_process, f"train-h2-{k}")
        assert remote.messages == local.messages
        assert remote.success
    served = [httpx.get(f"{s.url}/stats").json()["served"]["requests"] for s in servers]
    assert all(n >= 5 for n in served), served
    await env.aclose()
    await in_process.aclose()


async def test_comma_separated_urls(servers) -> None:
    env = SearchEnv(service=",".join(s.url for s in servers))
    await env.areset(seed=0)
    observation, *_ = await env.astep("<search>capital</search>")
    assert observation.startswith("<information>")
    await env.aclose()


async def test_a_service_of_another_world_is_refused(servers) -> None:
    env = SearchEnv(service=servers[0].url, num_entities=300)
    with pytest.raises(EnvServiceError, match="serves another corpus") as caught:
        await env.areset(seed=0)
    assert caught.value.url == servers[0].url


async def test_service_killed_mid_episode_raises_quickly() -> None:
    server = LocalServer(SERVICE_FACTORY, {}).start()
    env = SearchEnv(service=server.url, timeout=2.0)
    await env.areset(options={"task": "train-h3-1"})
    observation, *_ = await env.astep("<search>capital</search>")
    assert observation.startswith("<information>")
    server.process.kill()
    server.process.wait()
    start = time.perf_counter()
    with pytest.raises(EnvServiceError, match=server.url):
        await env.astep("<search>mayor</search>")
    assert time.perf_counter() - start < 10
    # Bad actions still never need the service.
    observation, *_ = await env.astep("not an action")
    assert observation.startswith("My previous action is invalid")
    await env.aclose()


def test_sync_api_raises_the_same_error() -> None:
    server = LocalServer(SERVICE_FACTORY, {}).start()
    env = SearchEnv(service=server.url, timeout=2.0)
    env.reset(seed=0)
    server.stop()
    with pytest.raises(EnvServiceError):
        env.step("<search>capital</search>")
    env.close()


def test_a_corrupt_corpus_fails_the_local_server(tmp_path) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_text(json.dumps({"id": "1", "contents": '"A"\nx'}) + "\nnot json\n")
    with pytest.raises(EnvServiceError, match="exited with code"):
        LocalServer(SERVICE_FACTORY, {"corpus": str(path)}, startup_timeout=60).start()


async def test_episodes_against_a_stalled_server_fail_fast_once_its_breaker_opens() -> None:
    """128 episodes against a SIGSTOPped retriever: the first wave waits out its timeouts and
    opens the URL's breaker; the retries and every later episode fail at once, saying so."""
    server = LocalServer(SERVICE_FACTORY, {}).start()
    os.kill(server.process.pid, signal.SIGSTOP)
    engine = RolloutEngine(ScriptedPolicy())
    kwargs = {"service": server.url, "timeout": 1.0}
    requests = [EpisodeRequest("search-v0", seed, env_kwargs=kwargs) for seed in range(128)]
    try:
        trajs = await engine.run(requests)
    finally:
        server.stop()
    reasons = [t.reason for t in trajs]
    assert all(t.status == "error" for t in trajs)
    assert all(server.url in r and "circuit breaker" in r for r in reasons), reasons[0]
    not_sent = [r for r in reasons if "not sent" in r]
    waited = [r for r in reasons if "not sent" not in r]  # one timeout, then the breaker
    assert len(not_sent) >= len(trajs) - engine.config.default_env_concurrency, reasons[-1]
    assert all("failed after 1 attempt(s): no answer within the 1s" in r for r in waited)
    assert server.process.poll() is not None
