"""One reading of path globs for `data.ignore` and `data.allowed_paths` (data/globs.py)."""

from __future__ import annotations

import pytest

from traingate.data.globs import glob_regex
from traingate.data.trust import Change, TrustRules
from traingate.errors import ConfigError


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("*.md", "README.md", True),
        ("*.md", "docs/README.md", False),  # `*` stays within one folder level
        ("**/*.md", "docs/a/README.md", True),
        ("**/*.md", "README.md", True),  # `**/` spans zero levels too
        ("notes/**", "notes/a/b.txt", True),
        ("[!a-m]*", "zeta.txt", True),
        ("[!a-m]*", "alpha.txt", False),
        ("[]]x", "]x", True),  # a `]` right after `[` belongs to the class, as in fnmatch
        ("[!]]x", "ax", True),
        ("[!]]x", "]x", False),
        ("[!]", "[!]", True),  # never closed: literal
        ("[^a]", "^", True),  # `^` inside a class is literal, as in fnmatch
        ("[^a]", "b", False),
        ("a[\\]b", "a\\b", True),
    ],
)
def test_glob_regex(pattern: str, path: str, matches: bool) -> None:
    assert bool(glob_regex(pattern).fullmatch(path)) is matches


def test_allowed_paths_reads_classes_that_close_on_a_bracket() -> None:
    """`data.allowed_paths: ['notes/[]]*']` used to raise re.error (a traceback, not an error)."""
    rules = TrustRules(incoming="data/new", pointers=(), globs=("notes/[]]*", "notes/[!]]*"))
    assert rules.allows(Change("A", "notes/]a.txt"))
    assert rules.allows(Change("A", "notes/b.txt"))
    assert not rules.allows(Change("A", "train.py"))


def test_a_backward_range_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"\[z-a\]") as info:
        glob_regex("[z-a]")
    assert info.value.hint
