"""SWE tasks built offline: pinned PyPI sdists, procedural bugs, SWE-bench-format instances.

``packages`` pins the sdists and fetches them, ``mutations`` injects bugs into one function
(SWE-smith's procedural families, Yang et al. 2025, arXiv 2504.21798), and ``factory`` validates
them in a bwrap sandbox and writes instances in SWE-bench's format. See ``docs/envs/swe-bugs.md``.
"""
