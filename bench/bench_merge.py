"""Merge transfer: traingate's O(new) merge vs pull-everything, on moto's S3 server, same run.

    .venv/bin/python bench/bench_merge.py            # 20 new pairs into 2,000 stored pairs
    .venv/bin/python bench/bench_merge.py --quick    # 20 new pairs into 200 stored pairs (< 60 s)

Both start from a fresh clone of the same repository (no local DVC cache), as a CI runner does.
- traingate: `merge_step` reads the `.dir` listing, uploads the new objects and the new listing.
- pull-everything (the hand-written workflows of field report 3): `dvc pull`, copy the new files
  in, `dvc add`, `dvc push`, each as a `dvc` subprocess.
Figures: objects downloaded/uploaded (counted on the S3 server), wall time, and their ratios.
Also: the cost of running DVC in-process (dvc.repo.Repo) vs as a `dvc` subprocess.
Images are 128x128 here: the figure is about object counts, not bytes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))
DVC = str(ROOT / ".venv" / "bin" / "dvc")


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def s3_keys(bucket: str, prefix: str = "") -> list[str]:
    import boto3

    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def s3_count(bucket: str, prefix: str = "") -> int:
    return len(s3_keys(bucket, prefix))


def cache_objects(repo: Path) -> int:
    cache = repo / ".dvc" / "cache" / "files" / "md5"
    return sum(1 for p in cache.rglob("*") if p.is_file()) if cache.exists() else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 stored pairs (< 60 s)")
    parser.add_argument("--stored", type=int, default=None)
    parser.add_argument("--new", type=int, default=20)
    args = parser.parse_args()
    stored = args.stored or (200 if args.quick else 2000)

    import socket

    import boto3
    import yaml
    from bench_validate import generate
    from moto.server import ThreadedMotoServer

    from traingate.config import load_config
    from traingate.data.merge import merge_step
    from traingate.data.store import DvcStore
    from traingate.gha import ActionsContext

    LOCAL = ActionsContext()  # a run outside GitHub Actions

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request log
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@example.invalid",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@example.invalid",
    }.items():
        os.environ[key] = value
    boto3.client("s3").create_bucket(Bucket="bench")

    out = ROOT / "bench" / "out"
    base = generate(out / f"merge-stored-{stored}-128", stored, 128, seed=3, prefix="s")
    new = generate(out / f"merge-new-{args.new}-128", args.new, 128, seed=4, prefix="n")
    try:
        with tempfile.TemporaryDirectory(prefix="tg-bench-merge-") as tmp_s:
            tmp = Path(tmp_s)
            bare = tmp / "repo.git"
            subprocess.run(["git", "init", "--bare", "-q", "-b", "data/x", str(bare)], check=True)
            seed = tmp / "seed"
            subprocess.run(["git", "clone", "-q", str(bare), str(seed)], check=True, capture_output=True)
            git(seed, "checkout", "-q", "-b", "data/x")
            (seed / "traingate.yml").write_text(
                yaml.safe_dump(
                    {
                        "data": {"root": "data/training", "incoming": "data/new"},
                        "store": {"remote": "s3://bench/ds", "endpoint_url": endpoint},
                        "workspace": str(tmp / "ws"),
                    }
                )
            )
            shutil.copytree(base, seed / "data" / "new", ignore=shutil.ignore_patterns(".complete"))
            git(seed, "add", ".")
            git(seed, "commit", "-q", "-m", "seed")
            t0 = time.perf_counter()
            merge_step(load_config(seed / "traingate.yml"), sleep=lambda _s: None, actions=LOCAL)
            t_seed = time.perf_counter() - t0
            objects = s3_count("bench")
            print(f"stored dataset: {stored} pairs ({objects} objects on S3), seeded in {t_seed:.1f} s")

            def fresh_clone(name: str) -> Path:
                target = tmp / name
                subprocess.run(["git", "clone", "-q", "-b", "data/x", str(bare), str(target)], check=True)
                return target

            # --- traingate: O(new)
            a = fresh_clone("a")
            shutil.copytree(new, a / "data" / "new", ignore=shutil.ignore_patterns(".complete"))
            git(a, "add", "data/new")
            git(a, "commit", "-q", "-m", "new data")
            before = s3_count("bench")
            a_keys_before = set(s3_keys("bench", "ds/"))
            cfg = load_config(a / "traingate.yml")
            store = DvcStore(cfg)
            t0 = time.perf_counter()
            result = merge_step(cfg, store=store, push=False, sleep=lambda _s: None, actions=LOCAL)
            t_tg = time.perf_counter() - t0
            tg_up = s3_count("bench") - before
            tg_down = store.transfer.downloaded
            assert result.outputs["total_images"] == stored + args.new

            # --- pull everything, add, push (dvc subprocesses), against its own copy of the
            # stored dataset (as it was before traingate's merge), so its uploads count too.
            s3 = boto3.client("s3")
            for key in sorted(a_keys_before):
                s3.copy_object(
                    Bucket="bench", Key="copy/" + key[3:], CopySource={"Bucket": "bench", "Key": key}
                )
            b = fresh_clone("b")
            subprocess.run(
                [DVC, "remote", "modify", "-q", "storage", "url", "s3://bench/copy"], cwd=b, check=True
            )
            before_b = s3_count("bench", "copy/")
            t0 = time.perf_counter()
            subprocess.run([DVC, "pull", "-q"], cwd=b, check=True)
            pe_down = cache_objects(b)
            for sub in ("images", "masks"):
                for p in (new / sub).iterdir():
                    shutil.copy2(p, b / "data" / "training" / sub / p.name)
            subprocess.run([DVC, "add", "-q", "data/training"], cwd=b, check=True)
            t_pull_add = time.perf_counter() - t0
            subprocess.run([DVC, "push", "-q", "-r", "storage"], cwd=b, check=True)
            t_pe = time.perf_counter() - t0
            t_push = t_pe - t_pull_add
            pe_up = s3_count("bench", "copy/") - before_b

            # --- DVC in-process vs subprocess: open the repo and ask the remote about 40 objects.
            oids = sorted(set(listing(a).values()))[:40]
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", "from dvc.repo import Repo"], check=True)
            t_import = time.perf_counter() - t0
            from dvc.repo import Repo

            t0 = time.perf_counter()
            repo = Repo(str(a))
            odb = repo.cloud.get_remote_odb("storage")
            assert len(list(odb.oids_exist(oids))) == len(oids)
            repo.close()
            t_inproc = time.perf_counter() - t0
            t0 = time.perf_counter()
            subprocess.run([DVC, "status", "-c", "-q", "data/training.dvc"], cwd=a, check=False)
            t_sub = time.perf_counter() - t0
    finally:
        server.stop()

    print(f"new data: {args.new} pairs ({2 * args.new} files)")
    print(f"traingate merge:   down {tg_down:5d} objects, up {tg_up:5d} objects, {t_tg:6.2f} s")
    print(
        f"pull-everything:   down {pe_down:5d} objects, up {pe_up:5d} objects, {t_pe:6.2f} s "
        f"(pull+add {t_pull_add:.2f} s, push {t_push:.2f} s)"
    )
    print(
        f"ratio: downloads x{pe_down / max(tg_down, 1):.0f} fewer, "
        f"time x{t_pe / t_tg:.1f} faster (traingate {t_tg:.2f} s vs {t_pe:.2f} s)"
    )
    print(
        f"DVC in-process: python + import dvc.repo {t_import:.2f} s once, then open repo + "
        f"query 40 objects {t_inproc:.2f} s; "
        f"as a `dvc status -c` subprocess: {t_sub:.2f} s per call"
    )


def listing(repo: Path) -> dict[str, str]:
    """The merged dataset's listing, from the local DVC cache the merge filled."""
    from traingate.data.manifest import parse_tree, read_pointer

    md5 = read_pointer(repo / "data" / "training").md5
    cache = repo / ".dvc" / "cache" / "files" / "md5"
    return parse_tree((cache / md5[:2] / md5[2:]).read_bytes(), md5)


if __name__ == "__main__":
    main()
