"""What a search ranks by: objectives registered by name, each a value, a direction and a label.

Each answers a question a designer asks of a head of width D scoring T tokens, in terms of the
bilinear form a pair (t, u) is scored with, x_t^T (sum of the M_l of the levels that score it) x_u:

* ``rank``: the rank of the form every distant pair (t - u >= T/8) gets; a window or a block
  pattern leaves distant pairs unscored (rank 0), a standard head gives its head dimension, a
  full-rank structure (BTT, Kronecker, bilinear MLR) gives D;
* ``rank-per-flop``: that rank per FLOP of the scores;
* ``params``: scoring parameters, among heads that score every causal pair;
* ``local-bias``: the share of the pair FLOPs spent within distance T/8, among heads that score
  every causal pair (MLR's point: more compute near the diagonal, none of the far pairs lost);
* ``decode``: decode FLOPs per unit of that far rank, fewest first (a rank-1 head decodes
  cheaply and says little).

A value of None leaves the candidate out of that objective's ranking.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from difflib import get_close_matches
from typing import TYPE_CHECKING

from ..errors import OptionError

if TYPE_CHECKING:  # the registry loads without the analysis (the command line lists it in its help)
    from .costs import Costs


@dataclass(frozen=True)
class Objective:
    """``value(costs, heads)``: the number ranked (None: not ranked by this objective)."""

    name: str
    value: Callable[[Costs, int], float | None]
    maximize: bool
    label: str  # what the value measures (the help, the plot's axis)
    requires: str = ""  # what a candidate must do to get a value, for the note that counts those that do not
    column: str | None = None  # the search table's column for the value (None: it already shows it)

    def place(self, costs: Costs, value: float, found: int) -> tuple:
        """Where a candidate is listed (smaller first): by the objective; then fewer FLOPs, more
        far rank, more near rank, more pairs covered; then found first."""
        first = -value if self.maximize else value
        return first, costs.flops, -costs.far_rank, -costs.near_rank, -costs.covered, found

    def score(self, value: float) -> float:
        """Larger is better (the Pareto front maximises it)."""
        return value if self.maximize else -value


OBJECTIVES: dict[str, Objective] = {}


def objective(name: str, label: str, maximize: bool = True, requires: str = "", column: str | None = None):
    """Registers the decorated function as the objective ``name``."""

    def register(value: Callable[[Costs, int], float | None]):
        if name in OBJECTIVES:
            raise ValueError(f"an objective {name!r} is already registered (objectives: {', '.join(OBJECTIVES)})")
        OBJECTIVES[name] = Objective(name, value, maximize, label, requires, column)
        return value

    return register


def find_objective(name: str) -> Objective:
    """The objective ``name``; an OptionError naming them all otherwise."""
    if name not in OBJECTIVES:
        close = get_close_matches(str(name), list(OBJECTIVES), 1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise OptionError("objective", f"must be one of {', '.join(OBJECTIVES)}, got {name!r}{hint}")
    return OBJECTIVES[name]


EVERY_PAIR = "score every causal pair"


@objective("rank", "rank of the D x D form scoring every pair at distance >= T/8")
def far_rank(costs: Costs, heads: int) -> float:
    return costs.far_rank


@objective("params", "scoring parameters, all heads", requires=EVERY_PAIR)
def params(costs: Costs, heads: int) -> float | None:
    return costs.params * heads if costs.covered == 1 else None


@objective("rank-per-flop", "far rank per FLOP of all heads' scores", column="far/FLOP")
def rank_per_flop(costs: Costs, heads: int) -> float:
    return costs.far_rank / max(1, costs.flops * heads)


@objective("local-bias", "share of the pair FLOPs within distance T/8", requires=EVERY_PAIR)
def local_bias(costs: Costs, heads: int) -> float | None:
    return costs.near_share if costs.covered == 1 else None


@objective("decode", "decode FLOPs (all heads) per unit of far rank", maximize=False,
           requires="give distant pairs some rank", column="decode/far")  # fmt: skip
def decode(costs: Costs, heads: int) -> float | None:
    return costs.decode * heads / costs.far_rank if costs.far_rank else None
