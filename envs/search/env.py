"""SearchEnv: multi-hop question answering over a BM25 retriever, with the Search-R1 protocol.

The agent reads a question and, turn by turn, either searches (``<search> query </search>``: the
env calls the retriever's ``/retrieve`` and answers ``<information>Doc 1(Title: t) text ...
</information>``) or answers (``<answer> a </answer>``: the episode ends). The first
``<(search|answer)>(.*?)</\\1>`` match of a message is its action
(:func:`agentenv.rewards.format.search_r1_action`); anything else gets
:data:`INVALID_ACTION_HINT` and the episode goes on. On the last of ``max_turns`` turns search is
refused; an episode without an answer is truncated there.

Rewards (Search-R1, Jin et al. 2025, arXiv:2503.09516): ``reward="em"`` is exact match after SQuAD
normalisation against any golden answer; ``"f1"`` the SQuAD token F1; ``"format"`` the
format-aware variant (1.0 / 0.8 / 0.2 / 0.1 / 0.0, see
:func:`agentenv.rewards.outcome.search_r1_format_score`) where the format is valid when every
action of the episode was. All three are reported as components of the final turn (``em``,
``f1``, ``format_score``); the reward is the selected one. Every turn also reports ``format``
(1.0 if its action was valid) and ``retrieval_hit`` (the share of the task's gold documents that
entered the context for the first time this turn); both have weight 0.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from agentenv.env import (
    ACTION_VALID,
    ANCHOR,
    GROUND_TRUTH,
    REWARD_COMPONENTS,
    SPLIT_OPTION,
    SUCCESS,
    SYSTEM_PROMPT,
    TASK_ID,
    TASK_OPTION,
    TextEnv,
)
from agentenv.envs.search.tasks import (
    SPLIT_BY,
    SPLITS,
    Task,
    World,
    WorldConfig,
    build_world,
    doc_text,
    doc_title,
    file_sha256,
    load_qa_splits,
)
from agentenv.launch import connect
from agentenv.retry import DEFAULT_TIMEOUT, RetryPolicy
from agentenv.rewards.format import search_r1_action
from agentenv.rewards.outcome import exact_match, f1_score, search_r1_format_score
from agentenv.service import EnvServiceError, ServiceClient, config_key

SERVICE_FACTORY = "agentenv.envs.search.server:create_app"
INVALID_ACTION_HINT = (
    "My previous action is invalid. If I want to search, I should put the query between "
    "<search> and </search>. If I want to give the final answer, I should put the answer "
    "between <answer> and </answer>."
)
SEARCH_REFUSED = (
    "Search is not available on the last turn, and no answer was given: the episode ends here."
)
LAST_TURN_NOTE = (
    "This is the last turn: search is no longer available. "
    "Give the final answer between <answer> and </answer>."
)
NO_RESULTS = "No documents matched the query."
MAX_QUERY_CHARS = 2000
"""Longer queries are cut to this many characters before they are sent."""
GOLD_CHECK_TASKS = 32
"""QA tasks (evenly spaced) whose gold documents a remote service given qa= alone must hold:
every one must exist, and those of at least half the tasks must contain an answer."""
REWARDS = ("em", "f1", "format")
_OUTCOME_COMPONENT = {"em": "em", "f1": "f1", "format": "format_score"}

THINK_INSTRUCTION = "Think inside <think> and </think> whenever you get new information."
"""The system prompt's line asking for reasoning (left out with ``think=False``)."""
SYSTEM_PROMPT_TEMPLATE = """\
Answer the question using a search engine over a document collection.
{think}To search, write a query between <search> and </search>; the results come back between \
<information> and </information>.
When you know the answer, write it between <answer> and </answer>, with no explanation, \
for example <answer> Kelvaria </answer>.
Each message may contain only one search or one answer. You have at most {max_turns} turns; \
on the last one you must answer."""


_CHECKED: set[tuple[tuple[str, ...], str]] = set()
"""(service URLs, corpus key) pairs whose corpus check passed in this process: the envs of a run
(one per episode) check a remote service once, not once per episode."""


