"""The search of ``qbench tune``: the smallest prefix of the sensitivity ranking to move off the base scheme.

Space: the layers ranked by ``qbench analyze`` (most sensitive first); candidate ``k`` applies one move (kept float,
or weights raised to N bits) to the top ``k`` layers, ``k = 0..L`` — L+1 prefixes, against 2^L subsets (or
(m+1)^L with m moves) for an exhaustive search over the same layers. Moving more layers off the base scheme only
adds accuracy to a good approximation (the ranking is the order in which they cost it), so "meets the budget" is
monotone in ``k`` and the search needs O(log L) measured candidates:

1. measure ``k = 0`` (the base scheme); if it meets the budget, stop;
2. greedy fallback in rank order, galloping: ``k = 1, 2, 4, 8, ...`` (capped at L) until a candidate meets the
   budget — stepping one layer at a time would already stop at the smallest ``k`` of a monotone metric and cost
   up to L measurements, doubling costs log2 L;
3. binary search between the last ``k`` that missed and the first that met, for the smallest ``k`` that meets
   it: the fewest layers off the base scheme, hence the fastest / smallest feasible prefix.

Every candidate is measured (the caller's ``evaluate``); a candidate that could not be measured counts as a miss.
When no ``k`` meets the budget the result has none, and the closest miss is the best found.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class SearchResult:
    """What a search measured: ``drops[k]`` (None: not measured), the smallest ``k`` within the budget (None when
    none was), the closest miss otherwise, and whether ``max_evals`` stopped it."""

    drops: dict[int, float | None] = field(default_factory=dict)
    smallest: int | None = None
    capped: bool = False

    @property
    def evaluations(self) -> int:
        return len(self.drops)

    def closest(self) -> int | None:
        """The measured ``k`` with the least drop (fewest layers on ties); None when nothing was measured."""
        measured = [(d, k) for k, d in self.drops.items() if d is not None]
        return min(measured)[1] if measured else None


class _Capped(Exception):
    pass


def prefix_search(evaluate: Callable[[int], float | None], size: int, budget: float,
                  max_evals: int | None = None) -> SearchResult:
    """Search ``k = 0..size`` (module docstring) with ``evaluate(k)`` = the drop vs FP32 (None: not measured);
    a drop ``<= budget`` meets it. ``max_evals`` caps the measured candidates."""
    result = SearchResult()

    def meets(k: int) -> bool:
        if k not in result.drops:
            if max_evals is not None and result.evaluations >= max_evals:
                raise _Capped
            result.drops[k] = evaluate(k)
        drop = result.drops[k]
        return drop is not None and drop <= budget

    try:
        if meets(0):
            result.smallest = 0
            return result
        missed, k = 0, 1
        while not meets(min(k, size)):
            if k >= size:
                return result  # even the whole ranking moved misses: the closest miss is the best found
            missed, k = k, 2 * k
        met = min(k, size)
        while met - missed > 1:
            mid = (missed + met) // 2
            if meets(mid):
                met = mid
            else:
                missed = mid
        result.smallest = met
    except _Capped:
        result.capped = True
        feasible = [k for k, d in result.drops.items() if d is not None and d <= budget]
        result.smallest = min(feasible) if feasible else None
    return result


def exhaustive_size(layers: int, moves: int) -> int:
    """Configurations of ``layers`` layers that each keep the base scheme or take one of ``moves`` moves."""
    return (moves + 1) ** layers
