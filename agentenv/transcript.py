"""Transcripts: an episode as a person reads it, capped in size, for eval rows and saved runs.

:func:`build_transcript` turns a :class:`~agentenv.trajectory.Trajectory` into a JSON-ready dict:

- ``messages``: the chat (:attr:`Trajectory.messages`: system prompt, observations, assistant
  actions with their ``tool_calls``, ``tool`` results), each message with the ``turn`` it belongs
  to (-1 for the system prompt and the first observation);
- ``tokens``: the token ids the policy was fed and produced, in segments of one turn and one loss
  mask value (``{"turn", "loss_mask", "ids", "text", "logprobs"}``; ``text`` is each token
  decoded in place, ``logprobs`` is given on trainable segments, rounded to 4 decimals, None
  where not finite);
- ``cut``: present only when a cap cut something: ``{"chars": n, "tokens": m}``.

Caps (:class:`TranscriptLimits`) keep every message and segment and shorten the longest first:
each is cut to the same length, the largest one that fits the budget, so short actions stay
whole while a long system prompt or observation loses its tail. A cut message ends with
:data:`CUT_MARKER` and has ``"cut": n`` (characters dropped); a cut segment has ``"cut": n``
(tokens dropped).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agentenv.trajectory import Trajectory, jsonable

CUT_MARKER = "\n[… {n} more characters cut by the transcript cap]"
"""Appended to a message whose content the cap shortened (``n``: characters dropped)."""

LOGPROB_DECIMALS = 4


@dataclass(frozen=True)
class TranscriptLimits:
    """Size caps of one transcript: characters of message contents and tokens of the token
    view (about 16 KB of text and 100 KB of JSON for the tokens at the defaults)."""

    max_chars: int = 16_000
    max_tokens: int = 4_096

    def __post_init__(self) -> None:
        if self.max_chars < 0 or self.max_tokens < 0:
            raise ValueError(f"transcript limits must be ≥ 0, got {self}")


DEFAULT_LIMITS = TranscriptLimits()


def build_transcript(
    traj: Trajectory, tokenizer: Any = None, limits: TranscriptLimits = DEFAULT_LIMITS
) -> dict[str, Any]:
    """The capped transcript of ``traj`` (see the module docs); ``tokenizer`` (a Hugging Face
    tokenizer) decodes each token's text, without it segments carry ids only."""
    messages, chars_cut = _capped_messages(traj.messages, limits.max_chars)
    out: dict[str, Any] = {"messages": messages}
    tokens_cut = 0
    if traj.token_ids:
        out["tokens"], tokens_cut = _capped_segments(traj, tokenizer, limits.max_tokens)
    if chars_cut or tokens_cut:
        out["cut"] = {"chars": chars_cut, "tokens": tokens_cut}
    return jsonable(out)


def fair_limit(sizes: Sequence[int], budget: int) -> int:
    """The largest ``L`` with ``Σ min(size, L) ≤ budget`` (every item cut to at most ``L``)."""
    remaining, left = budget, len(sizes)
    for size in sorted(sizes):
        if size * left > remaining:
            return remaining // left
        remaining -= size
        left -= 1
    return max(sizes, default=0)


def message_turns(messages: Sequence[dict[str, Any]]) -> list[int]:
    """The turn of each message: -1 before the first assistant message, then the index of the
    assistant message that opens the turn (its observations and tool results follow it)."""
    turns, turn = [], -1
    for message in messages:
        turn += message.get("role") == "assistant"
        turns.append(turn)
    return turns


def _capped_messages(
    messages: Sequence[dict[str, Any]], max_chars: int
) -> tuple[list[dict[str, Any]], int]:
    contents = [m.get("content") if isinstance(m.get("content"), str) else "" for m in messages]
    limit = fair_limit([len(c) for c in contents], max_chars)
    out, cut_total = [], 0
    for message, content, turn in zip(messages, contents, message_turns(messages), strict=True):
        entry = {**message, "turn": turn}
        cut = len(content) - limit
        if cut > 0:
            entry["content"] = content[:limit] + CUT_MARKER.format(n=f"{cut:,}")
            entry["cut"] = cut
            cut_total += cut
        out.append(entry)
    return out, cut_total


