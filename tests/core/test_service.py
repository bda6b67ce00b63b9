"""Service plumbing in all three launch modes, server pools and circuit breakers, with real
uvicorn servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from agentenv import EnvServiceError
from agentenv.launch import LocalServer, connect, current_pool, service_scope
from agentenv.service import BreakerRegistry, RetryPolicy, ServiceClient, shared_app

FACTORY = "service_app:create_app"
HERE = Path(__file__).parent
FAST = RetryPolicy(timeout=2.0, retries=2, backoff=0.01)


@pytest.fixture(autouse=True)
def _importable(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.setenv("PYTHONPATH", str(HERE))


@pytest.fixture
def server():
    with LocalServer(FACTORY, {"name": "probe"}) as srv:
        yield srv


async def eventually(condition: Callable[[], bool], what: str) -> None:
    """Wait (at most 10 s) until ``condition()`` holds."""
    for _ in range(400):
        if condition():
            return
        await asyncio.sleep(0.025)
    pytest.fail(f"never happened: {what}")


def wait_gone(pid: int) -> bool:
    """Whether process ``pid`` ends (or is a zombie) within 10 s."""
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            with open(f"/proc/{pid}/status") as f:
                if "State:\tZ" in f.read():
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False


def answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1.0).status_code == 200
    except httpx.TransportError:
        return False


# -- modes -------------------------------------------------------------------------------------
async def test_in_process_mode_has_no_sockets_and_shares_the_app():
    client = await connect(FACTORY, config={"name": "a"})
    assert client.url == "http://in-process"
    assert (await client.health()) == {"status": "ok", "service": "a"}
    assert (await client.post("/echo", {"x": "ü"}))["echo"] == {"x": "ü"}
    assert shared_app(FACTORY, {"name": "a"}) is shared_app(FACTORY, {"name": "a"})
    await client.aclose()


async def test_local_mode_starts_health_waits_and_stops(server):
    assert server.url.startswith("http://127.0.0.1:")
    client = ServiceClient.remote(server.url, retry=FAST)
    assert (await client.health())["status"] == "ok"
    await client.aclose()
    server.stop()
    assert server.process.poll() is not None


async def test_remote_round_robin_over_two_servers():
    with LocalServer(FACTORY) as a, LocalServer(FACTORY) as b:
        client = ServiceClient.remote(f"{a.url},{b.url}", retry=FAST)
        pids = {(await client.post("/echo", {}))["pid"] for _ in range(4)}
        assert pids == {a.process.pid, b.process.pid}
        await client.aclose()


# -- retries -----------------------------------------------------------------------------------
async def test_retries_transient_errors_then_succeeds():
    client = ServiceClient.in_process(shared_app(FACTORY, {"fail_first": 2}), retry=FAST)
    assert (await client.post("/flaky", {}))["calls"] == 3
    await client.aclose()


async def test_client_error_is_not_retried_and_names_url():
    client = ServiceClient.in_process(shared_app(FACTORY, {"name": "bad"}), retry=FAST)
    with pytest.raises(EnvServiceError, match=r"/bad failed with HTTP 422.*field 'x'") as caught:
        await client.post("/bad", {})
    assert caught.value.status == 422
    await client.aclose()


async def test_dead_url_fails_bounded_and_names_url():
    client = ServiceClient.remote("http://127.0.0.1:9", retry=FAST, breakers=BreakerRegistry())
    with pytest.raises(EnvServiceError, match=r"127\.0\.0\.1:9/health.*3 attempt"):
        await client.health()
    await client.aclose()


async def test_timeout_is_bounded():
    client = ServiceClient.in_process(
        shared_app(FACTORY, {"name": "slow"}),
        retry=RetryPolicy(timeout=0.2, retries=1, backoff=0.01),
    )
    with pytest.raises(EnvServiceError, match="timeout"):
        await client.post("/slow", {"seconds": 30})
    await client.aclose()


async def test_service_killed_mid_use_raises_not_hangs(server):
    client = ServiceClient.remote(server.url, retry=FAST)
    await client.health()
    with pytest.raises(EnvServiceError):
        await client.post("/die", {}, idempotent=False)
    server.process.wait(5)
    with pytest.raises(EnvServiceError, match=server.url):
        await asyncio.wait_for(client.health(), 20)
    await client.aclose()


def test_local_server_dies_with_its_parent(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(
        "import sys, time\n"
        f"sys.path.insert(0, {str(HERE)!r})\n"
        "from agentenv.launch import LocalServer\n"
        f"s = LocalServer({FACTORY!r}).start()\n"
        "print(s.process.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    child_pid = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    assert wait_gone(child_pid), f"service subprocess {child_pid} outlived its parent"


# -- pools -------------------------------------------------------------------------------------
async def test_a_scope_runs_one_server_per_config_and_stops_them_all():
    async with service_scope() as pool:
        assert current_pool() is pool
        clients = await asyncio.gather(
            *(connect(FACTORY, "local", config={"name": "x"}) for _ in range(6))
        )
        other = await connect(FACTORY, "local", config={"name": "y"})
        assert len({c.url for c in clients}) == 1 and other.url != clients[0].url
        assert len(pool.servers) == 2
        assert (await clients[3].health())["service"] == "x"
        await clients[0].aclose()  # a client closing leaves the shared server running
        assert (await clients[1].health())["status"] == "ok"
        servers = pool.servers
    assert current_pool() is not pool
    assert all(s.process.poll() is not None for s in servers)
    assert not answers(other.url) and not answers(clients[0].url)


async def test_starting_a_server_does_not_block_the_event_loop():
    async with service_scope() as pool:
        start = asyncio.create_task(pool.server(FACTORY, {"startup_delay": 2.0}))
        bystander = await connect(FACTORY, config={"name": "bystander"})
        for _ in range(5):
            await bystander.post("/echo", {})
        assert not start.done()  # other work ran while the child was starting
        assert (await start).alive
        await bystander.aclose()


async def test_a_failed_start_reaches_every_waiter_and_the_next_call_retries():
    async with service_scope() as pool:
        starts = [pool.server(FACTORY, {"crash": True}) for _ in range(3)]
        results = await asyncio.gather(*starts, return_exceptions=True)
        assert all(isinstance(r, EnvServiceError) for r in results), results
        assert all("exited with code" in str(r) for r in results)
        assert pool.servers == []
        with pytest.raises(EnvServiceError, match="exited with code"):
            await pool.server(FACTORY, {"crash": True})


async def test_a_cancelled_first_caller_leaves_the_start_to_the_others():
    async with service_scope() as pool:
        first = asyncio.create_task(pool.server(FACTORY, {"startup_delay": 1.0}))
        await asyncio.sleep(0.1)
        second = asyncio.create_task(pool.server(FACTORY, {"startup_delay": 1.0}))
        await asyncio.sleep(0.1)
        first.cancel()
        server = await second
        assert server.alive and pool.servers == [server]


async def test_the_pool_relaunches_a_server_that_died():
    async with service_scope() as pool:
        first = await pool.server(FACTORY, {"name": "phoenix"})
        first.kill()
        second = await pool.server(FACTORY, {"name": "phoenix"})
        assert second is not first and second.alive and answers(second.url)


def test_servers_launched_outside_a_scope_stop_at_interpreter_exit(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(
        "import asyncio, sys\n"
        f"sys.path.insert(0, {str(HERE)!r})\n"
        "from agentenv.launch import connect\n"
        "async def main():\n"
        f"    client = await connect({FACTORY!r}, 'local')\n"
        "    print((await client.post('/echo', {}))['pid'], flush=True)\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert wait_gone(int(done.stdout.split()[0]))


# -- circuit breakers --------------------------------------------------------------------------
async def test_the_breaker_opens_fails_fast_and_lets_a_trial_through_after_the_cooldown():
    with LocalServer(FACTORY, {"fail_first": 3}) as server:
        breakers = BreakerRegistry(failures=2, cooldown=0.5)
        client = ServiceClient.remote(
            server.url, retry=RetryPolicy(timeout=2.0, retries=0), breakers=breakers
        )
        breaker = breakers.get(server.url)

        def calls() -> int:
            return httpx.get(f"{server.url}/calls").json()["calls"]

        for _ in range(2):
            with pytest.raises(EnvServiceError, match="HTTP 503"):
                await client.post("/flaky", {})
        with pytest.raises(
            EnvServiceError,
            match=r"/flaky not sent: the circuit breaker of http://127\.0\.0\.1:\d+ is open after "
            r"2 consecutive failure\(s\) \(calls to it fail at once for another \d+\.\ds, then "
            r"one trial call is let through\); last failure: HTTP 503.*warming up",
        ):
            await client.post("/flaky", {})
        assert calls() == 2  # the refused call never reached the server

        await eventually(lambda: breaker.state == "half-open", "the cool-down ends")
        with pytest.raises(EnvServiceError, match="HTTP 503"):  # the trial fails: open again
            await client.post("/flaky", {})
        assert breaker.state == "open"
        with pytest.raises(EnvServiceError, match="not sent"):
            await client.post("/flaky", {})
        assert calls() == 3

        await eventually(lambda: breaker.state == "half-open", "the second cool-down ends")
        assert (await client.post("/flaky", {}))["calls"] == 4  # the trial succeeds: closed
        assert breaker.state == "closed"
        assert (await client.post("/flaky", {}))["calls"] == 5
        await client.aclose()


async def test_half_open_lets_exactly_one_trial_through(server):
    breakers = BreakerRegistry(failures=1, cooldown=0.3)
    client = ServiceClient.remote(
        server.url, retry=RetryPolicy(timeout=1.0, retries=0), breakers=breakers
    )
    breaker = breakers.get(server.url)
    with pytest.raises(EnvServiceError, match="timeout"):
        await client.post("/slow", {"seconds": 5})
    await eventually(lambda: breaker.state == "half-open", "the cool-down ends")

    cancelled = asyncio.create_task(client.post("/slow", {"seconds": 5}))
    await asyncio.sleep(0)  # it took the trial slot and is waiting for the answer
    with pytest.raises(
        EnvServiceError,
        match=r"is half-open after 1 consecutive failure\(s\) \(a trial call is in flight",
    ):
        await client.post("/echo", {})
    cancelled.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await cancelled
    assert breaker.state == "half-open"  # a cancelled trial gives no verdict, frees the slot

    trial = asyncio.create_task(client.post("/slow", {"seconds": 0.05}))
    await asyncio.sleep(0)
    with pytest.raises(EnvServiceError, match="half-open"):
        await client.post("/echo", {})
    assert await trial == {}
    assert breaker.state == "closed"
    assert (await client.post("/echo", {}))["pid"] == server.process.pid
    await client.aclose()


async def test_round_robin_skips_an_open_url_while_another_is_healthy(server):
    dead = "http://127.0.0.1:9"
    breakers = BreakerRegistry(failures=1, cooldown=60.0)
    client = ServiceClient.remote([dead, server.url], retry=FAST, breakers=breakers)
    pids = [(await client.post("/echo", {}))["pid"] for _ in range(6)]
    assert pids == [server.process.pid] * 6
    assert breakers.get(dead).state == "open"
    assert breakers.get(dead).consecutive == 1  # tried once, then skipped
    assert breakers.get(server.url).state == "closed"
    await client.aclose()


async def test_a_stalled_server_opens_the_breaker_every_client_shares(server):
    retry = RetryPolicy(timeout=0.5, retries=3, backoff=0.01)
    first = ServiceClient.remote(server.url, retry=retry)
    other = ServiceClient.remote(server.url, retry=retry)
    assert (await other.health())["status"] == "ok"
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        with pytest.raises(
            EnvServiceError,
            match=r"failed after 3 attempt\(s\): no answer within the 0\.5s timeout.*"
            r"the circuit breaker of .* is open",
        ):
            await first.health()
        with pytest.raises(
            EnvServiceError,
            match=rf"GET {server.url}/health not sent: .*open after 3 consecutive.*"
            r"last failure: no answer within the 0\.5s timeout",
        ):
            await other.health()
    finally:
        server.stop()  # SIGTERM reaches a stopped server too
    assert server.process.poll() is not None
    await first.aclose()
    await other.aclose()
