"""Rubric functions that tests name by import path (``tests.train.rubric_functions:NAME``)."""


def brevity(completion: str) -> float:
    """Shorter last actions score higher: 1 / (1 + characters)."""
    return 1.0 / (1.0 + len(completion))


def turns_used(num_turns: int, success: bool) -> float:
    return float(num_turns) + float(success)


def broken(completion: str) -> float:
    raise RuntimeError("a rubric function that always fails")
