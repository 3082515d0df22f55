"""The Pareto front of quants: lower cost (bpw or size) and lower perplexity are both better.

A point is dominated when another point has cost <= and perplexity <= with at least one of
the two strictly less. Identical points do not dominate each other (both stay on the front).
"""

from __future__ import annotations

from collections.abc import Sequence


def pareto_front(costs: Sequence[float], values: Sequence[float]) -> list[bool]:
    """For each point (cost, value), True when no other point dominates it. O(n log n)."""
    if len(costs) != len(values):
        raise ValueError("costs and values differ in length")
    order = sorted(range(len(costs)), key=lambda i: costs[i])
    on_front = [True] * len(costs)
    best_cheaper = float("inf")  # lowest value among points of strictly lower cost
    start = 0
    while start < len(order):
        end = start
        while end < len(order) and costs[order[end]] == costs[order[start]]:
            end += 1
        group = order[start:end]  # the points of one cost
        best_here = min(values[i] for i in group)
        for i in group:
            # a cheaper point as good, or a point of the same cost strictly better
            on_front[i] = not (best_cheaper <= values[i] or best_here < values[i])
        best_cheaper = min(best_cheaper, best_here)
        start = end
    return on_front


def dominator(costs: Sequence[float], values: Sequence[float], i: int) -> int | None:
    """The cheapest point that dominates point i (lowest value among equally cheap ones), or None."""
    best = None
    for j in range(len(costs)):
        if j == i or costs[j] > costs[i] or values[j] > values[i]:
            continue
        if costs[j] == costs[i] and values[j] == values[i]:
            continue
        if best is None or (costs[j], values[j]) < (costs[best], values[best]):
            best = j
    return best
