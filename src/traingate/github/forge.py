"""The `Forge` Protocol (what the PR stages need from GitHub) and its PyGithub implementation.

The stages talk to this Protocol only, so tests can drive them against PyGithub with `responses`
(the real request shapes) and nothing else imports `github`. Errors come back as GitHubError /
CredentialsError with the setting or permission to change: field report 3 swallowed every
auto-merge failure with `|| echo`, so here nothing is swallowed and nothing is vague.

Retries: a 5xx or a dropped connection is retried with bounded, jittered backoff (injectable
sleep); a 4xx is an answer and is never retried. PyGithub's own retry is turned off so there is
one budget, not two nested ones.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from traingate.errors import CredentialsError, GitHubError, UsageError
from traingate.gha import ActionsContext

if TYPE_CHECKING:
    from github.PullRequest import PullRequest
    from github.Repository import Repository

T = TypeVar("T")

DEFAULT_API_URL = "https://api.github.com"
# What a workflow job needs to grant GITHUB_TOKEN for the PR stages.
PERMISSIONS_HINT = (
    "pass `GITHUB_TOKEN: ${{ secrets.GITHUB_TOKEN }}` in the step's `env:` and grant the job "
    "`permissions:` `pull-requests: write` + `statuses: write` (pr create), "
    "`pull-requests: write` + `contents: write` (pr automerge), `contents: write` (pr comment)"
)
ACTIONS_PR_SETTING = (
    "Settings → Actions → General → Workflow permissions → tick "
    '"Allow GitHub Actions to create and approve pull requests" '
    "(for an organisation, the same setting under the organisation's Settings → Actions → General)"
)
AUTO_MERGE_SETTING = 'Settings → General → Pull Requests → tick "Allow auto-merge"'
_REPO_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


class PullExistsError(GitHubError):
    """422 "A pull request already exists": someone (or a retried POST) opened it first."""


class AutoMergeRefusedError(GitHubError):
    """GitHub would not enable auto-merge; `reason` is `clean`, `disabled` or `other`."""

    def __init__(self, message: str, *, reason: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.reason = reason


def classify_automerge_refusal(text: str) -> str:
    low = text.lower()
    # "Pull request is in clean status": already mergeable, nothing to wait for. Without branch
    # protection on the base GitHub says "Protected branch rules not configured": same situation.
    if "clean status" in low or "protected branch rules not configured" in low:
        return "clean"
    if (
        "auto merge is not allowed" in low
        or "auto-merge is not allowed" in low
        or "automerge is not allowed" in low
    ):
        return "disabled"
    return "other"


@dataclass(frozen=True)
class PullInfo:
    number: int
    url: str
    node_id: str
    head_ref: str
    head_sha: str
    base_ref: str
    state: str
    merged: bool
    title: str = ""
    mergeable_state: str = ""
    # Merge method of an auto-merge already scheduled on the PR ("" when none).
    auto_merge_method: str = ""
    body: str = ""
    # When GitHub merged it, UTC `YYYY-MM-DDTHH:MM:SSZ` ("" when not merged): promotion's order.
    merged_at: str = ""
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class CommentInfo:
    id: int
    url: str
    body: str
    author: str = ""


@dataclass(frozen=True)
class ChangedFile:
    """One path a comparison changes, with git's status letter (A, M, D, T)."""

    status: str
    path: str


# GitHub lists at most this many files of a comparison; a longer list cannot be checked whole.
COMPARE_FILES_LIMIT = 300
_GITHUB_STATUS = {"added": "A", "removed": "D", "modified": "M", "changed": "T", "copied": "A"}


