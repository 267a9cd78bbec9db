"""A `responses` fake of the GitHub REST + GraphQL endpoints traingate uses.

It keeps state (pulls, statuses, labels, commit comments, branches) and answers the way GitHub
does, with GitHub's status codes and error bodies: 422 "A pull request already exists", 403
"GitHub Actions is not permitted to create or approve pull requests", GraphQL errors with HTTP
200 for "Pull request is in clean status" and auto-merge disabled, 409 on a moved head, 422
for a body over 65,536 characters. PyGithub puts `:443` in its URLs, so routes carry the port.
Injected failures (`fail`) can hit before or after the write, like a 502 whose write happened.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import pytest
import requests
import responses

from traingate.config import Config, parse_config
from traingate.github.forge import PyGithubForge

API = "https://api.github.com:443"
GATE_REPORT: dict[str, Any] = {
    "improved": True,
    "baseline": "3",
    "baseline_run_id": "b" * 32,
    "candidate_run_id": "c" * 32,
    "model": "water-meters",
    "alias": "champion",
    "model_version": "4",
    "promoted": True,
    "require": "all",
    "reason": "all gated metrics improved",
    "run_url": "http://mlflow.example:5000/#/experiments/1/runs/" + "c" * 32,
    "metrics": [
        {
            "name": "dice",
            "direction": "max",
            "candidate": 0.9134,
            "baseline": 0.8871,
            "delta": 0.0263,
            "passed": True,
            "reason": "",
        },
        {
            "name": "iou",
            "direction": "max",
            "candidate": 0.8412,
            "baseline": 0.8120,
            "delta": 0.0292,
            "passed": True,
            "reason": "",
        },
    ],
}
DATA_REPORT: dict[str, Any] = {
    "status": "pass",
    "counts": {"images": 48, "masks": 48, "pairs": 12, "valid_pairs": 12},
    "errors": [],
    "warnings": [{"code": "near_empty_mask", "path": "masks/m07.png", "message": "0.05% foreground"}],
    "statistics": {"resolution": "512x512", "foreground_median": 0.31, "foreground_std": 0.08},
    "merge": {
        "existing_images": 36,
        "new_images": 12,
        "total_images": 48,
        "replaced": [],
        "data_version": "md5:1a2b3c",
        "commit": "d" * 40,
        "checks": ["pairs", "resolution", "binary masks", "duplicates"],
    },
}


def _json(status: int, payload: Any) -> tuple[int, dict[str, str], str]:
    return status, {"Content-Type": "application/json"}, json.dumps(payload)


@dataclass
class Failure:
    method: str
    path: str  # regex searched in the URL path
    status: int
    body: Any = field(default_factory=lambda: {"message": "Server Error"})
    after: bool = False  # perform the write, then answer with the error (a lost response)


class FakeGitHub:
    def __init__(self, rsps: responses.RequestsMock, repo: str = "o/r", api: str = API) -> None:
        self.repo = repo
        self.api = api
        self.prefix = urlparse(api).path.rstrip("/")
        self.branches: dict[str, str] = {"main": "a" * 40, "data/20240501-101500": "f" * 40}
        self.pulls: dict[int, dict[str, Any]] = {}
        self.labels: dict[int, list[str]] = {}
        self.statuses: list[dict[str, Any]] = []
        self.comments: dict[int, dict[str, Any]] = {}
        self.graphql: list[dict[str, Any]] = []
        self.merges: list[dict[str, Any]] = []
        self.deleted: list[str] = []
        self.log: list[tuple[str, str]] = []
        self.failures: list[Failure] = []
        self.actions_may_create_prs = True
        self.auto_merge_allowed = True
        self.graphql_forbidden = False
        # The compare API (`base...head`): per head branch a list of (GitHub status, filename[,
        # previous filename of a rename]);
        # else computed from `git_dir` (a bare repository, as in the e2e harness); else the one
        # pointer file a data branch changes.
        self.changed: dict[str, list[tuple[str, ...]]] = {}
        self.git_dir: Path | None = None
        # The contents API: per commit sha, path -> text (else read from `git_dir`).
        self.files: dict[str, dict[str, str]] = {}
        self._next_number = 1
        self._next_comment = 100
        # GitHub's merge clock: each merge happens a minute after the previous one.
        self._merge_minute = 0
        repo = re.escape(api) + r"/repos/[^/]+/[^/]+"
        for method, path, callback in (
            (responses.GET, r"/pulls(\?.*)?$", self._list_pulls),
            (responses.POST, r"/pulls$", self._create_pull),
            (responses.GET, r"/pulls/\d+$", self._get_pull),
            (responses.PATCH, r"/pulls/\d+$", self._edit_pull),
            (responses.PUT, r"/pulls/\d+/merge$", self._merge),
            (responses.POST, r"/issues/\d+/labels$", self._add_labels),
            (responses.POST, r"/statuses/\w+$", self._status),
            (responses.GET, r"/commits/\w+/comments(\?.*)?$", self._comments),
            (responses.POST, r"/commits/\w+/comments$", self._comment),
            (responses.PATCH, r"/comments/\d+$", self._edit_comment),
            (responses.GET, r"/git/ref/heads/.+$", self._get_ref),
            (responses.GET, r"/compare/[^?]+(\?.*)?$", self._compare),
            (responses.GET, r"/contents/[^?]+(\?.*)?$", self._contents),
            (responses.DELETE, r"/git/refs/heads/.+$", self._delete),
        ):
            rsps.add_callback(method, re.compile(repo + path), callback)
        graphql = api.replace("/api/v3", "/api") + "/graphql"
        rsps.add_callback(responses.POST, graphql, self._graphql)

    # ------------------------------------------------------------------ helpers for tests
    def open_pull(
        self, head: str = "data/20240501-101500", base: str = "main", **extra: Any
    ) -> dict[str, Any]:
        number = self._next_number
        self._next_number += 1
        pr = {
            "number": number,
            "title": "old title",
            "body": "old body",
            "head": head,
            "base": base,
            "state": "open",
            "merged": False,
            "mergeable_state": "blocked",
            "auto_merge": None,
            "merged_at": None,
        }
        pr.update(extra)
        self.pulls[number] = pr
        return pr

    def merge(self, number: int, merged_at: str | None = None) -> None:
        """A merge GitHub did itself (auto-merge) or a person did: no workflow hears of it."""
        pr = self.pulls[number]
        pr.update(state="closed", merged=True, merged_at=merged_at or self._merge_time())
        pr.setdefault("head_sha", self.branches.get(pr["head"], "0" * 40))

    def put_file(self, sha: str, path: str, text: str) -> None:
        """What the contents API answers for `path` at commit `sha`."""
        self.files.setdefault(sha, {})[path] = text

    def _merge_time(self) -> str:
        self._merge_minute += 1
        return f"2024-05-01T10:{self._merge_minute:02d}:00Z"

    def fail(
        self, method: str, path: str, status: int = 502, body: Any = None, *, after: bool = False
    ) -> None:
        self.failures.append(Failure(method, path, status, body or {"message": "Server Error"}, after))

    def count(self, method: str, path_regex: str) -> int:
        return sum(1 for m, p in self.log if m == method and re.search(path_regex, p))

    # ------------------------------------------------------------------ plumbing
    def _pr_json(self, pr: dict[str, Any]) -> dict[str, Any]:
        n = pr["number"]
        return {
            "url": f"{self.api}{self.prefix}/repos/{self.repo}/pulls/{n}".replace(":443", ""),
            "html_url": f"https://github.com/{self.repo}/pull/{n}",
            "node_id": f"PR_kwDO{n:06d}",
            "number": n,
            "state": pr["state"],
            "title": pr["title"],
            "body": pr["body"],
            "merged": pr["merged"],
            "merged_at": pr.get("merged_at"),
            "labels": [{"name": x, "color": "ededed"} for x in self.labels.get(n, [])],
            "mergeable_state": pr["mergeable_state"],
            "auto_merge": pr["auto_merge"],
            "head": {
                "ref": pr["head"],
                # A merged PR keeps the head it merged, even after its branch is deleted.
                "sha": pr.get("head_sha") or self.branches.get(pr["head"], "0" * 40),
                "label": f"o:{pr['head']}",
            },
            "base": {
                "ref": pr["base"],
                "sha": self.branches.get(pr["base"], "0" * 40),
                "label": f"o:{pr['base']}",
            },
        }

    def _injected(self, request: Any) -> Failure | None:
        path = urlparse(request.url).path
        self.log.append((request.method, path))
        for f in self.failures:
            if f.method == request.method and re.search(f.path, path):
                self.failures.remove(f)
                return f
        return None

    def _wrap(self, request: Any, handler: Any) -> tuple[int, dict[str, str], str]:
        failure = self._injected(request)
        if failure and failure.status == 0:
            # A connection dropped mid-request, as requests reports it.
            raise requests.exceptions.ConnectionError("('Connection aborted.', RemoteDisconnected())")
        if failure and not failure.after:
            return _json(failure.status, failure.body)
        result = handler(request)
        if failure:
            return _json(failure.status, failure.body)
        return result

    @staticmethod
    def _body(request: Any) -> dict[str, Any]:
        raw = request.body or b"{}"
        return json.loads(raw.decode() if isinstance(raw, bytes) else raw)

    def _number(self, request: Any) -> int:
        return int(re.search(r"/(?:pulls|issues)/(\d+)", urlparse(request.url).path).group(1))  # type: ignore[union-attr]

    # ------------------------------------------------------------------ REST routes
    def _list_pulls(self, request: Any) -> Any:
        def run(_r: Any) -> Any:
            q = parse_qs(urlparse(request.url).query)
            state = q.get("state", ["open"])[0]
            head = q.get("head", [None])[0]
            base = q.get("base", [None])[0]
            out = []
            for pr in self.pulls.values():
                if state != "all" and pr["state"] != state:
                    continue
                if head and f"o:{pr['head']}" != head and pr["head"] != head:
                    continue
                if base and pr["base"] != base:
                    continue
                out.append(self._pr_json(pr))
            return _json(200, out)

        return self._wrap(request, run)

    def _too_long(self, body: str | None) -> Any:
        if body is not None and len(body) > 65536:
            return _json(
                422,
                {
                    "message": "Validation Failed",
                    "errors": [
                        {
                            "resource": "Issue",
                            "code": "custom",
                            "field": "body",
                            "message": "body is too long (maximum is 65536 characters)",
                        }
                    ],
                },
            )
        return None

    def _create_pull(self, request: Any) -> Any:
        def run(_r: Any) -> Any:
            data = self._body(request)
            if not self.actions_may_create_prs:
                return _json(
                    403,
                    {
                        "message": "GitHub Actions is not permitted to create or approve pull requests.",
                        "documentation_url": "https://docs.github.com/rest/pulls/pulls#create-a-pull-request",
                        "status": "403",
                    },
                )
            if too_long := self._too_long(data.get("body")):
                return too_long
            if data["head"] not in self.branches:
                return _json(
                    422,
                    {
                        "message": "Validation Failed",
                        "errors": [{"resource": "PullRequest", "field": "head", "code": "invalid"}],
                    },
                )
            for pr in self.pulls.values():
                if pr["state"] == "open" and pr["head"] == data["head"] and pr["base"] == data["base"]:
                    return _json(
                        422,
                        {
                            "message": "Validation Failed",
                            "errors": [
                                {
                                    "resource": "PullRequest",
                                    "code": "custom",
                                    "message": f"A pull request already exists for o:{data['head']}.",
                                }
                            ],
                        },
                    )
            pr = self.open_pull(data["head"], data["base"], title=data["title"], body=data.get("body", ""))
            return _json(201, self._pr_json(pr))

        return self._wrap(request, run)

    def _get_pull(self, request: Any) -> Any:
        def run(_r: Any) -> Any:
            pr = self.pulls.get(self._number(request))
            if pr is None:
                return _json(404, {"message": "Not Found", "status": "404"})
            return _json(200, self._pr_json(pr))

        return self._wrap(request, run)

    def _edit_pull(self, request: Any) -> Any:
        def run(_r: Any) -> Any:
            pr = self.pulls.get(self._number(request))
            if pr is None:
                return _json(404, {"message": "Not Found"})
            data = self._body(request)
            if too_long := self._too_long(data.get("body")):
                return too_long
            pr.update({k: v for k, v in data.items() if k in ("title", "body", "state")})
            return _json(200, self._pr_json(pr))

        return self._wrap(request, run)

    def _merge(self, request: Any) -> Any:
        def run(_r: Any) -> Any:
            pr = self.pulls[self._number(request)]
            data = self._body(request)
            head_sha = self.branches[pr["head"]]
            if data.get("sha") and data["sha"] != head_sha:
                return _json(409, {"message": "Head branch was modified. Review and try the merge again."})
            if pr["mergeable_state"] not in ("clean", "unstable", "has_hooks"):
                return _json(405, {"message": "Pull Request is not mergeable"})
            pr.update(state="closed", merged=True, merged_at=self._merge_time(), head_sha=head_sha)
            self.merges.append({"number": pr["number"], **data})
            return _json(
                200, {"sha": "e" * 40, "merged": True, "message": "Pull Request successfully merged"}
            )

        return self._wrap(request, run)

    def _add_labels(self, request: Any) -> Any:
        def run(_r: Any) -> Any:
            n = self._number(request)
            data: Any = self._body(request)
            # GitHub accepts `{"labels": [...]}` or a bare array (PyGithub sends the array).
            names = data["labels"] if isinstance(data, dict) else data
            have = self.labels.setdefault(n, [])
            have.extend(x for x in names if x not in have)
            return _json(200, [{"name": x, "color": "ededed", "url": f"{self.api}/labels/{x}"} for x in have])

        return self._wrap(request, run)

    def _status(self, request: Any) -> Any:
        def run(_r: Any) -> Any:
            data = self._body(request)
            sha = urlparse(request.url).path.rsplit("/", 1)[1]
            if data.get("state") not in ("error", "failure", "pending", "success"):
                return _json(
                    422, {"message": "Validation Failed", "errors": [{"field": "state", "code": "invalid"}]}
                )
            if len(data.get("description") or "") > 140:
                return _json(
                    422,
                    {
                        "message": "Validation Failed",
                        "errors": [
                            {"field": "description", "code": "custom", "message": "description is too long"}
                        ],
                    },
                )
            self.statuses.append({"sha": sha, **data})
            return _json(
                201, {"id": len(self.statuses), "state": data["state"], "context": data.get("context")}
            )

        return self._wrap(request, run)

    def _comment_json(self, cid: int) -> dict[str, Any]:
        c = self.comments[cid]
        return {
            "id": cid,
            "url": f"{self.api}/repos/{self.repo}/comments/{cid}".replace(":443", ""),
            "html_url": f"https://github.com/{self.repo}/commit/{c['sha']}#commitcomment-{cid}",
            "body": c["body"],
            "commit_id": c["sha"],
            "user": {"login": "github-actions[bot]", "id": 41898282},
        }

    def _comments(self, request: Any) -> Any:
        def run(_r: Any) -> Any:
            sha = urlparse(request.url).path.split("/commits/")[1].split("/")[0]
            return _json(200, [self._comment_json(i) for i, c in self.comments.items() if c["sha"] == sha])

        return self._wrap(request, run)

    def _comment(self, request: Any) -> Any:
        def run(_r: Any) -> Any:
            sha = urlparse(request.url).path.split("/commits/")[1].split("/")[0]
            cid = self._next_comment
            self._next_comment += 1
            self.comments[cid] = {"sha": sha, "body": self._body(request)["body"]}
            return _json(201, self._comment_json(cid))

        return self._wrap(request, run)

    def _edit_comment(self, request: Any) -> Any:
        def run(_r: Any) -> Any:
            cid = int(urlparse(request.url).path.rsplit("/", 1)[1])
            if cid not in self.comments:
                return _json(404, {"message": "Not Found"})
            self.comments[cid]["body"] = self._body(request)["body"]
            return _json(200, self._comment_json(cid))

        return self._wrap(request, run)

    def _get_ref(self, request: Any) -> Any:
        def run(_r: Any) -> Any:
            branch = unquote(urlparse(request.url).path.split("/git/ref/heads/", 1)[1])
            if branch not in self.branches:
                return _json(404, {"message": "Not Found", "status": "404"})
            url = f"{self.api}{self.prefix}/repos/{self.repo}/git/refs/heads/{branch}".replace(":443", "")
            sha = self.branches[branch]
            return _json(
                200,
                {
                    "ref": f"refs/heads/{branch}",
                    "url": url,
                    "object": {"sha": sha, "type": "commit", "url": url},
                },
            )

        return self._wrap(request, run)

    def _compare(self, request: Any) -> Any:
        def run(_r: Any) -> Any:
            basehead = unquote(urlparse(request.url).path.split("/compare/", 1)[1])
            base, _, head = basehead.partition("...")
            if base not in self.branches or head not in self.branches:
                return _json(404, {"message": "Not Found", "status": "404"})
            if head in self.changed:
                changes = self.changed[head]
            elif self.git_dir is not None:
                changes = self._git_changes(base, head)
            else:
                changes = [("modified", "data/training.dvc")]
            files = [
                {
                    "sha": "0" * 40,
                    "filename": change[1],
                    "status": change[0],
                    "additions": 1,
                    "deletions": 0,
                    "changes": 1,
                    **({"previous_filename": change[2]} if len(change) > 2 else {}),
                }
                for change in changes
            ][:300]  # GitHub lists at most 300 files of a comparison
            url = f"{self.api}{self.prefix}/repos/{self.repo}/compare/{basehead}".replace(":443", "")
            return _json(
                200,
                {
                    "url": url,
                    "status": "ahead",
                    "ahead_by": 1,
                    "behind_by": 0,
                    "total_commits": 1,
                    "commits": [],
                    "files": files,
                },
            )

        return self._wrap(request, run)

    def _contents(self, request: Any) -> Any:
        def run(_r: Any) -> Any:
            import base64
            import subprocess

            url = urlparse(request.url)
            path = unquote(url.path.split("/contents/", 1)[1])
            ref = parse_qs(url.query).get("ref", [""])[0] or self.branches["main"]
            ref = self.branches.get(ref, ref)
            text = self.files.get(ref, {}).get(path)
            if text is None and self.git_dir is not None:
                proc = subprocess.run(
                    ["git", "show", f"{ref}:{path}"], cwd=self.git_dir, capture_output=True, text=True
                )
                text = proc.stdout if proc.returncode == 0 else None
            if text is None:
                return _json(404, {"message": "Not Found", "status": "404"})
            raw = text.encode()
            api_url = f"{self.api}{self.prefix}/repos/{self.repo}/contents/{path}".replace(":443", "")
            return _json(
                200,
                {
                    "type": "file",
                    "encoding": "base64",
                    "size": len(raw),
                    "name": path.rsplit("/", 1)[-1],
                    "path": path,
                    "content": base64.b64encode(raw).decode(),
                    "sha": "0" * 40,
                    "url": f"{api_url}?ref={ref}",
                },
            )

        return self._wrap(request, run)

    def _git_changes(self, base: str, head: str) -> list[tuple[str, str]]:
        import subprocess

        def git(*args: str) -> str:
            return subprocess.run(
                ["git", *args], cwd=self.git_dir, check=True, capture_output=True, text=True
            ).stdout

        merge_base = git("merge-base", f"refs/heads/{base}", f"refs/heads/{head}").strip()
        out = git("diff", "--name-status", "--no-renames", merge_base, f"refs/heads/{head}")
        words = {"A": "added", "D": "removed", "M": "modified", "T": "changed"}
        return [(words.get(line[0], "modified"), line.split("\t", 1)[1]) for line in out.splitlines() if line]

    def _delete(self, request: Any) -> Any:
        def run(_r: Any) -> Any:
            branch = unquote(urlparse(request.url).path.split("/git/refs/heads/", 1)[1])
            if branch not in self.branches:
                return _json(422, {"message": "Reference does not exist"})
            del self.branches[branch]
            self.deleted.append(branch)
            return 204, {}, ""

        return self._wrap(request, run)

    # ------------------------------------------------------------------ GraphQL
    def _graphql(self, request: Any) -> Any:
        def run(_r: Any) -> Any:
            payload = self._body(request)
            self.graphql.append(payload)
            if "enablePullRequestAutoMerge" not in payload["query"]:
                return _json(200, {"errors": [{"message": "unsupported query in fake"}]})
            inp = payload["variables"]["input"]

            def gql_error(kind: str, message: str) -> Any:
                return _json(
                    200,
                    {
                        "data": {"enablePullRequestAutoMerge": None},
                        "errors": [
                            {
                                "type": kind,
                                "path": ["enablePullRequestAutoMerge"],
                                "locations": [{"line": 1, "column": 72}],
                                "message": message,
                            }
                        ],
                    },
                )

            if self.graphql_forbidden:
                return gql_error("FORBIDDEN", "Resource not accessible by integration")
            pr = next(
                (p for p in self.pulls.values() if f"PR_kwDO{p['number']:06d}" == inp["pullRequestId"]), None
            )
            if pr is None:
                return _json(
                    200,
                    {
                        "data": {"enablePullRequestAutoMerge": None},
                        "errors": [
                            {
                                "type": "NOT_FOUND",
                                "path": ["enablePullRequestAutoMerge"],
                                "message": "Could not resolve to a node with the global id of "
                                f"'{inp['pullRequestId']}'",
                            }
                        ],
                    },
                )
            if not self.auto_merge_allowed:
                return gql_error(
                    "UNPROCESSABLE", "Pull request Auto merge is not allowed for this repository"
                )
            if pr["mergeable_state"] == "clean":
                return gql_error("UNPROCESSABLE", "Pull request Pull request is in clean status")
            if inp.get("expectedHeadOid") and inp["expectedHeadOid"] != self.branches[pr["head"]]:
                return gql_error("UNPROCESSABLE", "Pull request Head sha didn't match expected head sha")
            pr["auto_merge"] = {"merge_method": inp["mergeMethod"].lower()}
            return _json(
                200,
                {
                    "data": {
                        "enablePullRequestAutoMerge": {
                            "actor": {
                                "avatarUrl": "",
                                "login": "github-actions[bot]",
                                "resourcePath": "",
                                "url": "",
                            },
                            "clientMutationId": None,
                        }
                    }
                },
            )

        return self._wrap(request, run)


@pytest.fixture
def fake_github() -> Iterator[FakeGitHub]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield FakeGitHub(rsps)


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def forge_factory(sleeps: Sleeps) -> Any:
    """Real PyGithubForge with no throttling and a recorded (not real) sleep."""

    def make(token: str, repo: str, **kwargs: Any) -> PyGithubForge:
        kwargs.setdefault("sleep", sleeps)
        kwargs.setdefault("rand", lambda: 1.0)
        return PyGithubForge(token, repo, seconds_between_requests=0, seconds_between_writes=0, **kwargs)

    return make


@pytest.fixture
def workspace(tmp_path: Path) -> tuple[Config, Path]:
    """A config rooted in tmp_path with the stage reports where `pr create` looks by default."""
    cfg = parse_config({"project": "water-meters"}, base_dir=tmp_path)
    reports = cfg.workspace_dir / "reports"
    reports.mkdir(parents=True)
    (reports / "gate-report.json").write_text(json.dumps(GATE_REPORT))
    (reports / "data-report.json").write_text(json.dumps(DATA_REPORT))
    rows = [
        {"step": i, "dice": 0.5 + i * 0.01, "iou": 0.4 + i * 0.01, "loss": 1.0 / (i + 1)}
        for i in range(1, 41)
    ]
    (reports / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return cfg, reports