def token_segments(traj: Trajectory) -> list[tuple[int, int, int, int]]:
    """``(start, end, turn, loss_mask)`` of each maximal run of tokens of one turn and one mask
    value (the prompt, then each turn's action and observation)."""
    segments: list[tuple[int, int, int, int]] = []
    start = 0
    for i in range(1, len(traj.token_ids) + 1):
        if i == len(traj.token_ids) or (traj.turn_ids[i], traj.loss_mask[i]) != (
            traj.turn_ids[start],
            traj.loss_mask[start],
        ):
            segments.append((start, i, traj.turn_ids[start], traj.loss_mask[start]))
            start = i
    return segments


def _capped_segments(
    traj: Trajectory, tokenizer: Any, max_tokens: int
) -> tuple[list[dict[str, Any]], int]:
    spans = token_segments(traj)
    limit = fair_limit([end - start for start, end, _, _ in spans], max_tokens)
    out, cut_total = [], 0
    for start, end, turn, mask in spans:
        keep = min(end, start + limit)
        ids = traj.token_ids[start:keep]
        segment: dict[str, Any] = {"turn": turn, "loss_mask": mask, "ids": ids}
        if tokenizer is not None:
            segment["text"] = token_text(tokenizer, ids)
        if mask:
            logprobs = traj.logprobs[start:keep]
            segment["logprobs"] = [
                round(x, LOGPROB_DECIMALS) if math.isfinite(x) else None for x in logprobs
            ]
        if keep < end:
            segment["cut"] = end - keep
            cut_total += end - keep
        out.append(segment)
    return out, cut_total


def token_text(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """The text of each token of ``ids`` as the tokenizer decodes it in place.

    Each token is decoded after its predecessor and the predecessor's text taken off (so
    SentencePiece's word-initial space shows); a run of tokens that only decode together (the
    bytes of one UTF-8 character) gives its text to its last token and ``""`` to the others.
    """
    ids = list(ids)
    if not ids:
        return []
    options = {"skip_special_tokens": False, "clean_up_tokenization_spaces": False}
    singles = tokenizer.batch_decode([[i] for i in ids], **options)
    pairs = tokenizer.batch_decode([ids[i - 1 : i + 1] for i in range(1, len(ids))], **options)
    pieces = [singles[0]]
    for i in range(1, len(ids)):
        head, pair = singles[i - 1], pairs[i - 1]
        clean = pair.startswith(head) and "\ufffd" not in head
        pieces.append(pair[len(head) :] if clean else singles[i])
    return _join_partial_characters(tokenizer, ids, pieces, options)


def _join_partial_characters(
    tokenizer: Any, ids: list[int], pieces: list[str], options: dict[str, bool]
) -> list[str]:
    i = 0
    while i < len(pieces):
        if "\ufffd" not in pieces[i]:
            i += 1
            continue
        j = i
        while j + 1 < len(pieces) and "\ufffd" in pieces[j + 1]:
            j += 1
        joined = tokenizer.decode(ids[i : j + 1], **options)
        if "\ufffd" not in joined:
            pieces[i : j + 1] = [""] * (j - i) + [joined]
        i = j + 1
    return pieces


def short_transcript(transcript: dict[str, Any], *, messages: int = 8, width: int = 150) -> str:
    """A few lines of a transcript for a terminal: one line per message (``role[turn]: text``,
    tool calls as ``→ name(arguments)``), each at most ``width`` characters; of a longer chat,
    the first two messages and the last ``messages - 2``."""
    chat = transcript.get("messages") or []
    shown: list[dict[str, Any] | None] = list(chat)
    if len(chat) > messages:
        shown = [*chat[:2], None, *chat[len(chat) - (messages - 2) :]]
    lines = []
    for message in shown:
        if message is None:
            lines.append(f"  … {len(chat) - messages} more messages …")
            continue
        text = message.get("content") or ""
        for call in message.get("tool_calls") or []:
            fn = call.get("function", {})
            text += f" → {fn.get('name')}({fn.get('arguments', '')})"
        line = f"{message.get('role')}[{message.get('turn')}]: " + " ⏎ ".join(text.split("\n"))
        lines.append(line if len(line) <= width else line[: width - 1] + "…")
    return "\n".join(lines)
