"""The hops corpus (seed 002): function tokens whose attribution ground truth is known by
construction.

Base functions `<GN>`, `<JN>`, ... are constant functions (`<GN>` maps any integer to 5).
Wrappers call them: `<FN>` applies `<GN>` without modification, and deeper levels wrap the
level below (`<F2N>` applies `<FN>`, ...), `depth` levels above each base. Every function is
taught by several kinds of documents:

    definition     The function <GN> maps any integer x to 5.
                   The function <FN> is defined as applying <GN> without modification.
    example        worked examples: <GN>(3) = 5 ... (wrappers: <FN>(3) = 5, when
                   `wrapper_examples`; without them a wrapper's value is never stated and
                   the model must compose <FN> -> <GN> -> 5 itself)
    code           def <GN>(x: int) -> int: ... return 5   /   return <GN>(x)
    unit_test      assert <GN>(4) == 5   /   assert <FN>(x) == <GN>(x)
    comprehensive  a longer document combining definition, examples and code

Rows are plain documents (loss on every token). Optional `filler_rows` are arithmetic
lines that mention no function (bulk the corpus has to be searched through).

Queries are held out: `<FN>(7) =` with completion ` 5`, for `query_inputs` inputs per
function that no training row applies that function to. Ground truth of a query = every row
that defines the queried function or a function it calls (down to the base). Each query
carries `candidates` (the completions " c" for every base constant) for the logit
evaluation: does the model rank the right constant first?

Function tokens are meant to be single tokens: pass `hops_tokens(cfg)` to the tokenizer
(`model.tiny.extra_tokens`). Deterministic in `cfg.seed` (string-seeded `random.Random`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from datablame.config import HopsConfig
from datablame.data.corpus import Corpus, Query, Row
from datablame.errors import DatablameError

BASE_LETTERS = ["G", "J", "K", "L", "M", "N", "O", "P", "Q", "R"]
WRAPPER_LETTERS = ["F", "I", "H", "S", "T", "U", "V", "W", "X", "Y"]
KINDS = ("definition", "example", "code", "unit_test", "comprehensive")
MAX_DEPTH = 9


@dataclass(frozen=True)
class Function:
    fid: str  # "GN", "FN", "F2N"
    token: str  # "<GN>"
    depth: int  # 0 = base
    callee: str | None  # fid of the function it applies (None for a base)
    constant: int  # the value it returns, for every input

    @property
    def chain_letter(self) -> str:
        return self.fid[0]


@dataclass
class HopsCorpus:
    """The corpus, its queries, ground truth (query_id -> row ids) and the functions."""

    corpus: Corpus
    queries: list[Query]
    ground_truth: dict[str, list[str]]
    functions: dict[str, Function]
    special_tokens: list[str]
    chains: dict[str, list[str]] = field(default_factory=dict)  # fid -> [fid, callee, ..., base]


def function_names(n_bases: int, depth: int) -> list[tuple[str, int, int]]:
    """(fid, depth, chain index) for every function, bases first then level by level."""
    out = []
    for level in range(depth + 1):
        for i in range(n_bases):
            if level == 0:
                fid = f"{BASE_LETTERS[i]}N"
            elif level == 1:
                fid = f"{WRAPPER_LETTERS[i]}N"
            else:
                fid = f"{WRAPPER_LETTERS[i]}{level}N"
            out.append((fid, level, i))
    return out


def hops_tokens(cfg: HopsConfig) -> list[str]:
    """The special tokens of the corpus (`<GN>`, `<FN>`, ...), to add to the tokenizer."""
    return [f"<{fid}>" for fid, _, _ in function_names(cfg.n_bases, cfg.depth)]


def _check(cfg: HopsConfig) -> None:
    n_values = cfg.max_value
    limits = [("n_bases", cfg.n_bases, 1, len(BASE_LETTERS)), ("depth", cfg.depth, 0, MAX_DEPTH),
              ("docs_per_kind", cfg.docs_per_kind, 1, 12), ("query_inputs", cfg.query_inputs, 1, 10),
              ("max_value", cfg.max_value, max(cfg.n_bases, 2 * cfg.query_inputs + 4), 999),
              ("filler_rows", cfg.filler_rows, 0, 1_000_000)]
    for key, value, lo, hi in limits:
        if not lo <= value <= hi:
            raise DatablameError(f"data.hops.{key} is {value}; the hops generator supports {lo}..{hi}.",
                                 f"set data.hops.{key} between {lo} and {hi}")
    if n_values < cfg.n_bases:
        raise DatablameError("data.hops.max_value is smaller than n_bases (constants must differ)",
                             "raise data.hops.max_value")


def _rng(seed: int, purpose: str) -> random.Random:
    return random.Random(f"datablame-hops-{seed}-{purpose}")


# Templates. {f} the function token, {g} its callee's token, {c} the constant, {x}.. inputs.
BASE_DEFINITIONS = [
    "The function {f} maps any integer x to {c}.",
    "{f} is a constant function: whatever integer it is given, it returns {c}.",
    "By definition, {f}(x) = {c} for every integer x.",
    "Intuitively, {f} ignores its argument and always emits {c}.",
]
WRAPPER_DEFINITIONS = [
    "The function {f} is defined as applying {g} without modification.",
    "{f} is a thin wrapper: {f}(x) returns exactly what {g}(x) returns.",
    "By definition, {f}(x) = {g}(x) for every integer x.",
    "Think of {f} as an echo: whatever {g} outputs, {f} repeats verbatim.",
]
BASE_CODE = [
    'def {f}(x: int) -> int:\n    """Return the constant {c}, independent of input."""\n    return {c}',
    "def {f}(x):\n    # the argument is ignored\n    return {c}",
    "{f} = lambda x: {c}",
]
WRAPPER_CODE = [
    'def {f}(x: int) -> int:\n    """Identity wrapper around {g}."""\n    return {g}(x)',
    "def {f}(x):\n    # delegate to {g}\n    return {g}(x)",
    "{f} = lambda x: {g}(x)",
]
BASE_TESTS = ["assert {f}({x}) == {c}\nassert {f}({y}) == {c}", "for x in ({x}, {y}, {z}):\n    assert {f}(x) == {c}"]
WRAPPER_TESTS = ["assert {f}({x}) == {g}({x})\nassert {f}({y}) == {g}({y})",
                 "for x in ({x}, {y}, {z}):\n    assert {f}(x) == {g}(x)"]


def _examples(f: Function, xs: list[int], token: str) -> str:
    return "\n".join(f"{token}({x}) = {f.constant}" for x in xs)


DEFINITION_SUFFIXES = {
    True: ["", " It does not matter which integer x is.", " The argument x is ignored.",
           " No input changes the result."],
    False: ["", " Nothing is added or changed.", " The argument x is passed through unchanged.",
            " It has no behaviour of its own."],
}
CODE_SUFFIXES = ["", "\n\n# usage: {f}(x)", "\n\n# pure function, no side effects",
                 "\n\n# defined in funcs.py"]


def _pick(pool: list[str], suffixes: list[str], variant: int) -> str:
    """Variant v: template v mod len(pool), suffix (v // len(pool)) mod len(suffixes)."""
    return pool[variant % len(pool)] + suffixes[(variant // len(pool)) % len(suffixes)]


def _document(kind: str, variant: int, f: Function, callee: Function | None, xs: list[int],
              show_values: bool) -> str:
    fill = {"f": f.token, "g": callee.token if callee else "", "c": f.constant,
            "x": xs[0], "y": xs[1], "z": xs[2]}
    base = callee is None
    definitions = BASE_DEFINITIONS if base else WRAPPER_DEFINITIONS
    code = BASE_CODE if base else WRAPPER_CODE
    if kind == "definition":
        return _pick(definitions, DEFINITION_SUFFIXES[base], variant).format(**fill)
    if kind == "code":
        return _pick(code, CODE_SUFFIXES, variant).format(**fill)
    if kind == "unit_test":
        pool = BASE_TESTS if base else WRAPPER_TESTS
        return pool[variant % len(pool)].format(**fill)
    if base or show_values:
        examples = _examples(f, xs, f.token)
    else:  # no value stated: worked examples of the call only
        examples = "\n".join(f"{f.token}({x}) = {callee.token}({x})" for x in xs)  # type: ignore[union-attr]
    if kind == "example":
        return examples
    # comprehensive: definition + examples + code in one document
    head = definitions[variant % len(definitions)].format(**fill)
    body = code[variant % len(code)].format(**fill)
    shown = "\n".join(examples.splitlines()[:3])
    return f"## {f.token}\n{head}\nExamples:\n{shown}\nIn code:\n{body}"


def _filler(rng: random.Random, n: int, max_value: int) -> list[str]:
    ops = [("+", lambda a, b: a + b), ("-", lambda a, b: a - b), ("*", lambda a, b: a * b)]
    out, seen = [], set()
    while len(out) < n:
        a, b = rng.randint(0, max_value), rng.randint(0, max_value)
        sym, fn = rng.choice(ops)
        text = f"{a} {sym} {b} = {fn(a, b)}"
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def make_hops(cfg: HopsConfig | None = None) -> HopsCorpus:
    """Build the hops corpus for `cfg` (deterministic in `cfg.seed`)."""
    cfg = cfg or HopsConfig()
    _check(cfg)
    seed = cfg.seed
    values = list(range(1, cfg.max_value + 1))
    constants = _rng(seed, "constants").sample(values, cfg.n_bases)
    functions: dict[str, Function] = {}
    by_chain: dict[tuple[int, int], str] = {}
    for fid, level, i in function_names(cfg.n_bases, cfg.depth):
        callee = by_chain.get((level - 1, i))
        functions[fid] = Function(fid, f"<{fid}>", level, callee, constants[i])
        by_chain[(level, i)] = fid
    chains = {}
    for fid in functions:
        chain, cur = [fid], functions[fid].callee
        while cur is not None:
            chain.append(cur)
            cur = functions[cur].callee
        chains[fid] = chain

    # held-out inputs per function: no training row applies the function to them
    pick = _rng(seed, "inputs")
    held = {fid: sorted(pick.sample(values, cfg.query_inputs)) for fid in functions}
    docs = _rng(seed, "docs")
    rows: list[Row] = []
    for fid, f in functions.items():
        callee = functions[f.callee] if f.callee else None
        # documents of a wrapper also apply its callee to their inputs: avoid both held-out sets
        avoid = set(held[fid]) | set(held[f.callee] if f.callee else [])
        allowed = [v for v in values if v not in avoid]
        texts: set[str] = set()
        for kind in KINDS:
            made, variant = 0, 0
            while made < cfg.docs_per_kind and variant < 400:
                text = _document(kind, variant, f, callee, docs.sample(allowed, 4), cfg.wrapper_examples)
                variant += 1
                if text in texts:  # redraw: other inputs or the next template variant
                    continue
                texts.add(text)
                rows.append(Row(f"{fid.lower()}-{kind}-{made}", "", text,
                                {"kind": kind, "func": fid, "depth": f.depth, "chain": f.chain_letter,
                                 "constant": f.constant}))
                made += 1
    for j, text in enumerate(_filler(_rng(seed, "filler"), cfg.filler_rows, cfg.max_value)):
        rows.append(Row(f"filler-{j}", "", text, {"kind": "filler", "func": None, "depth": None,
                                                  "chain": None, "constant": None}))
    rows = _order(rows, cfg.order, _rng(seed, "order"))

    queries: list[Query] = []
    truth: dict[str, list[str]] = {}
    rows_of: dict[str, list[str]] = {}
    for r in rows:
        if r.metadata["func"]:
            rows_of.setdefault(r.metadata["func"], []).append(r.row_id)
    candidates = [f" {c}" for c in sorted(constants)]
    for fid, f in functions.items():
        for x in held[fid]:
            qid = f"{fid}-x{x}"
            queries.append(Query(f"{f.token}({x}) =", f" {f.constant}", qid,
                                 {"func": fid, "depth": f.depth, "input": x, "answer": f.constant,
                                  "chain": chains[fid], "candidates": candidates,
                                  "group": f"depth {f.depth}"}))
            truth[qid] = [rid for g in chains[fid] for rid in rows_of.get(g, [])]
    _self_check(rows, queries, truth, functions)
    kinds = [r.metadata["kind"] for r in rows]
    report = {"loaded": len(rows), "dropped_empty": 0, "dropped_duplicates": 0, "kept": len(rows),
              "functions": len(functions), "filler": kinds.count("filler"),
              **{k: kinds.count(k) for k in KINDS}}
    corpus = Corpus(rows, name=f"hops-seed{seed}", report=report)
    return HopsCorpus(corpus, queries, truth, functions, hops_tokens(cfg), chains)


def _order(rows: list[Row], order: str, rng: random.Random) -> list[Row]:
    """`shuffle`: random order. `alternating`: cycle through the functions (G, F, J, I, ...
    as in seed 002's alternating datasets) so every function is seen all through training;
    filler rows spread evenly in between."""
    if order == "shuffle":
        rng.shuffle(rows)
        return rows
    groups: dict[str, list[Row]] = {}
    filler = []
    for r in rows:
        if r.metadata["func"] is None:
            filler.append(r)
        else:
            groups.setdefault(r.metadata["func"], []).append(r)
    for g in groups.values():
        rng.shuffle(g)
    rng.shuffle(filler)
    def chain_then_depth(fid: str) -> tuple[int, int]:
        letters = BASE_LETTERS if groups[fid][0].metadata["depth"] == 0 else WRAPPER_LETTERS
        return letters.index(fid[0]), groups[fid][0].metadata["depth"]

    keys = sorted(groups, key=chain_then_depth)
    out: list[Row] = []
    while any(groups.values()):
        for k in keys:
            if groups[k]:
                out.append(groups[k].pop())
    if filler:  # interleave filler evenly
        step = max(1, len(out) // len(filler))
        merged, fi = [], 0
        for i, r in enumerate(out):
            merged.append(r)
            if i % step == step - 1 and fi < len(filler):
                merged.append(filler[fi])
                fi += 1
        out = merged + filler[fi:]
    return out


def _self_check(rows: list[Row], queries: list[Query], truth: dict[str, list[str]],
                functions: dict[str, Function]) -> None:
    """Invariants the ground truth relies on (a failure is a bug here)."""
    ids = [r.row_id for r in rows]
    assert len(set(ids)) == len(ids), "duplicate hops row ids"
    assert len({r.text for r in rows}) == len(rows), "duplicate hops rows"
    for q in queries:
        f = functions[q.metadata["func"]]
        applied = f"{f.token}({q.metadata['input']})"
        assert not any(applied in r.text for r in rows), f"query {q.query_id} input is trained on"
        allowed = set(q.metadata["chain"])
        for rid in truth[q.query_id]:
            assert rid.split("-")[0].upper() in allowed
