"""Path globs as traingate.yml spells them, for `data.ignore` and `data.allowed_paths`.

One reading for both keys, so a glob a user learned for one means the same in the other: `*`
and `?` stay within one folder level, `**` spans any number of levels, `[...]` is a character
class (`[!...]` negates; `^` and `\\` inside it are literal, as in Python's fnmatch). Paths are
POSIX and relative; the caller decides relative to what.
"""

from __future__ import annotations

import functools
import re

from traingate.errors import ConfigError


@functools.cache
def glob_regex(pattern: str) -> re.Pattern[str]:
    """The regular expression that `fullmatch`es exactly the paths `pattern` names."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:[^/]+/)*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and (end := _class_end(pattern, i)) != -1:
            body = pattern[i + 1 : end]
            negate = body[:1] == "!"
            body = (body[1:] if negate else body).replace("\\", "\\\\")  # ranges (a-z) stay ranges
            out.append("[" + ("^" if negate else "") + ("\\" + body if body[:1] == "^" else body) + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    try:
        return re.compile("".join(out))
    except re.error as exc:  # a range that runs backwards: [z-a]
        raise ConfigError(
            f"the path glob {pattern!r} is not a valid pattern ({exc})",
            hint="fix it in data.ignore or data.allowed_paths of traingate.yml; a range in [...] runs "
            "from low to high ([a-z])",
        ) from exc


def _class_end(pattern: str, start: int) -> int:
    """Where the `[...]` opened at `start` closes, or -1 when it does not (then `[` is literal).
    A `]` right after `[` or `[!` belongs to the class, as in fnmatch: `[]]`, `[!]]`."""
    j = start + 1
    if pattern.startswith("!", j):
        j += 1
    if pattern.startswith("]", j):
        j += 1
    return pattern.find("]", j)


__all__ = ["glob_regex"]
