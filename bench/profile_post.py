"""Flame graph of the memory POST under load: py-spy samples the API while wrk posts single memories.

    python -m bench.profile_post [--seconds 15] [--connections 16] [--database sqlite|postgres] [--gil]

Writes docs/performance/memory-post-<database>.svg (py-spy must be installed: pip install py-spy).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.common import ROOT, postgres_database, redis_server
from bench.gateway import _bodies, _mint, _serve, project_env


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--database", default="sqlite")
    parser.add_argument("--source", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--batch", action="store_true", help="post batches of 100 instead of one memory")
    parser.add_argument(
        "--gil", action="store_true", help="sample only the thread holding the GIL (where CPU time goes)"
    )
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(__import__("sys").executable).parent / "py-spy")
    out = args.out or ROOT / "docs" / "performance" / f"memory-post-{args.database}.svg"
    with tempfile.TemporaryDirectory() as tmpdir, redis_server(Path(tmpdir)) as redis_url:
        tmp = Path(tmpdir)
        with postgres_database() if args.database == "postgres" else _sqlite(tmp) as url:
            env = project_env(redis_url, str(url), args.source)
            proc, base = _serve("api", "jeffrey_api.main:app", env, tmp, migrate=True)
            try:
                wrk_env = {
                    "BENCH_BODY_FILE": str(_bodies(tmp)[100 if args.batch else 1]),
                    "BENCH_TOKEN": _mint(env),
                }
                argv = ["wrk", "-t2", f"-c{args.connections}", f"-d{args.seconds + 3}s", "-s"]
                argv += [str(ROOT / "bench" / "post.lua"), f"{base}/api/v1/memories"]
                load = subprocess.Popen(
                    argv, env={**wrk_env, "PATH": "/usr/bin:/bin"}, stdout=subprocess.DEVNULL
                )
                record = [
                    spy,
                    "record",
                    "-p",
                    str(proc.pid),
                    "-d",
                    str(args.seconds),
                    "-r",
                    "200",
                    "-o",
                    str(out),
                    *(["--gil"] if args.gil else []),
                ]
                subprocess.run(
                    [*record, "--format", "raw" if str(out).endswith(".txt") else "flamegraph"], check=True
                )
                load.wait()
            finally:
                proc.stop()
    print(f"wrote {out}")


class _sqlite:
    def __init__(self, tmp: Path) -> None:
        self.url = f"sqlite:///{tmp}/profile.db"

    def __enter__(self) -> str:
        return self.url

    def __exit__(self, *_: object) -> None:
        return None


if __name__ == "__main__":
    main()
