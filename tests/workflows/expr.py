"""A small evaluator of the GitHub Actions expression language, for the subset our workflows use.

No Python library evaluates Actions expressions, and the job graph's correctness (stop-infra
always runs, create-pr only on improvement) lives in `if:` strings, so the tests need one.
Supported: literals (null, booleans, numbers, single-quoted strings), context paths
(`needs.train.outputs.improved`, `inputs.merge`, `a['b']`, `a.*.b`), `!`, `<`, `<=`, `>`, `>=`,
`==`, `!=`, `&&`, `||`, parentheses, and the functions `success()`, `failure()`, `cancelled()`,
`always()`, `contains`, `startsWith`, `endsWith`, `format`, `fromJSON`, `toJSON`.

Semantics follow GitHub's documentation: loose equality that coerces mismatched types to
numbers, case-insensitive string comparison, `&&`/`||` returning an operand (not a boolean),
and the falsy values `false`, `0`, `-0`, `""`, `null` and NaN. A job `if:` without a status
function is implicitly `success() && (...)` (see `needs_implicit_success`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

STATUS_FUNCTIONS = frozenset({"success", "failure", "cancelled", "always"})


class ExpressionError(ValueError):
    """The expression is malformed or uses something outside the supported subset."""


# ------------------------------------------------------------------------------------ tokens
_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<num>0x[0-9a-fA-F]+|-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<str>'(?:[^']|'')*')
  | (?P<op>&&|\|\||==|!=|<=|>=|<|>|!|\(|\)|\[|\]|\.|,|\*)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_-]*)
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    pos: int


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ExpressionError(f"unexpected character {text[pos]!r} at {pos} in {text!r}")
        kind = m.lastgroup or ""
        if kind != "ws":
            tokens.append(Token(kind, m.group(), pos))
        pos = m.end()
    return tokens


# -------------------------------------------------------------------------------------- AST
@dataclass(frozen=True)
class Literal:
    value: Any


@dataclass(frozen=True)
class Path:
    root: Any  # a context name, or a node (`fromJSON(x).key`)
    parts: tuple[Any, ...]  # str keys, Node index expressions, or the `*` filter (None)


@dataclass(frozen=True)
class Not:
    operand: Node


@dataclass(frozen=True)
class Binary:
    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Node, ...]


Node = Literal | Path | Not | Binary | Call

_PRECEDENCE = {"||": 1, "&&": 2, "==": 3, "!=": 3, "<": 4, "<=": 4, ">": 4, ">=": 4}


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0

    def peek(self) -> Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, text: str | None = None) -> Token:
        tok = self.peek()
        if tok is None or (text is not None and tok.text != text):
            found = tok.text if tok else "end of expression"
            raise ExpressionError(f"expected {text or 'a value'} but found {found!r} in {self.text!r}")
        self.i += 1
        return tok

    def parse(self) -> Node:
        node = self.binary(0)
        if self.peek() is not None:
            raise ExpressionError(f"unexpected {self.peek().text!r} in {self.text!r}")  # type: ignore[union-attr]
        return node

    def binary(self, min_prec: int) -> Node:
        left = self.unary()
        while True:
            tok = self.peek()
            prec = _PRECEDENCE.get(tok.text, 0) if tok and tok.kind == "op" else 0
            if prec == 0 or prec < min_prec:
                return left
            self.take()
            right = self.binary(prec + 1)
            left = Binary(tok.text, left, right)  # type: ignore[union-attr]

    def unary(self) -> Node:
        tok = self.peek()
        if tok and tok.text == "!":
            self.take()
            return Not(self.unary())
        return self.postfix(self.primary())

    def primary(self) -> Node:
        tok = self.take()
        if tok.text == "(":
            node = self.binary(0)
            self.take(")")
            return node
        if tok.kind == "num":
            return Literal(float(int(tok.text, 16)) if tok.text.startswith("0x") else float(tok.text))
        if tok.kind == "str":
            return Literal(tok.text[1:-1].replace("''", "'"))
        if tok.kind == "ident":
            low = tok.text
            if low == "true":
                return Literal(True)
            if low == "false":
                return Literal(False)
            if low == "null":
                return Literal(None)
            nxt = self.peek()
            if nxt and nxt.text == "(":
                self.take("(")
                args: list[Node] = []
                if self.peek() and self.peek().text != ")":  # type: ignore[union-attr]
                    args.append(self.binary(0))
                    while self.peek() and self.peek().text == ",":  # type: ignore[union-attr]
                        self.take(",")
                        args.append(self.binary(0))
                self.take(")")
                return Call(tok.text, tuple(args))
            return Path(tok.text, ())
        raise ExpressionError(f"unexpected {tok.text!r} at {tok.pos} in {self.text!r}")

    def postfix(self, node: Node) -> Node:
        while (tok := self.peek()) is not None and tok.text in (".", "["):
            self.take()
            if tok.text == ".":
                nxt = self.take()
                part: Any = None if nxt.text == "*" else nxt.text
                if nxt.kind not in ("ident",) and nxt.text != "*":
                    raise ExpressionError(f"expected a property name after '.' in {self.text!r}")
            else:
                if self.peek() and self.peek().text == "*":  # type: ignore[union-attr]
                    self.take("*")
                    part = None
                else:
                    part = self.binary(0)
                self.take("]")
            node = Path(node.root, (*node.parts, part)) if isinstance(node, Path) else Path(node, (part,))
        return node


def parse(text: str) -> Node:
    return _Parser(text).parse()


# ------------------------------------------------------------------------------- semantics
def truthy(value: Any) -> bool:
    if value is None or value is False:
        return False
    if isinstance(value, float | int) and not isinstance(value, bool):
        return not (value == 0 or math.isnan(value))
    if isinstance(value, str):
        return value != ""
    return True


def to_number(value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if text == "":
            return 0.0
        try:
            return float(int(text, 16)) if text.lower().startswith("0x") else float(text)
        except ValueError:
            return math.nan
    return math.nan  # objects and arrays


def to_string(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, dict | list):
        return "Object" if isinstance(value, dict) else "Array"
    return str(value)


def _compare(op: str, a: Any, b: Any) -> bool:
    same_kind = (
        type(a) is type(b)
        or (isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool))
        or (a is None and b is None)
    )
    if isinstance(a, str) and isinstance(b, str):
        x, y = a.casefold(), b.casefold()
    elif same_kind and isinstance(a, dict | list):
        if op in ("==", "!="):
            return (a is b) == (op == "==")
        return False
    elif same_kind and not isinstance(a, bool | None.__class__):
        x, y = a, b
    else:
        x, y = to_number(a), to_number(b)
        if isinstance(x, float) and isinstance(y, float) and (math.isnan(x) or math.isnan(y)):
            return op == "!="
    return {
        "==": x == y,
        "!=": x != y,
        "<": x < y,
        "<=": x <= y,
        ">": x > y,
        ">=": x >= y,
    }[op]


@dataclass
class Context:
    """Values for context paths and the outcome the status functions report."""

    values: Mapping[str, Any] = field(default_factory=dict)
    status: Callable[[str], bool] = lambda name: name == "always" or name == "success"


def _lookup(value: Any, part: Any) -> Any:
    if isinstance(value, list) and part is None:
        return value
    if part is None:  # `.*` on an object: the list of its values
        return list(value.values()) if isinstance(value, dict) else []
    if isinstance(value, list):
        if isinstance(part, str):
            return [_lookup(v, part) for v in value]
        index = to_number(part)
        return value[int(index)] if not math.isnan(index) and 0 <= index < len(value) else None
    if isinstance(value, dict):
        key = to_string(part)
        for k, v in value.items():  # property names are case-insensitive
            if k.casefold() == key.casefold():
                return v
        return None
    return None


def _format(fmt: str, *args: Any) -> str:
    def repl(m: re.Match[str]) -> str:
        if m.group() in ("{{", "}}"):
            return m.group()[0]
        idx = int(m.group(1))
        if idx >= len(args):
            raise ExpressionError(f"format(): no argument {idx} for {fmt!r}")
        return to_string(args[idx])

    return re.sub(r"\{\{|\}\}|\{(\d+)\}", repl, fmt)


def evaluate(node: Node | str, ctx: Context | None = None) -> Any:
    ctx = ctx or Context()
    if isinstance(node, str):
        node = parse(node)
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Path):
        if not isinstance(node.root, str):
            value: Any = evaluate(node.root, ctx)
        elif node.root in ctx.values:
            value = ctx.values[node.root]
        else:
            raise ExpressionError(f"unknown context {node.root!r}")
        for part in node.parts:
            key = evaluate(part, ctx) if isinstance(part, Literal | Path | Not | Binary | Call) else part
            value = _lookup(value, key)
        return value
    if isinstance(node, Not):
        return not truthy(evaluate(node.operand, ctx))
    if isinstance(node, Binary):
        left = evaluate(node.left, ctx)
        if node.op == "&&":
            return evaluate(node.right, ctx) if truthy(left) else left
        if node.op == "||":
            return left if truthy(left) else evaluate(node.right, ctx)
        return _compare(node.op, left, evaluate(node.right, ctx))
    if isinstance(node, Call):
        name = node.name
        if name in STATUS_FUNCTIONS:
            if node.args:
                raise ExpressionError(f"{name}() takes no arguments")
            return ctx.status(name)
        args = [evaluate(a, ctx) for a in node.args]
        low = name.lower()
        if low == "contains" and len(args) == 2:
            hay, needle = args
            if isinstance(hay, list):
                return any(_compare("==", item, needle) for item in hay)
            return to_string(needle).casefold() in to_string(hay).casefold()
        if low == "startswith" and len(args) == 2:
            return to_string(args[0]).casefold().startswith(to_string(args[1]).casefold())
        if low == "endswith" and len(args) == 2:
            return to_string(args[0]).casefold().endswith(to_string(args[1]).casefold())
        if low == "format" and args:
            return _format(to_string(args[0]), *args[1:])
        if low == "fromjson" and len(args) == 1:
            return json.loads(to_string(args[0]))
        if low == "tojson" and len(args) == 1:
            return json.dumps(args[0], indent=2)
        raise ExpressionError(f"unsupported function {name}() with {len(args)} argument(s)")
    raise ExpressionError(f"cannot evaluate {node!r}")  # pragma: no cover


def uses_status_function(node: Node) -> bool:
    if isinstance(node, Call):
        return node.name in STATUS_FUNCTIONS or any(uses_status_function(a) for a in node.args)
    if isinstance(node, Not):
        return uses_status_function(node.operand)
    if isinstance(node, Binary):
        return uses_status_function(node.left) or uses_status_function(node.right)
    if isinstance(node, Path):
        return any(uses_status_function(p) for p in node.parts if not isinstance(p, str | None.__class__))
    return False


def strip_wrapper(text: str) -> str:
    """`${{ expr }}` -> `expr`; an `if:` may be written with or without the wrapper."""
    text = text.strip()
    if text.startswith("${{") and text.endswith("}}") and text.count("${{") == 1:
        return text[3:-2].strip()
    return text


def evaluate_if(condition: Any, ctx: Context) -> bool:
    """Evaluate a job or step `if:` the way the runner does, implicit `success() &&` included."""
    if condition is None:
        return bool(ctx.status("success"))
    if isinstance(condition, bool):
        return condition and bool(ctx.status("success"))
    node = parse(strip_wrapper(str(condition)))
    if not uses_status_function(node):
        return bool(ctx.status("success")) and truthy(evaluate(node, ctx))
    return truthy(evaluate(node, ctx))


def interpolate(text: str, ctx: Context) -> str:
    """Replace every `${{ expr }}` in a string (as in `with:` values) with its string value."""

    def repl(m: re.Match[str]) -> str:
        return to_string(evaluate(m.group(1), ctx))

    return re.sub(r"\$\{\{(.*?)\}\}", repl, text)


def needs_implicit_success(condition: Any) -> bool:
    if condition is None or isinstance(condition, bool):
        return True
    return not uses_status_function(parse(strip_wrapper(str(condition))))


__all__ = [
    "Context",
    "ExpressionError",
    "evaluate",
    "evaluate_if",
    "interpolate",
    "needs_implicit_success",
    "parse",
    "strip_wrapper",
    "to_number",
    "to_string",
    "truthy",
    "uses_status_function",
]
