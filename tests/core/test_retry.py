"""agentenv.retry: one retry loop for tool services, inference servers and the weight sync, each
with its own retryable statuses; Retry-After honoured; errors that name the URL."""

from __future__ import annotations

import asyncio
import email.utils
from pathlib import Path

import httpx
import pytest

from agentenv.launch import LocalServer
from agentenv.policies.openai import INFERENCE_STATUS, OpenAIPolicy, PolicyServerError
from agentenv.retry import (
    GATEWAY_STATUS,
    Attempts,
    RequestFailed,
    RetryPolicy,
    send_with_retries,
)
from agentenv.service import EnvServiceError, ServiceClient
from tests.core.service_app import create_status_app

HERE = Path(__file__).parent
URL = "http://answering/call"


async def call(app, policy: RetryPolicy, **kwargs) -> tuple[httpx.Response, list, list]:
    """``POST /call`` of ``app`` under ``policy``: the response, the outcomes ``settle`` heard
    and the statuses the app answered."""
    outcomes: list[str | None] = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as client:

        async def send(attempts: Attempts) -> httpx.Response:
            return await client.post(attempts.url)

        def settle(attempts: Attempts, failure: str | None) -> None:
            outcomes.append(failure)

        try:
            response = await send_with_retries(
                send, policy, method="POST", url=URL, settle=settle, **kwargs
            )
        finally:
            hits = (await client.get("http://answering/hits")).json()
    return response, outcomes, hits


async def test_transient_statuses_are_retried_until_an_answer():
    response, outcomes, hits = await call(
        create_status_app([503, 502, 200]), RetryPolicy(retries=3, backoff=0.0)
    )
    assert response.json() == {"status": 200}
    assert hits == [503, 502, 200]
    assert [o is None for o in outcomes] == [False, False, True]
    assert outcomes[0].startswith("HTTP 503")


async def test_each_caller_s_set_decides_what_is_transient():
    app = create_status_app([500])
    with pytest.raises(RequestFailed, match=r"POST http://answering/call failed with HTTP 500"):
        await call(app, RetryPolicy(retries=2, backoff=0.0))  # a tool service's 500: a bug
    app = create_status_app([500])
    policy = RetryPolicy(retries=2, backoff=0.0, retryable=INFERENCE_STATUS)
    with pytest.raises(RequestFailed, match=r"failed after 3 attempt\(s\): HTTP 500") as caught:
        await call(app, policy)  # an inference server's 500: maybe the batch
    assert caught.value.url == URL and caught.value.status == 500
    assert GATEWAY_STATUS < INFERENCE_STATUS and 429 in INFERENCE_STATUS - GATEWAY_STATUS


async def test_a_refusal_fails_at_once_with_its_status_in_the_caller_s_error():
    app = create_status_app([422, 200])
    with pytest.raises(EnvServiceError) as caught:
        await call(app, RetryPolicy(backoff=0.0), error=EnvServiceError)
    assert caught.value.status == 422 and caught.value.url == URL
    assert isinstance(caught.value, RequestFailed)


async def test_a_request_that_is_not_idempotent_is_retried_only_when_never_sent():
    with pytest.raises(RequestFailed, match=r"failed after 1 attempt\(s\): HTTP 503"):
        await call(create_status_app([503, 200]), RetryPolicy(backoff=0.0), idempotent=False)
    dead = ServiceClient.remote("http://127.0.0.1:9", retry=RetryPolicy(retries=1, backoff=0.0))
    with pytest.raises(EnvServiceError, match=r"127\.0\.0\.1:9/x failed after 2 attempt\(s\)"):
        await dead.post("/x", {}, idempotent=False)  # a connection error: it never reached one
    await dead.aclose()


def test_retry_after_sets_the_wait_up_to_max_delay():
    policy = RetryPolicy(backoff=0.5, max_delay=60.0)

    def asked(value: str) -> httpx.Response:
        return httpx.Response(503, headers={"Retry-After": value})

    assert [policy.delay(k) for k in range(3)] == [0.5, 1.0, 2.0]
    assert policy.delay(2, asked("7")) == 7.0
    assert policy.delay(0, asked("3600")) == 60.0
    assert policy.delay(1, asked("soon")) == 1.0
    assert policy.delay(0, asked(email.utils.formatdate(0, usegmt=True))) == 0.0  # in the past
    assert policy.delay(1, httpx.Response(503)) == 1.0


async def test_the_loop_waits_what_retry_after_asks_not_the_backoff():
    app = create_status_app([429, 200], retry_after="0")
    policy = RetryPolicy(backoff=3600.0, retryable=INFERENCE_STATUS)
    response, _, hits = await asyncio.wait_for(call(app, policy), 60)  # the backoff: an hour
    assert response.status_code == 200 and hits == [429, 200]


async def test_openai_policy_retries_an_inference_server_s_load(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(HERE))
    with LocalServer("service_app:create_status_app", {"statuses": [429, 500, 200]}) as server:
        policy = OpenAIPolicy(server.url, "m", backoff=0.0)
        assert await policy.post("/completions", {}) == {"status": 200}
        assert httpx.get(f"{server.url}/hits").json() == [429, 500, 200]
        await policy.aclose()
    with LocalServer("service_app:create_status_app", {"statuses": [404, 200]}) as server:
        policy = OpenAIPolicy(server.url, "m", backoff=0.0)
        with pytest.raises(PolicyServerError, match=r"/v1/completions failed with HTTP 404"):
            await policy.post("/completions", {})
        await policy.aclose()
