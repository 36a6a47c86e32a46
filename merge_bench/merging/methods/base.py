"""The interface every merge method implements, built-in or submitted.

A method sees the task vectors of one weight matrix at a time: ``merge(deltas, key)`` gets one
``Delta`` per task (a ``LowRank`` or a dense tensor; a task that does not target the matrix gives a
zero of the same kind) and returns the merged delta Δ*. Methods that need statistics over all
matrices (TIES global trim, MetaGPT norms, KnOTS thresholds) compute them in ``prepare``, which
gets a re-iterable stream of every matrix's task vectors. Methods hold no state between merges
beyond what ``prepare`` stored on the instance.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator

if TYPE_CHECKING:
    from ..delta import Delta
    from .factor import Factors

# Calling it yields (key, per-task deltas) for every targeted matrix, in a fixed order; it can be
# called again for a second pass. (Delta is a forward reference: this module imports no torch.)
ModuleStream = Callable[[], Iterator[tuple[str, list["Delta"]]]]


# Search grids the spec shares between methods (protocol.md, "Protocol v2: tracks"): the default first.
TA_GRID = (0.4, 0.1, 0.2, 0.3, 0.5, 0.6, 0.8, 1.0)      # task arithmetic's λ (and DARE's, Breadcrumbs', TALL's α)
ALPHA_GRID = (1.0, 0.5, 0.8, 1.2, 1.5, 2.0, 2.5, 3.0)   # the α of tsv, iso_c and iso_cts


@dataclass(frozen=True)
class Param:
    """One hyperparameter: its type is that of the default.

    ``grid`` is the tuned track's search grid (protocol v2, "Tracks"): the values the coordinate search
    tries, in order, the default first (it is the starting point, and ties go to it). Empty: not tuned.
    """

    name: str
    default: Any
    help: str
    choices: tuple | None = None
    grid: tuple = ()

    def parse(self, text: str) -> Any:
        """Parse a ``--param`` value given as text."""
        kind = type(self.default)
        try:
            if kind is bool:
                low = text.strip().lower()
                if low not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                value: Any = low in ("true", "1", "yes")
            else:
                value = kind(text)
        except ValueError:
            raise ValueError(f"parameter {self.name!r}: cannot read {text!r} as {kind.__name__}") from None
        return self.check(value)

    def check(self, value: Any) -> Any:
        if isinstance(self.default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not type(self.default):
            raise ValueError(
                f"parameter {self.name!r}: expected {type(self.default).__name__}, got {value!r}"
            )
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"parameter {self.name!r}: {value!r} is not one of {list(self.choices)}")
        return value


def check_grid(cls: type["MergeMethod"], origin: str) -> None:
    """A method's grids: each starts at its parameter's default, holds valid distinct values, and the
    search order names exactly the parameters that have one."""
    grids = {p.name: p for p in cls.params if p.grid}
    for p in grids.values():
        where = f"{origin}: parameter {p.name!r} of method {cls.name!r}: grid {list(p.grid)}"
        if p.grid[0] != p.default:
            raise ValueError(f"{where} must start with the default {p.default!r}")
        try:
            values = [p.check(v) for v in p.grid]
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        if len(set(values)) != len(values):
            raise ValueError(f"{where} repeats a value")
    if cls.search and sorted(cls.search) != sorted(grids):
        raise ValueError(f"{origin}: method {cls.name!r}: search order {list(cls.search)} must name each "
                         f"parameter with a grid exactly once ({sorted(grids)})")


class MergeMethod:
    """Base class. Subclasses set the class attributes and implement ``merge``.

    ``lowrank`` says that, given LoRA inputs, ``merge`` returns a ``LowRank`` computed exactly in
    factor space (so the result can be written as a PEFT adapter). Such methods must also accept
    dense inputs and compute the same maths densely.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    params: ClassVar[tuple[Param, ...]] = ()
    lowrank: ClassVar[bool] = False
    # The tuned track's coordinates, in search order; empty: every parameter with a grid, as declared.
    search: ClassVar[tuple[str, ...]] = ()
    # What data the method needs besides the adapters: "none", or "calibration" (inputs' Grams, see
    # merging/grams.py), which the engine hands over with ``use_calibration`` before any merge.
    data: ClassVar[str] = "none"

    def use_calibration(self, grams: Any) -> None:
        raise ValueError(f"method {self.name!r} takes no calibration data")

    @classmethod
    def search_grid(cls, config: dict[str, Any] | None = None) -> list[tuple[str, tuple]]:
        """``[(parameter, grid), ...]`` in the order the coordinate search visits them (empty: not tuned).

        ``config`` is the search's starting point (the defaults plus the user's ``--param`` values); a
        method may leave out coordinates that do nothing there."""
        grids = {p.name: p.grid for p in cls.params if p.grid}
        order = cls.search or tuple(grids)
        return [(name, grids[name]) for name in order]

    def __init__(self, **values: Any) -> None:
        known = {p.name: p for p in self.params}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(
                f"method {self.name!r} has no parameter {', '.join(map(repr, unknown))}; "
                f"its parameters are {sorted(known) or 'none'}"
            )
        self.config: dict[str, Any] = {p.name: p.default for p in self.params}
        for key, value in values.items():
            try:
                self.config[key] = known[key].parse(value) if isinstance(value, str) else known[key].check(value)
            except ValueError as err:
                raise ValueError(f"method {self.name!r}: {err}") from None
        self.validate()

    def __getattr__(self, item: str) -> Any:
        config = self.__dict__.get("config", {})
        if item in config:
            return config[item]
        raise AttributeError(item)

    def validate(self) -> None:
        """Check parameter ranges; raise ValueError with a clear message."""

    def prepare(self, modules: ModuleStream) -> None:
        """Optional global pass over all matrices before any ``merge`` call."""

    def merge(self, deltas: list[Delta], key: str) -> Delta:
        raise NotImplementedError


class FactorMethod(MergeMethod):
    """A method whose rule is ``factors``, on the tasks' joint factors: ``factor.merge_factors`` runs it in core
    space for LoRA inputs (a LowRank out) and on the dense matrices otherwise, the same maths."""

    lowrank = True

    def merge(self, deltas: list[Delta], key: str) -> Delta:
        from .factor import merge_factors, shape_of

        shape = shape_of(deltas, key)
        return merge_factors(deltas, shape, lambda ds: self.factors(ds, shape))

    def factors(self, deltas: list[Delta], shape: tuple[int, int]) -> Factors | None:
        raise NotImplementedError