class Forge(Protocol):
    """What traingate needs from a code host; every method raises GitHubError on failure."""

    repo: str

    def find_open_pull(self, head: str, base: str) -> PullInfo | None: ...
    def create_pull(self, *, head: str, base: str, title: str, body: str) -> PullInfo: ...
    def update_pull(self, number: int, *, title: str, body: str) -> PullInfo: ...
    def add_labels(self, number: int, labels: list[str]) -> None: ...
    def get_pull(self, number: int) -> PullInfo: ...
    def list_merged_pulls(self, base: str, *, limit: int = 100) -> list[PullInfo]: ...
    def create_status(
        self, sha: str, *, state: str, context: str, description: str, target_url: str = ""
    ) -> None: ...
    def enable_automerge(self, pull: PullInfo, *, method: str) -> None: ...
    def merge_pull(self, pull: PullInfo, *, method: str) -> str: ...
    def delete_branch(self, branch: str) -> None: ...
    def list_commit_comments(self, sha: str) -> list[CommentInfo]: ...
    def create_commit_comment(self, sha: str, body: str) -> CommentInfo: ...
    def update_commit_comment(self, comment_id: int, body: str) -> CommentInfo: ...
    def changed_files(self, base: str, head: str) -> tuple[list[ChangedFile], bool]: ...
    def read_file(self, path: str, ref: str) -> str | None: ...


# (token, repo) -> Forge: what the stages take so tests can hand in a forge of their own.
ForgeFactory = Callable[[str, str], Forge]


# ------------------------------------------------------------------------------ resolution
def resolve_repo(repo: str | None, actions: ActionsContext | None = None) -> str | None:
    """`--repo`, else the repository of the Actions run, else None; always owner/name. No
    context means "not in Actions": nothing is guessed from the environment."""
    value = (repo or (actions.repository if actions is not None else "") or "").strip()
    if not value:
        return None
    if not _REPO_RE.match(value):
        raise UsageError(
            f"repository must be owner/name, got {value!r}",
            hint="pass --repo owner/name or set GITHUB_REPOSITORY",
        )
    return value


def require_repo(repo: str | None, actions: ActionsContext | None = None, *, purpose: str = "") -> str:
    """`resolve_repo`, or UsageError when neither --repo nor GITHUB_REPOSITORY names one;
    `purpose` completes "no repository ..." ("to comment in")."""
    value = resolve_repo(repo, actions)
    if not value:
        raise UsageError(
            f"no repository{' ' + purpose if purpose else ''}: --repo was not given and "
            "GITHUB_REPOSITORY is not set",
            hint="run inside GitHub Actions or pass --repo owner/name",
        )
    return value


def open_forge(token: str, repo: str, actions: ActionsContext, factory: ForgeFactory | None = None) -> Forge:
    """The forge for `repo`: `factory(token, repo)` when a test hands one in, else PyGithub on the
    run's API URL (GitHub Enterprise Server sets GITHUB_API_URL, https://HOST/api/v3)."""
    if factory is not None:
        return factory(token, repo)
    return make_forge(token, repo, base_url=actions.api_url)


def require_token(token: str | None, repo: str) -> str:
    if not token:
        raise CredentialsError(
            f"no GitHub token for {repo}: GITHUB_TOKEN is not set and --token was not given",
            hint=PERMISSIONS_HINT,
        )
    return token


# ------------------------------------------------------------------------------ errors
def _messages(exc: Any) -> list[str]:
    data = getattr(exc, "data", None)
    out: list[str] = []
    if isinstance(data, dict):
        if data.get("message"):
            out.append(str(data["message"]))
        for item in data.get("errors") or []:
            if isinstance(item, dict) and item.get("message"):
                out.append(str(item["message"]))
            elif isinstance(item, dict) and item.get("field"):
                # REST validation errors often carry only {resource, field, code}.
                out.append(
                    f"{item.get('resource', '')} {item['field']} is {item.get('code', 'invalid')}".strip()
                )
            elif isinstance(item, str):
                out.append(item)
    elif isinstance(data, str) and data.strip():
        out.append(data.strip()[:300])
    if not out:
        out.append(str(getattr(exc, "message", None) or exc))
    return out


def error_text(exc: Any) -> str:
    """All messages of a GitHub error (REST `message` + `errors[]`, or GraphQL `errors[]`)."""
    return "; ".join(_messages(exc))


def is_transient(exc: BaseException) -> bool:
    """5xx and dropped connections are worth another try; a 4xx is GitHub's answer."""
    import requests

    from github import GithubException

    if isinstance(exc, GithubException):
        return exc.status >= 500
    return isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout)