def format_information(hits: list[dict[str, Any]], max_chars: int) -> str:
    """Search-R1's ``<information>Doc i(Title: t) text …</information>`` block, at most
    ``max_chars`` long; a cut body ends with ``[truncated N chars]``."""
    lines = []
    for i, hit in enumerate(hits, 1):
        contents = hit["document"]["contents"]
        text = " ".join(doc_text(contents).split())
        lines.append(f"Doc {i}(Title: {doc_title(contents)}) {text}")
    body = "\n".join(lines) if lines else NO_RESULTS
    room = max_chars - len("<information></information>")
    if len(body) > room:
        reserve = len(f"\n[truncated {len(body)} chars]")
        keep = max(0, room - reserve)
        body = f"{body[:keep]}\n[truncated {len(body) - keep} chars]"
    return f"<information>{body}</information>"


class SearchEnv(TextEnv):
    """Multi-hop QA over a BM25 retriever (Search-R1 protocol).

    Args:
        service: where the retriever runs: ``None`` (in-process, shared by envs of the same
            world), ``"local"`` (a uvicorn subprocess on 127.0.0.1, one per world, shared by
            the envs of the current :func:`agentenv.launch.service_scope` and stopped with
            it), or base URL(s) of ``agentenv serve search`` (a comma-separated string or a
            list; round-robin).
        split: ``"train"`` or ``"test"``: the split the seed draws from when reset gets no
            ``options={"split": ...}``. Both splits of a generated world are unlimited; the
            splits of a QA file are finite (see ``qa``).
        split_by: how the splits are kept apart: ``"entity"`` (test questions start from
            entities never asked about in training) or ``"question"`` (test questions are unseen
            (entity, relation chain) pairs over entities that also occur in training).
        world_seed, num_entities, distractors, test_fraction: knobs of the generated world
            (:class:`~agentenv.envs.search.tasks.WorldConfig`); a remote service must serve the
            same world (checked on first use).
        min_hops, max_hops: range of hops of the tasks the seed draws (1 to 4).
        corpus: path of a corpus JSONL (``{"id","contents"}``) to index instead of the world.
        qa: the tasks of a QA JSONL/parquet file (``{"question","golden_answers"}`` rows)
            instead of generated ones: a path (the file is every split: ``train`` and ``test``
            both list its rows) or a mapping split name → path (e.g. ``{"train": "train.jsonl",
            "test": "test.parquet"}``). Needs ``corpus`` unless ``service`` is a URL.
        topk: documents per search.
        max_turns: turns per episode; search is refused on the last one.
        max_obs_chars: cap on an observation's length.
        reward: ``"em"``, ``"f1"`` or ``"format"``.
        prefetch: open-book mode: the first observation also holds the ``topk`` documents
            retrieved for the question itself (retrieval-augmented QA); the agent may answer
            at once or search further.
        think: whether the system prompt asks for ``<think>`` reasoning (the scripted expert
            thinks only when asked); ``False`` gives shorter prompts and expert actions.
        timeout: seconds per attempt of a retriever call (each retried up to 3 times on
            transient failures; see :data:`agentenv.retry.DEFAULT_TIMEOUT`). A URL that keeps
            failing opens its circuit breaker: calls to it then fail at once.
    """

    description = "Multi-hop QA over a BM25 retriever (Search-R1 protocol)"
    stop_strings = ("</search>", "</answer>")
    reward_components = ("format", "retrieval_hit", "em", "f1", "format_score")
    transient_attributes = ("_client",)

    def __init__(
        self,
        *,
        service: str | list[str] | None = None,
        split: Literal["train", "test"] = "train",
        split_by: Literal["entity", "question"] = "entity",
        world_seed: int = 0,
        num_entities: int = WorldConfig.num_entities,
        distractors: float = WorldConfig.distractors,
        test_fraction: float = WorldConfig.test_fraction,
        min_hops: int = 1,
        max_hops: int = 4,
        corpus: str | Path | None = None,
        qa: str | Path | dict[str, str | Path] | None = None,
        topk: int = 3,
        max_turns: int = 5,
        max_obs_chars: int = 2000,
        reward: Literal["em", "f1", "format"] = "em",
        think: bool = True,
        prefetch: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        render_mode: str | None = None,
    ) -> None:
        super().__init__(render_mode=render_mode)
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if not 1 <= min_hops <= max_hops <= 4:
            raise ValueError(f"need 1 <= min_hops <= max_hops <= 4, got {min_hops}, {max_hops}")
        if reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {reward!r}")
        if max_turns < 1 or topk < 1 or max_obs_chars < 128:
            raise ValueError("need max_turns >= 1, topk >= 1 and max_obs_chars >= 128")
        is_url = service not in (None, "in-process", "local")
        if (qa is None) != (corpus is None) and not (qa is not None and is_url):
            raise ValueError(
                "qa= and corpus= go together (the questions are about that corpus); "
                "qa= alone needs service= URL(s) of a retriever serving its corpus"
            )
        self.service = service
        if split_by not in SPLIT_BY:
            raise ValueError(f"split_by must be one of {SPLIT_BY}, got {split_by!r}")
        self.split, self.split_by = split, split_by
        self.min_hops, self.max_hops = min_hops, max_hops
        self.topk, self.max_turns, self.max_obs_chars = topk, max_turns, max_obs_chars
        self.reward_name = reward
        self.reward_weights = {_OUTCOME_COMPONENT[reward]: 1.0}
        self.retry = RetryPolicy(timeout=timeout)
        self.world_config = WorldConfig(world_seed, num_entities, distractors, test_fraction)
        self._qa_splits: dict[str, tuple[Task, ...]] | None = None
        self._qa_tasks: dict[str, Task] | None = None
        if qa is not None:
            source = load_qa_splits(qa)
            self._qa_splits, self._qa_tasks = source.splits, source.by_id
            if split not in self._qa_splits:
                raise ValueError(
                    f"split={split!r} is not one of the QA splits {sorted(self._qa_splits)}"
                )
        if corpus is not None:
            self._service_config: dict[str, Any] = {"corpus": str(Path(corpus).resolve())}
        else:
            self._service_config = asdict(self.world_config)
        self._corpus_key = config_key({**self._service_config, "qa": qa})
        self._client: ServiceClient | None = None
        self.think = think
        self.prefetch = prefetch
        self.system_prompt = SYSTEM_PROMPT_TEMPLATE.format(
            max_turns=max_turns, think=f"{THINK_INSTRUCTION}\n" if think else ""
        )
        self._reset_episode()

    # -- tasks --------------------------------------------------------------------------------
    @property
    def world(self) -> World | None:
        """The generated world (None when the tasks come from a QA file)."""
        return None if self._qa_tasks is not None else build_world(self.world_config)

    def get_task(self, task: str | Task) -> Task:
        """The task named ``task`` (a :class:`Task` is returned as is)."""
        if isinstance(task, Task):
            return task
        if self._qa_tasks is not None:
            if task not in self._qa_tasks:
                raise KeyError(f"unknown task id {task!r} (not in the QA file)")
            return self._qa_tasks[task]
        return build_world(self.world_config).task_by_id(str(task))

    def splits(self) -> dict[str, int | None]:
        """``train`` and ``test``: unlimited for a generated world, the rows of a QA file."""
        if self._qa_splits is not None:
            return {name: len(tasks) for name, tasks in self._qa_splits.items()}
        return dict.fromkeys(SPLITS)

    def task_ids(self, split: str) -> list[str]:
        """The ids of a QA split's rows, in file order (generated splits are unlimited)."""
        self.check_split(split)
        if self._qa_splits is None:
            return super().task_ids(split)
        return [t.id for t in self._qa_splits[split]]

    def _draw_task(self, split: str) -> Task:
        rng = self.np_random
        if self._qa_splits is not None:
            tasks = self._qa_splits[split]
            return tasks[int(rng.integers(len(tasks)))]
        hops = int(rng.integers(self.min_hops, self.max_hops + 1))
        world = build_world(self.world_config)
        return world.task(split, hops, int(rng.integers(2**31)), self.split_by)

    # -- service ------------------------------------------------------------------------------
    async def _connect(self) -> ServiceClient:
        if self._client is None:
            client = await connect(
                SERVICE_FACTORY, self.service, config=self._service_config, retry=self.retry
            )
            check = (tuple(client.base_urls), self._corpus_key)
            if self.service not in (None, "in-process", "local") and check not in _CHECKED:
                await self._check_world(client)
                _CHECKED.add(check)
            self._client = client
        return self._client

    async def _check_world(self, client: ServiceClient) -> None:
        """Fail with :class:`EnvServiceError` (closing ``client``) unless the remote service
        holds this env's corpus: the generated world's fingerprint, the ``corpus=`` file's
        sha256, or, with ``qa=`` alone, the gold documents of a sample of the QA rows (rows
        without gold document ids cannot be checked; then nothing is)."""
        try:
            problem = await self._corpus_problem(client)
        except EnvServiceError as exc:
            await client.aclose()
            if exc.status is None:  # unreachable, stalled or failing: say that, not "wrong kind"
                raise
            raise EnvServiceError(
                f"cannot check which corpus the search service at {client.url} holds ({exc}); "
                "the check needs an `agentenv serve search` service",
                url=client.url,
            ) from exc
        except BaseException:
            await client.aclose()
            raise
        if problem is not None:
            await client.aclose()
            raise EnvServiceError(f"the search service at {client.url} {problem}", url=client.url)

    async def _corpus_problem(self, client: ServiceClient) -> str | None:
        """Why the service's corpus is not this env's, or None."""
        if "corpus" in self._service_config:
            path = self._service_config["corpus"]
            if not Path(path).is_file():
                raise FileNotFoundError(
                    f"corpus file not found: {path} (with service= URL(s), corpus= names a local "
                    "copy of the served corpus, whose sha256 the service's must match)"
                )
            return await self._fingerprint_problem(client, file_sha256(path), path)
        if self._qa_tasks is not None:
            return await self._gold_problem(client, self._qa_tasks.values())
        world = build_world(self.world_config)
        return await self._fingerprint_problem(
            client, world.fingerprint, f"world {asdict(self.world_config)}"
        )

    @staticmethod
    async def _fingerprint_problem(client: ServiceClient, expected: str, mine: str) -> str | None:
        stats = await client.get("/stats")
        served = stats.get("corpus_sha256")
        if served == expected:
            return None
        return (
            f"serves another corpus ({stats.get('world') or stats.get('source')}, fingerprint "
            f"{served}) than this env's {mine} (fingerprint {expected}); start it with the "
            "same corpus or knobs"
        )

    @staticmethod
    async def _gold_problem(client: ServiceClient, tasks: Iterable[Task]) -> str | None:
        """Ids alone prove little (corpora share id schemes such as 0..N), so the gold
        documents of most sampled tasks must also contain one of their answers."""
        with_gold = [t for t in tasks if t.gold_doc_ids]
        sample = with_gold[:: max(1, len(with_gold) // GOLD_CHECK_TASKS)][:GOLD_CHECK_TASKS]
        ids = sorted({d for t in sample for d in t.gold_doc_ids})
        if not ids:
            return None
        found = (await client.post("/documents", json={"ids": ids}))["result"]
        docs = {i: doc["contents"].lower() for i, doc in zip(ids, found, strict=True) if doc}
        missing = [i for i in ids if i not in docs]
        if missing:
            return (
                f"serves another corpus than the QA file's: it lacks {len(missing)} of the "
                f"{len(ids)} gold documents of {len(sample)} sampled QA tasks (e.g. {missing[:3]})"
            )
        answered = sum(
            any(a.lower() in docs[d] for d in t.gold_doc_ids for a in t.golden_answers)
            for t in sample
        )
        if 2 * answered >= len(sample):
            return None
        return (
            f"serves another corpus than the QA file's: its gold documents of only {answered} "
            f"of {len(sample)} sampled QA tasks contain an answer of the task"
        )

    async def retrieve(self, queries: list[str]) -> list[list[dict[str, Any]]]:
        """One batched Search-R1 ``/retrieve`` call; hits are ``{"document", "score"}``."""
        client = await self._connect()
        body = {"queries": queries, "topk": self.topk, "return_scores": True}
        return (await client.post("/retrieve", json=body))["result"]

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    # -- episode ------------------------------------------------------------------------------
    def _reset_episode(self) -> None:
        self._gold_seen: set[str] = set()
        self._other_seen: set[str] = set()
        self._format_valid = True

    def _anchor(self, kind: str) -> tuple[tuple[str, Any], ...]:
        return (
            ("action", kind),
            ("gold", tuple(sorted(self._gold_seen))),
            ("other", len(self._other_seen)),
        )

    async def _areset(self, *, seed: int | None, options: dict[str, Any]) -> tuple[str, dict]:
        task = options.get(TASK_OPTION)
        split = options.get(SPLIT_OPTION) or self.split
        self.task = self.get_task(task) if task is not None else self._draw_task(split)
        self._reset_episode()
        await self._connect()
        info = {
            TASK_ID: self.task.id,
            GROUND_TRUTH: list(self.task.golden_answers),
            SYSTEM_PROMPT: self.system_prompt,
            ANCHOR: self._anchor("reset"),
        }
        observation = f"Question: {self.task.question}"
        if self.prefetch:
            observation += "\n" + await self._search(self.task.question, {})
            info[ANCHOR] = self._anchor("reset")
        return observation, info

    async def _astep(self, action: str) -> tuple[str, float, bool, bool, dict]:
        last_turn = self.turn >= self.max_turns - 1
        kind, content = search_r1_action(action)
        valid = kind == "answer" or (kind == "search" and bool(content) and not last_turn)
        components = {"format": float(valid), "retrieval_hit": 0.0}
        self._format_valid &= valid
        terminated = kind == "answer"
        if kind == "answer":
            observation = ""
        elif kind == "search" and content and not last_turn:
            observation = await self._search(content, components)
        elif kind == "search" and content:
            observation, kind = SEARCH_REFUSED, "refused"
        else:
            observation, kind = INVALID_ACTION_HINT, "invalid"
        truncated = not terminated and last_turn
        if not terminated and not truncated and self.turn == self.max_turns - 2:
            observation = f"{observation}\n\n{LAST_TURN_NOTE}"
        success = False
        if terminated or truncated:
            components.update(self._outcome(content if terminated else None))
            success = components["em"] == 1.0
        reward = sum(w * components[k] for k, w in self.reward_weights.items() if k in components)
        info = {
            TASK_ID: self.task.id,
            REWARD_COMPONENTS: components,
            ACTION_VALID: valid,
            ANCHOR: self._anchor(kind),
            SUCCESS: success,
        }
        return observation, reward, terminated, truncated, info

    async def _search(self, query: str, components: dict[str, float]) -> str:
        # Lone surrogates cannot travel as UTF-8 JSON: replace them, never fail on them.
        query = query[:MAX_QUERY_CHARS].encode("utf-8", "replace").decode("utf-8")
        (hits,) = await self.retrieve([query])
        gold = set(self.task.gold_doc_ids)
        new_gold = 0
        for hit in hits:
            doc_id = str(hit["document"]["id"])
            if doc_id in gold:
                new_gold += doc_id not in self._gold_seen
                self._gold_seen.add(doc_id)
            else:
                self._other_seen.add(doc_id)
        if gold:
            components["retrieval_hit"] = new_gold / len(gold)
        return format_information(hits, self.max_obs_chars)

    def _outcome(self, answer: str | None) -> dict[str, float]:
        golden = self.task.golden_answers
        em = exact_match(answer, golden)
        correct = None if answer is None else em == 1.0
        return {
            "em": em,
            "f1": f1_score(answer, golden),
            "format_score": search_r1_format_score(correct, self._format_valid),
        }
