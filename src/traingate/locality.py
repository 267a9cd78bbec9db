"""Is a configured location only on this machine?

A GitHub-hosted runner's disk is deleted when the job ends (DESIGN.md, lessons): a DVC remote or
a tracking store there "succeeds" and is gone for the next job. Stages and `doctor` ask this one
question about a configured location so they refuse the same values with the same words.
"""

from __future__ import annotations

from urllib.parse import urlsplit

# Hosts that resolve to the machine itself: a server there dies with the runner too.
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0", "ip6-localhost"})
# Schemes that name a file on this machine, whatever follows.
_FILE_SCHEMES = frozenset({"file", "sqlite"})


def names_local_path(location: str) -> bool:
    """True when `location` is a path, not a service: a plain path (relative or absolute), a
    Windows drive path (`C:\\data`, which parses as a one-letter scheme), or a `file:` or
    `sqlite:` URL. An empty string is a path: every empty location in traingate.yml means a
    default under the workspace folder. Whatever reads such a location reads this machine's disk.
    """
    scheme = urlsplit(location.strip()).scheme.lower()
    return len(scheme) <= 1 or scheme in _FILE_SCHEMES


def is_runner_local(location: str) -> bool:
    """True when `location` lives only on this machine: a path (`names_local_path`), anything
    without `://`, or a URL whose host is the loopback interface."""
    text = location.strip()
    if "://" not in text or names_local_path(text):
        return True
    host = (urlsplit(text).hostname or "").lower()
    return host in _LOOPBACK_HOSTS or host.startswith("127.")


__all__ = ["is_runner_local", "names_local_path"]
