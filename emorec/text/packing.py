"""Packing many samples into one row: which samples share a row (first-fit decreasing) and how long a row is."""

from __future__ import annotations

from emorec.text.batches import Feature


def pack_groups(lengths: list[int], budget: int, granularity: int = 1) -> list[list[int]]:
    """First-fit decreasing: groups of indices whose lengths sum to at most `budget` (a longer one stands alone).
    Items are taken longest first by `length // granularity`, ties in index order."""
    groups: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-(lengths[i] // granularity), i)):
        n = lengths[i]
        for g, free in enumerate(room):
            if n <= free:
                groups[g].append(i)
                room[g] -= n
                break
        else:
            groups.append([i])
            room.append(budget - n)
    return groups


# FlexAttention's block: under it every packed row is padded to a multiple of this many tokens. Inductor's CPU
# kernel with 256-bit vectors (AVX2, no AVX-512) returns wrong scores or NaN for a query block shorter than this
# (torch 2.13; tests/test_packed_scoring.py pins it), and GPU kernels run whole blocks anyway.
FLEX_BLOCK = 128


def flex_row_length(n: int) -> int:
    """The length a row of `n` tokens is padded to under FlexAttention: a whole number of flex blocks."""
    return -(-n // FLEX_BLOCK) * FLEX_BLOCK


def row_length(n: int, pad_to: int | None, flex: bool) -> int:
    """A row of `n` tokens is padded to `pad_to` (fixed shapes for compiled kernels), then under FlexAttention up to
    whole flex blocks. Fillers form their own segment, so every position, real or padding, attends to itself."""
    target = max(n, pad_to or 0)
    return flex_row_length(target) if flex else target


def feature_length(f: Feature) -> int:
    return len(f.prompt_ids) + len(f.answer_ids)
