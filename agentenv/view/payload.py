"""What the viewer page is sent: the run (summaries of every episode, learning curves) and, one
at a time, an episode (chat, tokens, per-turn rewards and credit). The served app and the HTML
export send the same documents.
"""

from __future__ import annotations

import math
from typing import Any

from agentenv.rewards.estimators import ESTIMATORS
from agentenv.trajectory import Trajectory, anchor_key
from agentenv.transcript import build_transcript
from agentenv.view.credit import GroupCredit, group_credit
from agentenv.view.runs import Episode, Run


def run_payload(run: Run) -> dict[str, Any]:
    """The run document: what it is, its estimator, every episode's summary, its metrics."""
    return json_safe(
        {
            "name": run.name,
            "path": str(run.path),
            "kind": run.kind,
            "estimator": run.estimator,
            "estimators": list(ESTIMATORS),
            "info": run.info,
            "episodes": [ep.summary for ep in run.episodes],
            "metrics": run.metrics,
        }
    )


def credit_of(run: Run, episode_id: int) -> GroupCredit:
    """The credit of ``episode_id``'s group (:func:`~agentenv.view.credit.group_credit`)."""
    return group_credit(run.group_members(episode_id), run.estimator, run.estimator_options)


def episode_payload(run: Run, episode_id: int, credit: GroupCredit) -> dict[str, Any]:
    """The episode document: its summary, group, transcript (chat, token segments, what the cap
    cut) and per-turn rewards, components, anchor peers and advantages (``credit``: its group's,
    from :func:`credit_of`)."""
    ep = run.episodes[episode_id]
    transcript = _transcript(ep, run.record(episode_id))
    advantages = credit.advantages.get(ep.id, {})
    peers = credit.anchor_peers.get(ep.id, [])
    turns = []
    for i, turn in enumerate(ep.turns):
        anchor_turns, anchor_episodes = peers[i] if i < len(peers) else (0, 0)
        turns.append(
            {
                "index": i,
                "reward": turn.get("reward", 0.0),
                "trained_reward": ep.credit["reward"][i] if credit.saved else None,
                "components": turn.get("components") or {},
                "valid": turn.get("valid", True),
                "anchor": anchor_key(turn.get("anchor")),
                "anchor_turns": anchor_turns,
                "anchor_episodes": anchor_episodes,
                "advantages": {name: values[i] for name, values in advantages.items()},
            }
        )
    document = json_safe(
        {
            "summary": ep.summary,
            "group": run.groups[ep.group],
            "group_key": ep.group,
            "estimator": run.estimator,
            "saved_credit": credit.saved,
            "credit_errors": credit.errors,
            "turns": turns,
            "has_transcript": transcript is not None,
        }
    )
    transcript = transcript or {}  # finite already (agentenv.transcript)
    document.update(
        messages=transcript.get("messages", []),
        tokens=transcript.get("tokens", []),
        cut=transcript.get("cut"),
    )
    return document


def _transcript(ep: Episode, record: dict[str, Any]) -> dict[str, Any] | None:
    """The line's transcript; for a trajectory saved without one, one built from the record
    (token ids without their text; the chat from its turns when it has no messages)."""
    if "transcript" in record or ep.source.split == "eval":
        return record.get("transcript")
    traj = Trajectory.from_dict(record)
    if not traj.messages:
        traj.messages = [
            message
            for t in traj.turns
            for message in (
                {"role": "assistant", "content": t.action},
                {"role": "user", "content": t.observation},
            )
        ]
    return build_transcript(traj)


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float as None (JSON has no NaN; browsers reject it)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
