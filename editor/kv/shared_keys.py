"""Requests that share their key share their value.

The key is read at the subject's last token, so it depends only on the subject and the text before it:
"{} plays the" and "{} was born in" give the same key for the same subject. A linear layer maps one key to
one value, so two such requests edited with separate values would be averaged into half of each (MEMIT's
same-subject conflict; "MEMIT-Merge", arXiv 2502.07322). They get one value instead, optimized on all of
their targets together.
"""

from __future__ import annotations

from suture.editor.requests import EditRequest


def key_identity(request: EditRequest) -> tuple[str, str]:
    """(text before the subject, subject) of the filled rewrite prompt: what the key is computed from."""
    filled = request.filled
    return filled.text[: filled.subject_start], request.subject


def value_slots(requests: list[EditRequest]) -> list[int]:
    """The value each request writes, as an index into the distinct keys in order of first appearance."""
    first: dict[tuple[str, str], int] = {}
    return [first.setdefault(key_identity(r), len(first)) for r in requests]


def key_groups(requests: list[EditRequest]) -> list[list[int]]:
    """Positions of requests grouped by shared key, each group in call order, groups by first member."""
    groups: dict[int, list[int]] = {}
    for position, slot in enumerate(value_slots(requests)):
        groups.setdefault(slot, []).append(position)
    return list(groups.values())


def packed_key_groups(requests: list[EditRequest], size: int) -> list[list[int]]:
    """Positions of requests in groups of at most `size` (more only where one key's requests alone are more),
    in order of first appearance, requests that share a key always in the same group: a later group cannot
    then write a second value for a key an earlier one wrote."""
    packed: list[list[int]] = []
    for group in key_groups(requests):
        if packed and len(packed[-1]) + len(group) <= size:
            packed[-1] += group
        else:
            packed.append(list(group))
    return packed
