"""The expression evaluator agrees with GitHub's documented semantics on the subset we use."""

from __future__ import annotations

import math

import pytest

from tests.workflows.expr import (
    Context,
    ExpressionError,
    evaluate,
    evaluate_if,
    interpolate,
    needs_implicit_success,
    strip_wrapper,
    truthy,
)

CTX = Context(
    values={
        "needs": {
            "train": {"result": "success", "outputs": {"improved": "true", "metrics": '{"dice": 0.9}'}},
            "start-infra": {"result": "failure", "outputs": {}},
        },
        "inputs": {"merge": True, "auto-merge": False, "count": 3, "name": "Data"},
        "github": {"event": {"pull_request": {"labels": [{"name": "traingate"}, {"name": "x"}]}}},
    }
)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("needs.train.outputs.improved == 'true'", True),
        ("needs.train.outputs.improved == 'TRUE'", True),  # strings compare case-insensitively
        ("needs.train.outputs.improved != 'true'", False),
        ("needs.train.outputs.missing == 'true'", False),
        ("needs.train.outputs.missing == ''", True),  # null coerces to 0, '' to 0
        ("needs.start-infra.result == 'failure'", True),
        ("needs['start-infra'].result", "failure"),
        ("needs.start-infra.result != 'skipped' && needs.train.result", "success"),
        ("inputs.merge && 'yes' || 'no'", "yes"),
        ("inputs.auto-merge && 'yes' || 'no'", "no"),
        ("!inputs.auto-merge", True),
        ("!!inputs.name", True),
        ("inputs.count > 2 && inputs.count <= 3", True),
        ("inputs.count == '3'", True),  # mixed types coerce to numbers
        ("'abc' == 0", False),  # NaN is equal to nothing
        ("'abc' != 0", True),
        ("null == false", True),
        ("1 == true", True),
        ("(false || 0) || ''", ""),
        ("true && (false || 'x')", "x"),
        ("contains(github.event.pull_request.labels.*.name, 'traingate')", True),
        ("contains(github.event.pull_request.labels.*.name, 'other')", False),
        ("contains('data/2024-01', 'DATA/')", True),
        ("startsWith('data/x', 'data/') && endsWith('a.yml', '.YML')", True),
        ("format('{0}/r/{1}.json {{x}}', 'tmp', 3)", "tmp/r/3.json {x}"),
        ("fromJSON(needs.train.outputs.metrics).dice", 0.9),
        ('fromJSON(\'["success","skipped"]\')[1]', "skipped"),
        ("0x10 == 16", True),
        ("-1.5e1 < 0", True),
        ("'it''s' == 'IT''S'", True),
    ],
)
def test_expressions(expression: str, expected: object) -> None:
    assert evaluate(expression, CTX) == expected


@pytest.mark.parametrize("value", [False, 0, 0.0, "", None, math.nan])
def test_falsy_values(value: object) -> None:
    assert not truthy(value)


@pytest.mark.parametrize("value", [True, 1, -1, "false", "0", [], {}])
def test_truthy_values(value: object) -> None:
    # 'false' and '0' are non-empty strings: truthy. This is why outputs are compared with == 'true'.
    assert truthy(value)


@pytest.mark.parametrize(
    "expression",
    ["needs.train.result ==", "(true", "a b", "needs.train.$x", "unknown_fn(1)", "success(1)", "'open"],
)
def test_malformed_expressions_raise(expression: str) -> None:
    with pytest.raises(ExpressionError):
        evaluate(expression, CTX)


def test_unknown_context_raises() -> None:
    with pytest.raises(ExpressionError, match="unknown context"):
        evaluate("nope.x", CTX)


def _status(**states: bool):
    return lambda name: states.get(name, name == "always")


def test_if_without_status_function_is_implicitly_success_and() -> None:
    failed = Context(values=CTX.values, status=_status(success=False, failure=True))
    assert needs_implicit_success("needs.train.outputs.improved == 'true'")
    assert not evaluate_if("needs.train.outputs.improved == 'true'", failed)
    assert not evaluate_if(None, failed)
    assert evaluate_if("${{ always() && needs.start-infra.result != 'skipped' }}", failed)
    assert evaluate_if("failure()", failed)
    assert not evaluate_if("!cancelled() && needs.train.result == 'failure'", failed)


def test_cancelled_run() -> None:
    cancelled = Context(values=CTX.values, status=_status(success=False, cancelled=True))
    assert evaluate_if("always()", cancelled)
    assert not evaluate_if("!cancelled()", cancelled)


def test_wrapper_and_interpolation() -> None:
    assert strip_wrapper("  ${{ inputs.merge }} ") == "inputs.merge"
    assert strip_wrapper("inputs.merge") == "inputs.merge"
    assert interpolate("traingate-${{ inputs.name }}-${{ inputs.count }}", CTX) == "traingate-Data-3"
    assert interpolate("${{ inputs.merge }}", CTX) == "true"
