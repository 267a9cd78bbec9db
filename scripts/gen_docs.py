"""Generate docs/cli.md (from the click commands) and docs/configuration.md (from the schema).

The reference is generated so it cannot drift: `tests/test_docs.py` runs this with `--check`,
which fails when a flag or a config key changed without the docs being regenerated.
Usage: .venv/bin/python scripts/gen_docs.py [--check]
"""

from __future__ import annotations

import inspect
import re
import sys
import typing
from enum import Enum
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from traingate.cli import cli  # noqa: E402
from traingate.config import Config  # noqa: E402

CLI_HEADER = """# CLI reference

Generated from the commands by `scripts/gen_docs.py`; `make test` checks it is current.
Global options go before or after the command: `traingate [--config FILE] [--json] [-v] COMMAND
...` and `traingate data validate PATH --config FILE --json` are the same call (given twice, the
one after the command wins).

Exit codes: `0` the step did its job (a gate that says "not improved" included), `1` the step
failed, `2` usage or configuration error, `130`/`143` stopped by SIGINT (Ctrl-C) / SIGTERM (see
docs/gate.md: `train` and `run` stop the training first). With `$GITHUB_OUTPUT` set, outputs are
written there after success only.

`--json` prints one JSON object on stdout (the last line), pass or fail, with the same keys for
every command:

```json
{"ok": false, "exit_code": 1,
 "error": {"type": "DataError", "message": "3 data error(s) in data; first: ...",
           "hint": "...", "file": "...", "context": [], "warnings": []},
 "outputs": {"validation_passed": false, "report": ".traingate/reports/validation-report.json"},
 "report": {"status": "fail", "errors": [...every error...], "warnings": [], "counts": {}, "statistics": {}}}
```

`ok` is `exit_code == 0`; `error` is `null` on success, else it names what failed, the next step,
`context` (what the step was doing, innermost first) and `warnings` gathered before the failure;
`outputs` are the step's outputs (on failure only the ones that stay true, never a success flag);
commands that produce more add it
(`report` for `data validate` / `data merge`, pass or fail; `warnings`). A bad flag with `--json`
prints the same object with `exit_code: 2` and `error.type: "UsageError"`. Messages for people go
to stderr.
"""

CONFIG_HEADER = """# Configuration reference (`traingate.yml`)

Generated from the schema in `src/traingate/config.py` by `scripts/gen_docs.py`; `make test`
checks it is current. Every key is optional: with no file at all the embedded default runs
(local dataset store, local infra, MLflow on sqlite). Unknown keys and wrong values are errors
(exit 2) that name the key path and the allowed values. Relative paths are resolved against the
folder that holds `traingate.yml`.

| key | type | default | notes |
|---|---|---|---|
"""


def _help_text(cmd: click.Command, path: list[str]) -> str:
    ctx = click.Context(cmd, info_name=" ".join(path), max_content_width=100, terminal_width=100)
    return cmd.get_help(ctx)


def _walk(cmd: click.Command, path: list[str]) -> list[tuple[list[str], click.Command]]:
    found = [(path, cmd)]
    if isinstance(cmd, click.Group):
        for name in sorted(cmd.commands):
            found += _walk(cmd.commands[name], [*path, name])
    return found


def render_cli() -> str:
    parts = [CLI_HEADER]
    for path, cmd in _walk(cli, ["traingate"]):
        title = " ".join(path)
        parts.append(f"\n## `{title}`\n\n```text\n{_help_text(cmd, path).rstrip()}\n```\n")
    return "".join(parts)


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        return " or ".join(_type_name(a) for a in args if a is not type(None)) + (
            " or null" if type(None) in args else ""
        )
    if origin in (list, tuple):
        inner = ", ".join(_type_name(a) for a in args if a is not Ellipsis)
        return f"{origin.__name__}[{inner}]"
    if origin is dict:
        return "mapping"
    if origin is typing.Annotated:
        return _type_name(args[0])
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return " \\| ".join(f"`{m.value}`" for m in annotation)
    return getattr(annotation, "__name__", str(annotation))


def _default(field: Any) -> str:
    if field.default is not PydanticUndefined:
        value = field.default
    elif field.default_factory is not None:
        value = field.default_factory()
    else:
        return "required"
    if isinstance(value, BaseModel):
        return ""
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, list) and value and isinstance(value[0], BaseModel):
        value = [v.model_dump(mode="json", exclude_defaults=True) for v in value]
    return f"`{value!r}`" if value not in ("", None) else ('`""`' if value == "" else "`null`")


def _comments(model: type[BaseModel]) -> dict[str, str]:
    """The `# comment` lines right above a field (and an inline one) are its documentation."""
    notes: dict[str, str] = {}
    pending: list[str] = []
    for raw in inspect.getsource(model).splitlines()[1:]:
        line = raw.strip()
        if line.startswith("#"):
            pending.append(line.lstrip("# ").strip())
            continue
        match = re.match(r"([a-z_][a-z0-9_]*)\s*:", line)
        if match and not line.startswith(("def ", "@", "return")):
            inline = line.split("  # ", 1)[1].strip() if "  # " in line else ""
            notes[match.group(1)] = " ".join([*pending, inline]).strip()
        pending = []
    return notes


def _rows(model: type[BaseModel], prefix: str) -> list[str]:
    rows = []
    comments = _comments(model)
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        key = f"{prefix}{name}"
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            rows += _rows(ann, key + ".")
            continue
        inner = typing.get_args(ann)
        notes = (field.description or comments.get(name, "")).replace("|", "\\|")
        rows.append(f"| `{key}` | {_type_name(ann)} | {_default(field)} | {notes} |")
        if (
            typing.get_origin(ann) is list
            and inner
            and isinstance(inner[0], type)
            and issubclass(inner[0], BaseModel)
        ):
            rows += _rows(inner[0], key + "[].")
    return rows


def render_config() -> str:
    return CONFIG_HEADER + "\n".join(_rows(Config, "")) + "\n"


def main() -> int:
    check = "--check" in sys.argv
    targets = {ROOT / "docs" / "cli.md": render_cli(), ROOT / "docs" / "configuration.md": render_config()}
    stale = []
    for path, text in targets.items():
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(path.relative_to(ROOT))
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print(f"stale: {', '.join(map(str, stale))}; run: .venv/bin/python scripts/gen_docs.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
