"""BFCL (Berkeley Function Calling Leaderboard) files as a single-turn tool-use env.

:mod:`~agentenv.envs.tooluse.bfcl.loader` reads BFCL question and possible-answer files,
:mod:`~agentenv.envs.tooluse.bfcl.env` plays them (``bfcl-v0``), judged by BFCL's AST checker
(:mod:`agentenv.rewards.bfcl`), and :mod:`~agentenv.envs.tooluse.bfcl.expert` solves them.
``data/`` holds small synthetic files in BFCL's format (written for agentenv, not taken from
BFCL). See ``docs/envs/tooluse.md``.
"""
