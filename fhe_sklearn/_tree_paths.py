"""How a tree circuit reads its split bits (see :mod:`._tree_lowering`): the decisions on a
path, the linear forms of those bits (the PBS-free path sums), the reach lookups, and the
leaf lookups with their tables.

A leaf lookup (a ``_LeafSlot``, or several sharing their bits) covers the subtree of one node
``u``: its ``nodes`` are the subtree's internal nodes, bit ``i`` weighing ``2**i``, and
``prefix`` the decisions on the way to ``u``, whose agreements add ``2**len(nodes)`` each:

    v = sum_i 2**i * bit(nodes[i]) + 2**len(nodes) * (agreements that hold on the prefix)

so ``v >= 2**len(nodes) * len(prefix)`` exactly when ``u`` is reached, and then ``v``'s low
bits say which leaf of the subtree is. Most lookups cover a node with a leaf child (one
node: ``v = bit + 2 * terms``); a subtree of a few nodes (a unit) costs one lookup for
several such nodes, at a wider read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._tree_leaves import binary_digits

#: the width every lookup of a one-precision tree circuit reads: 3-digit comparisons sum to 3 bits
LOOKUP_BITS = 3
#: terms a leaf lookup reads (``bit + 2 * terms`` in ``[0, 2**LOOKUP_BITS - 1]``)
LEAF_TERMS = 2 ** (LOOKUP_BITS - 1) - 1
#: agreement bits one reach lookup sums (``[0, 2**LOOKUP_BITS - 1]``)
REACH_TERMS = 2**LOOKUP_BITS - 1

#: a linear form over the circuit's bits: ({("split" | "reach", index): weight}, constant)
_Form = tuple[dict[tuple[str, int], int], int]


@dataclass(frozen=True)
class _Decision:
    """A node's split on a path: comparison id (None: the constant bit ``const``), and
    whether the path goes left there (False for a unit's own nodes, whose bits it reads)."""

    split: int | None
    const: int
    went_left: bool


@dataclass
class _LeafSlot:
    """One leaf lookup's share in output ``column``: when ``prefix`` holds, ``values[p]`` is
    the quantized value of the leaf that the bits ``p`` of ``nodes`` lead to (0 for leaves
    other lookups cover). A node with a leaf child: ``nodes = [node]``, ``values = [right, left]``."""

    prefix: list[_Decision]
    nodes: list[_Decision]
    column: int
    values: np.ndarray
    multiplier: int

    def key(self) -> tuple:
        """What the lookup reads: slots with the same key can share it."""
        return (*self.prefix, None, *self.nodes)


def _add(*forms: _Form) -> _Form:
    weights: dict[tuple[str, int], int] = {}
    for form in forms:
        for var, w in form[0].items():
            weights[var] = weights.get(var, 0) + w
    return {v: w for v, w in weights.items() if w}, sum(form[1] for form in forms)


def _scaled(form: _Form, factor: int) -> _Form:
    return {v: factor * w for v, w in form[0].items()}, factor * form[1]


class _PathForms:
    """The split bits' linear forms a tree circuit adds up, and its reach lookups.

    ``reach(prefix)`` is 1 when a sample takes every decision of ``prefix`` (the path to a
    node): one lookup ``[sum of agreements == len]`` per distinct prefix, shared by every leaf
    below it. A prefix longer than ``REACH_TERMS`` starts from the reach bit of a shorter one.
    """

    def __init__(self, renumber: dict[int, int]) -> None:
        self.renumber = renumber
        self.sums: list[_Form] = []
        self.targets: list[int] = []
        self.level: list[int] = []
        self._by_prefix: dict[tuple[_Decision, ...], _Form] = {}

    def bit(self, d: _Decision) -> _Form:
        """The split bit of ``d`` (1: the sample goes left)."""
        return ({}, d.const) if d.split is None else ({("split", self.renumber[d.split]): 1}, 0)

    def agreement(self, d: _Decision) -> _Form:
        """1 when the sample goes the way the path does at ``d``."""
        return self.bit(d) if d.went_left else _add(({}, 1), _scaled(self.bit(d), -1))

    def terms(self, decisions: list[_Decision] | tuple[_Decision, ...], limit: int | None) -> list[_Form]:
        """The agreement of each decision, at most ``limit`` terms (None: no limit): a longer
        path starts with the reach bit of its head instead."""
        terms = [self.agreement(d) for d in decisions]
        head = 0 if limit is None else len(decisions) - limit + 1
        if head > 1:
            terms = [self.reach(tuple(decisions[:head])), *terms[head:]]
        return terms

    def leaf_sum(self, slot: _LeafSlot, limit: int | None) -> tuple[_Form, int]:
        """The form a leaf lookup reads (see the module docstring) and its number of terms."""
        terms = self.terms(slot.prefix, limit)
        low = len(slot.nodes)
        bits = [_scaled(self.bit(d), 2**i) for i, d in enumerate(slot.nodes)]
        return _add(*bits, *(_scaled(t, 2**low) for t in terms)), len(terms)

    def reach(self, prefix: tuple[_Decision, ...]) -> _Form:
        """A form equal to 1 when every decision of ``prefix`` holds, else 0."""
        if prefix in self._by_prefix:
            return self._by_prefix[prefix]
        terms = self.terms(prefix, REACH_TERMS)
        total, target = _add(*terms), len(terms)
        variables = list(total[0])
        if len(variables) <= 1:  # a constant or one bit's affine function: no lookup
            var = variables[0] if variables else None
            at = [int(total[1] + w == target) for w in (0, total[0].get(var, 0))]
            form: _Form = ({var: at[1] - at[0]} if var is not None and at[1] != at[0] else {}, at[0])
        else:
            index = len(self.sums)
            self.sums.append(total)
            self.targets.append(target)
            self.level.append(1 + max((self.level[i] for kind, i in variables if kind == "reach"), default=0))
            form = ({("reach", index): 1}, 0)
        self._by_prefix[prefix] = form
        return form

    def levels(self) -> list[list[int]]:
        """Reach lookups by level (those of a level read only splits and lower levels)."""
        top = max(self.level, default=0)
        return [[r for r, lv in enumerate(self.level) if lv == level] for level in range(1, top + 1)]

    def matrix(self, forms: list[_Form], n_splits: int, below: int) -> tuple[np.ndarray, np.ndarray]:
        """Weights and bias of ``forms`` (one column each) over the split bits, then the reach
        bits of the levels below ``below``, level by level."""
        order = [r for level in self.levels()[: below - 1] for r in level]
        position = {("split", i): i for i in range(n_splits)}
        position.update((("reach", r), n_splits + i) for i, r in enumerate(order))
        weight = np.zeros((n_splits + len(order), len(forms)), dtype=np.int64)
        for j, (weights, _) in enumerate(forms):
            for var, w in weights.items():
                weight[position[var], j] = w
        return weight, np.array([form[1] for form in forms], dtype=np.int64)


def leaf_lookups(slots: list[_LeafSlot], n_outputs: int, planes: int = 0) -> list[tuple[_LeafSlot, np.ndarray]]:
    """The leaf lookups: (slot whose bits it reads and whose ``values`` its table holds, row
    of ``tree_sum``'s weights).

    A node whose leaves hold values in several columns (multi-class forests) gets one lookup
    per column returning the reached leaf's value, or, when that is fewer lookups, one per
    leaf child returning whether it is reached, its values then weights of the (PBS-free)
    sum; nodes on the same path in several trees share those. With ``planes``, every lookup
    is of the second kind and a row holds the binary digits of the leaf's values, plane by
    plane (``planes * n_outputs`` weights, each tree's digits added separately). Units (slots
    of several nodes) always return their value, one lookup per column.
    """
    by_key: dict[tuple, list[_LeafSlot]] = {}
    for slot in slots:
        by_key.setdefault(slot.key(), []).append(slot)
    lookups = []
    for group in by_key.values():
        first = group[0]
        if len(first.nodes) > 1:
            lookups += [(slot, _one_hot(n_outputs, slot.column, slot.multiplier)) for slot in group]
            continue
        if planes:
            for side in (1, 0):  # left, then right
                row = np.zeros((planes, n_outputs), dtype=np.int64)
                for slot in group:
                    row[:, slot.column] += binary_digits(slot.multiplier * slot.values[side], planes)
                if row.any():
                    lookups.append((_indicator(first, side), row.ravel()))
            continue
        sides = np.zeros((2, n_outputs), dtype=np.int64)
        for slot in group:
            sides[:, slot.column] += slot.multiplier * np.asarray(slot.values)
        n_reached = int(sides[0].any()) + int(sides[1].any())
        # measured: worth it on digits (10 classes: 1116 -> 510 PBS), not on wine (3: complexity +9%)
        if n_outputs >= 5 and 0 < n_reached < len(group):
            lookups += [(_indicator(first, side), sides[side]) for side in (1, 0) if sides[side].any()]
            continue
        lookups += [(slot, _one_hot(n_outputs, slot.column, slot.multiplier)) for slot in group]
    return lookups


def _one_hot(n: int, column: int, value: int) -> np.ndarray:
    row = np.zeros(n, dtype=np.int64)
    row[column] = value
    return row


def _indicator(slot: _LeafSlot, side: int) -> _LeafSlot:
    """A lookup of ``slot``'s bits returning 1 when its leaf on ``side`` (1: left) is reached."""
    return _LeafSlot(slot.prefix, slot.nodes, slot.column, np.array([1 - side, side], dtype=np.int64), 1)


def subtree_slot(
    tree: Any,
    node: int,
    decision: Callable[[int], _Decision],
    values: np.ndarray,
    prefix: list[_Decision],
    column: int,
    multiplier: int,
) -> _LeafSlot:
    """The unit of ``node``'s subtree in ``tree`` (a ``FlatTree``): ``decision(n)`` is node
    n's split, ``values[n]`` a leaf's integer in ``column``."""
    nodes, stack = [], [node]
    while stack:  # preorder: bit i of a pattern is the i-th internal node's
        n = stack.pop()
        if not tree.is_leaf(n):
            nodes.append(n)
            stack += [tree.right[n], tree.left[n]]
    index = {n: i for i, n in enumerate(nodes)}
    table = np.zeros(2 ** len(nodes), dtype=np.int64)
    for pattern in range(len(table)):
        n = node
        while not tree.is_leaf(n):
            n = tree.left[n] if pattern >> index[n] & 1 else tree.right[n]
        table[pattern] = values[n]
    return _LeafSlot(prefix, [decision(n) for n in nodes], column, table, multiplier)
