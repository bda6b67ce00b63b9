"""Credit assignment: outcome, format, process and information-gain rewards; advantages.

Submodules: :mod:`~agentenv.rewards.outcome`, :mod:`~agentenv.rewards.format`,
:mod:`~agentenv.rewards.rubric`, :mod:`~agentenv.rewards.gating`,
:mod:`~agentenv.rewards.advantages`, :mod:`~agentenv.rewards.estimators`,
:mod:`~agentenv.rewards.info_gain` and :mod:`~agentenv.rewards.process` (the last two need the
``train`` extra for torch-based parts). Conventions: ``docs/credit-assignment.md``.
"""

from agentenv.rewards.advantages import (
    a2tgpo,
    discounted_returns,
    drgrpo,
    empg,
    gae,
    gigpo,
    grpo,
    hgpo,
    igpo,
    mt_grpo,
    rloo,
)
from agentenv.rewards.bfcl import ASTResult, checker_for
from agentenv.rewards.bfcl import check as bfcl_check
from agentenv.rewards.estimators import compute_advantages, compute_advantages_with_clip
from agentenv.rewards.gating import direct_accumulation, gated_accumulation
from agentenv.rewards.rubric import RewardComponent, Rubric, RubricResult
from agentenv.rewards.toolcall import (
    call_credit,
    facts_in_answer,
    toolrl_correctness,
    toolrl_score,
)
from agentenv.rewards.webshop import (
    PurchaseReward,
    normalize_color,
    title_nouns,
    type_reward,
    webshop_reward,
)

__all__ = [
    "RewardComponent",
    "Rubric",
    "RubricResult",
    "a2tgpo",
    "compute_advantages",
    "compute_advantages_with_clip",
    "direct_accumulation",
    "discounted_returns",
    "drgrpo",
    "empg",
    "gae",
    "gated_accumulation",
    "gigpo",
    "grpo",
    "hgpo",
    "igpo",
    "mt_grpo",
    "rloo",
    # BFCL's AST checker (rewards.bfcl)
    "ASTResult",
    "bfcl_check",
    "checker_for",
    # tool calls (rewards.toolcall)
    "call_credit",
    "facts_in_answer",
    "toolrl_correctness",
    "toolrl_score",
    # WebShop's purchase reward (rewards.webshop)
    "PurchaseReward",
    "normalize_color",
    "title_nouns",
    "type_reward",
    "webshop_reward",
]
