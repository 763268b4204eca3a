"""A safe expression language over row metadata: the cascade's first, cheapest stage.

    source == 'patents' and year >= 2019
    kind in ['plant', 'decoy'] or not (lang != "en")
    2019 <= year < 2023 and license is not None

Expressions are parsed with `ast` and checked node by node against a whitelist; nothing is
ever passed to `eval`. Allowed:

- names: metadata keys (a key missing from a row is None there; a name no row has is an error,
  which catches typos); `True`, `False`, `None`;
- literals: strings, integers, floats, and lists / tuples / sets of them (for `in`);
  unary minus on a number;
- comparisons `== != < <= > >=`, `in`, `not in`, `is None`, `is not None` (chains too);
- `and`, `or`, `not`, parentheses; a bare name tests the value's truth.

Anything else (calls, attribute access, subscripts, arithmetic, lambdas, comprehensions)
is rejected with a message naming what is allowed. An ordering comparison with None is
False (the row does not match); comparing, e.g., a string with a number is an error
naming the row, since it almost always means the column has another type than expected.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from datablame.data.corpus import Corpus
from datablame.errors import DatablameError

ALLOWED = (
    "metadata names, string/number/True/False/None literals, lists/tuples/sets of literals, "
    "comparisons (== != < <= > >= in, not in, is None, is not None), and/or/not, parentheses"
)
_FIX = f"write the filter with only: {ALLOWED} (e.g. \"source == 'patents' and year >= 2019\")"
_ORDER = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge}
_EQ = {ast.Eq: operator.eq, ast.NotEq: operator.ne}

Node = Callable[[Mapping[str, Any]], Any]


class _RowError(Exception):
    """A comparison the data cannot support; turned into a DatablameError with the row."""


def _reject(node: ast.AST, expr: str, why: str | None = None) -> DatablameError:
    text = ast.get_source_segment(expr, node) or type(node).__name__
    return DatablameError(f"metadata filter {expr!r}: {why or f'{type(node).__name__} is not allowed'} (at {text!r})", _FIX)


def _literal(node: ast.AST, expr: str) -> Any:
    if isinstance(node, ast.Constant) and (node.value is None or isinstance(node.value, (str, int, float, bool))):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _literal(node.operand, expr)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _reject(node, expr, "a sign applies to numbers only")
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return tuple(_literal(e, expr) for e in node.elts)
    raise _reject(node, expr)


@dataclass
class MetadataFilter:
    """A compiled filter: `matches(metadata)` per row, `mask(corpus)` for a whole corpus."""

    expression: str
    names: frozenset[str]
    _fn: Node

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        try:
            return bool(self._fn(metadata))
        except _RowError as err:
            raise DatablameError(f"metadata filter {self.expression!r}: {err}", "compare values of the same type "
                                 "(quote strings, leave numbers bare) or fix the metadata column") from None

    def mask(self, corpus: Corpus) -> np.ndarray:
        """Boolean [n_rows]: True where the row passes. Unknown names are refused first."""
        present: set[str] = set()
        for row in corpus:
            present.update(row.metadata)
        unknown = sorted(self.names - present)
        if unknown:
            have = sorted(present)
            raise DatablameError(
                f"metadata filter {self.expression!r} names {unknown}, which no row has",
                f"use metadata columns the rows carry: {have}" if have else
                "the rows carry no metadata: set data.metadata_columns, or drop attribution.retrieval.filter",
            )
        out = np.zeros(len(corpus), dtype=bool)
        for i, row in enumerate(corpus):
            try:
                out[i] = bool(self._fn(row.metadata))
            except _RowError as err:
                raise DatablameError(
                    f"metadata filter {self.expression!r}: {err} in row {row.row_id!r}",
                    "compare values of the same type (quote strings, leave numbers bare) or fix the metadata column",
                ) from None
        return out


def compile_filter(expression: str) -> MetadataFilter:
    """Parse and check `expression`; raise DatablameError naming what is allowed if unsafe."""
    if not isinstance(expression, str) or not expression.strip():
        raise DatablameError("the metadata filter is empty", "give an expression such as \"year >= 2019\", or null for no filter")
    expr = expression.strip()
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as err:
        raise DatablameError(f"metadata filter {expr!r} is not a valid expression: {err.msg}", _FIX) from None
    names: set[str] = set()
    fn = _compile(tree.body, expr, names)
    return MetadataFilter(expr, frozenset(names), fn)


def _compile(node: ast.AST, expr: str, names: set[str]) -> Node:
    if isinstance(node, ast.BoolOp):
        parts = [_compile(v, expr, names) for v in node.values]
        if isinstance(node.op, ast.And):
            return lambda m: all(p(m) for p in parts)
        return lambda m: any(p(m) for p in parts)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        inner = _compile(node.operand, expr, names)
        return lambda m: not inner(m)
    if isinstance(node, ast.Compare):
        return _compare(node, expr, names)
    return _operand(node, expr, names)


def _operand(node: ast.AST, expr: str, names: set[str]) -> Node:
    if isinstance(node, ast.Name):
        if node.id.startswith("_"):
            raise _reject(node, expr, "names starting with '_' are not allowed")
        key = node.id
        names.add(key)
        return lambda m: m.get(key)
    value = _literal(node, expr)
    return lambda m: value


def _compare(node: ast.Compare, expr: str, names: set[str]) -> Node:
    left = _operand(node.left, expr, names)
    steps = []
    for op, right_node in zip(node.ops, node.comparators, strict=True):
        if isinstance(op, (ast.Is, ast.IsNot)):
            if not (isinstance(right_node, ast.Constant) and right_node.value is None):
                raise _reject(right_node, expr, "'is' / 'is not' compare with None only")
        elif isinstance(op, (ast.In, ast.NotIn)):
            if not isinstance(right_node, (ast.List, ast.Tuple, ast.Set, ast.Constant, ast.Name)):
                raise _reject(right_node, expr, "'in' needs a list of literals, a string or a metadata name")
        elif type(op) not in _ORDER and type(op) not in _EQ:
            raise _reject(node, expr, f"operator {type(op).__name__} is not allowed")
        steps.append((op, _operand(right_node, expr, names)))

    def run(m: Mapping[str, Any]) -> bool:
        a = left(m)
        for op, right in steps:
            b = right(m)
            if not _apply(op, a, b):
                return False
            a = b
        return True

    return run


def _apply(op: ast.cmpop, a: Any, b: Any) -> bool:
    if isinstance(op, ast.Is):
        return a is None
    if isinstance(op, ast.IsNot):
        return a is not None
    if type(op) in _EQ:
        return bool(_EQ[type(op)](a, b))
    if isinstance(op, (ast.In, ast.NotIn)):
        if b is None:
            found = False
        elif isinstance(b, str):
            if not isinstance(a, str):
                if a is None:
                    return isinstance(op, ast.NotIn)
                raise _RowError(f"cannot test whether {a!r} ({type(a).__name__}) is in the string {b!r}")
            found = a in b
        elif isinstance(b, (tuple, list, set, frozenset)):
            found = a in b
        else:
            raise _RowError(f"'in' needs a list or a string on its right, got {b!r} ({type(b).__name__})")
        return found if isinstance(op, ast.In) else not found
    if a is None or b is None:  # an ordering with a missing value: the row does not match
        return False
    try:
        return bool(_ORDER[type(op)](a, b))
    except TypeError:
        raise _RowError(f"cannot order {a!r} ({type(a).__name__}) against {b!r} ({type(b).__name__})") from None