def translate(exc: BaseException, action: str, repo: str) -> GitHubError | CredentialsError:
    """Turn a PyGithub/requests exception into an error that names what to change."""
    from github import GithubException

    if not isinstance(exc, GithubException):
        return GitHubError(
            f"could not reach GitHub to {action} in {repo}: {exc}",
            hint="check GITHUB_API_URL and the runner's network; the step can be re-run safely",
        )
    text = error_text(exc)
    low = text.lower()
    status = exc.status
    if status == 401:
        return CredentialsError(
            f"GitHub rejected the token while trying to {action} in {repo} (401: {text})",
            hint="the token is invalid or expired; " + PERMISSIONS_HINT,
        )
    if "not permitted to create or approve pull requests" in low:
        return GitHubError(
            f"GitHub refused to {action} in {repo}: {text}",
            hint=f"allow it in {ACTIONS_PR_SETTING}",
        )
    if "resource not accessible by integration" in low or (status == 403 and "permission" in low):
        return GitHubError(
            f"the token may not {action} in {repo} (403: {text})",
            hint=PERMISSIONS_HINT,
        )
    if "pullrequest head is invalid" in low:
        return GitHubError(
            f"GitHub refused to {action} in {repo}: {text}",
            hint="the head branch does not exist on GitHub; push it first (or check --head)",
        )
    if "no commits between" in low:
        return GitHubError(
            f"GitHub refused to {action} in {repo}: {text}",
            hint="the head branch has no commit that the base lacks; push the data commit to the "
            "head branch first (or check --head / --base)",
        )
    if status == 403 and "rate limit" in low:
        return GitHubError(
            f"GitHub rate limit while trying to {action} in {repo}: {text}",
            hint="re-run the job later; GITHUB_TOKEN allows 1,000 requests per hour per repository",
        )
    if status == 404:
        return GitHubError(
            f"GitHub answered 404 while trying to {action} in {repo}: {text}",
            hint="check the repository name, the PR number or branch, and that the token can see "
            "the repository (a private repository answers 404 to a token without access)",
        )
    return GitHubError(
        f"GitHub refused to {action} in {repo} ({status}: {text})",
        hint="read GitHub's message above; the step can be re-run once it is fixed",
    )


# ------------------------------------------------------------------------------ PyGithub
class PyGithubForge:
    """Forge over PyGithub. `sleep`, `attempts` and the throttles are injectable for tests."""

    def __init__(
        self,
        token: str,
        repo: str,
        *,
        base_url: str | None = None,
        attempts: int = 4,
        backoff_seconds: float = 2.0,
        max_backoff_seconds: float = 20.0,
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
        seconds_between_requests: float | None = 0.25,
        seconds_between_writes: float | None = 1.0,
        timeout: int = 30,
    ) -> None:
        from github import Auth, Github

        self.repo = repo
        self.attempts = max(1, attempts)
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self._sleep = sleep
        self._rand = rand
        self._gh = Github(
            auth=Auth.Token(token),
            base_url=(base_url or DEFAULT_API_URL).rstrip("/"),
            retry=0,
            timeout=timeout,
            seconds_between_requests=seconds_between_requests,
            seconds_between_writes=seconds_between_writes,
            lazy=True,
        )
        self._repo: Repository = self._gh.get_repo(repo)
        # PRs already read in this process: enable_automerge needs the node id get_pull fetched.
        self._pulls: dict[int, PullRequest] = {}
        self.owner = repo.split("/", 1)[0]

    def _call(self, action: str, fn: Callable[[], T]) -> T:
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except Exception as exc:
                if attempt < self.attempts and is_transient(exc):
                    delay = min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (attempt - 1))
                    self._sleep(delay * (0.5 + self._rand() / 2))
                    continue
                if is_transient(exc) or _is_github_exception(exc):
                    err = translate(exc, action, self.repo)
                    if is_transient(exc):
                        err.message += f" (gave up after {attempt} attempt(s))"
                    raise err from None
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _info(self, pr: PullRequest) -> PullInfo:
        self._pulls[pr.number] = pr
        return PullInfo(
            number=pr.number,
            url=pr.html_url,
            node_id=pr.node_id,
            head_ref=pr.head.ref,
            head_sha=pr.head.sha,
            base_ref=pr.base.ref,
            state=pr.state,
            merged=bool(pr.merged),
            title=pr.title or "",
            mergeable_state=pr.mergeable_state or "",
            auto_merge_method=str((pr.auto_merge or {}).get("merge_method") or "").lower(),
            body=pr.body or "",
            merged_at=_utc(pr.merged_at),
            labels=tuple(label.name for label in pr.labels),
        )

    def find_open_pull(self, head: str, base: str) -> PullInfo | None:
        def run() -> PullInfo | None:
            pulls = self._repo.get_pulls(state="open", head=f"{self.owner}:{head}", base=base)
            for pr in pulls:
                if pr.head.ref == head and pr.base.ref == base:
                    return self._info(pr)
            return None

        return self._call(f"list open pull requests {head} → {base}", run)

    def create_pull(self, *, head: str, base: str, title: str, body: str) -> PullInfo:
        from github import GithubException

        def run() -> PullInfo:
            try:
                return self._info(self._repo.create_pull(base=base, head=head, title=title, body=body))
            except GithubException as exc:
                if exc.status == 422 and "already exists" in error_text(exc).lower():
                    raise PullExistsError(f"a pull request {head} → {base} already exists") from None
                raise

        return self._call(f"create a pull request {head} → {base}", run)

    def update_pull(self, number: int, *, title: str, body: str) -> PullInfo:
        def run() -> PullInfo:
            pr = self._repo.get_pull(number)
            pr.edit(title=title, body=body)  # the PATCH answer fills the lazy object: one request
            return self._info(pr)

        return self._call(f"update pull request #{number}", run)

    def add_labels(self, number: int, labels: list[str]) -> None:
        if labels:
            self._call(
                f"label pull request #{number}",
                lambda: self._repo.get_issue(number).add_to_labels(*labels),
            )

    def get_pull(self, number: int) -> PullInfo:
        return self._call(f"read pull request #{number}", lambda: self._info(self._repo.get_pull(number)))

    def list_merged_pulls(self, base: str, *, limit: int = 100) -> list[PullInfo]:
        """Merged PRs into `base`, most recently updated first, at most `limit` looked at.

        Built from the list answer alone (it carries body, labels and merged_at): completing
        each PR would cost one request per PR on every scheduled sweep.
        """

        def run() -> list[PullInfo]:
            found: list[PullInfo] = []
            pulls = self._repo.get_pulls(state="closed", base=base, sort="updated", direction="desc")
            for i, pr in enumerate(pulls):
                if i >= limit:
                    break
                if pr.merged_at is None:
                    continue
                found.append(
                    PullInfo(
                        number=pr.number,
                        url=pr.html_url,
                        node_id=pr.node_id,
                        head_ref=pr.head.ref,
                        head_sha=pr.head.sha,
                        base_ref=pr.base.ref,
                        state=pr.state,
                        merged=True,
                        title=pr.title or "",
                        body=pr.body or "",
                        merged_at=_utc(pr.merged_at),
                        labels=tuple(label.name for label in pr.labels),
                    )
                )
            return found

        return self._call(f"list merged pull requests into {base}", run)

    def create_status(
        self, sha: str, *, state: str, context: str, description: str, target_url: str = ""
    ) -> None:
        from github.GithubObject import NotSet

        def run() -> None:
            # Lazy: the Commit takes its sha from the URL, so posting costs one request.
            self._repo.get_commit(sha).create_status(
                state=state,
                target_url=target_url or NotSet,
                description=description[:140],
                context=context,
            )

        self._call(f"post commit status {context!r} on {sha[:12]}", run)

    def enable_automerge(self, pull: PullInfo, *, method: str) -> None:
        from github import GithubException

        def run() -> None:
            # A lazy PR object would GET itself again for node_id; reuse the one get_pull read.
            pr = self._pulls.get(pull.number) or self._repo.get_pull(pull.number)
            try:
                # expectedHeadOid: a commit pushed after the gate ran must not merge on its verdict.
                pr.enable_automerge(merge_method=method.upper(), expected_head_oid=pull.head_sha)
            except GithubException as exc:
                text = error_text(exc)
                reason = classify_automerge_refusal(text)
                if exc.status < 500 and reason != "other":
                    raise AutoMergeRefusedError(
                        f"GitHub would not enable auto-merge on pull request #{pull.number}: {text}",
                        reason=reason,
                    ) from None
                raise

        self._call(f"enable auto-merge on pull request #{pull.number}", run)

    def merge_pull(self, pull: PullInfo, *, method: str) -> str:
        def run() -> str:
            pr = self._repo.get_pull(pull.number)
            status = pr.merge(merge_method=method, sha=pull.head_sha)
            if not status.merged:
                raise GitHubError(
                    f"GitHub did not merge pull request #{pull.number}: {status.message}",
                    hint="open the pull request and read why it is not mergeable",
                )
            return status.sha

        return self._call(f"merge pull request #{pull.number}", run)

    def delete_branch(self, branch: str) -> None:
        def run() -> None:
            ref = self._repo.get_git_ref(f"heads/{branch}")
            # A lazy GitRef keeps the GET URL (/git/ref/...), but DELETE lives at /git/refs/...:
            # reading it first takes the URL GitHub answers with (and 404s on a missing branch).
            _ = ref.object
            ref.delete()

        self._call(f"delete branch {branch!r}", run)

    def list_commit_comments(self, sha: str) -> list[CommentInfo]:
        def run() -> list[CommentInfo]:
            return [
                CommentInfo(id=c.id, url=c.html_url, body=c.body or "", author=c.user.login if c.user else "")
                for c in self._repo.get_commit(sha).get_comments()
            ]

        return self._call(f"list comments of commit {sha[:12]}", run)

    def create_commit_comment(self, sha: str, body: str) -> CommentInfo:
        def run() -> CommentInfo:
            c = self._repo.get_commit(sha).create_comment(body)
            return CommentInfo(id=c.id, url=c.html_url, body=c.body or "")

        return self._call(f"comment on commit {sha[:12]}", run)

    def update_commit_comment(self, comment_id: int, body: str) -> CommentInfo:
        def run() -> CommentInfo:
            c = self._repo.get_comment(comment_id)
            c.edit(body)
            return CommentInfo(id=comment_id, url=c.html_url, body=body)

        return self._call(f"update commit comment {comment_id}", run)

    def changed_files(self, base: str, head: str) -> tuple[list[ChangedFile], bool]:
        """What `head` changed since it left `base` (GitHub's three-dot compare: the PR's diff),
        and whether the list is complete (GitHub stops listing at 300 files)."""

        def run() -> tuple[list[ChangedFile], bool]:
            files = self._repo.compare(base, head).files
            out: list[ChangedFile] = []
            for f in files:
                if f.status == "renamed":
                    out += [ChangedFile("D", f.previous_filename or f.filename), ChangedFile("A", f.filename)]
                elif f.status != "unchanged":
                    out.append(ChangedFile(_GITHUB_STATUS.get(f.status, "M"), f.filename))
            return out, len(files) < COMPARE_FILES_LIMIT

        return self._call(f"compare {base}...{head}", run)

    def read_file(self, path: str, ref: str) -> str | None:
        """The text of one file at `ref` (a sha: what a merged PR's head held), None when the
        file does not exist there. The contents API, so no checkout of the PR is needed."""
        from github import UnknownObjectException

        def run() -> str | None:
            try:
                found = self._repo.get_contents(path, ref=ref)
            except UnknownObjectException:
                return None
            if isinstance(found, list) or found.type != "file":
                raise GitHubError(
                    f"{path} at {ref[:12]} in {self.repo} is not a file",
                    hint="check data.root: its pointer <data.root>.dvc must be a file",
                )
            return found.decoded_content.decode("utf-8", errors="replace")

        return self._call(f"read {path} at {ref[:12]}", run)


def _utc(moment: Any) -> str:
    """GitHub's timestamps as sortable UTC strings ("" for None)."""
    if moment is None:
        return ""
    from datetime import UTC

    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return str(moment.strftime("%Y-%m-%dT%H:%M:%SZ"))


def _is_github_exception(exc: BaseException) -> bool:
    from github import GithubException

    return isinstance(exc, GithubException)


def make_forge(token: str, repo: str, **kwargs: Any) -> PyGithubForge:
    """PyGithub on `base_url` (the run's `ActionsContext.api_url`; default github.com's API)."""
    return PyGithubForge(token, repo, **kwargs)
