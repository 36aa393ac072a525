"""Schemathesis over the whole API (issue 11, item 10): a real uvicorn server and a real worker, the spec
read from its /openapi.json, positive and negative data, one token with the admin and memories scopes,
on SQLite and on PostgreSQL (which refuses values SQLite stores: NUL, over-long strings).

Schemathesis 4 runs its examples, coverage (boundary values, wrong types, missing fields, malformed
bodies), fuzzing and stateful (links it infers between operations) phases, derandomized, so the same
cases run every time. Checks: no 5xx (`not_a_server_error`), every status code declared
(`status_code_conformance`), the declared content type (`content_type_conformance`) and each body
matching its declared schema (`response_schema_conformance`).

It runs the `schemathesis run` command (its stable interface; the pytest plugin of 4.x reaches into
pytest internals that pytest 9 removed) and reads the JSON report: operations, cases, failures.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from jeffrey_core.auth import mint_token
from jeffrey_core.store.migrate import upgrade
from tests.support.processes import RedisServer, ServiceProcess, service_env, start_api, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SECRET = service_env("", "")["JEFFREY_SECRET_KEY"]
MAX_EXAMPLES = 12  # fuzzing phase, per operation and mode; the coverage phase adds its boundary cases
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance")
CHECKS += ("response_schema_conformance",)
# An endless text/event-stream: there is no body to validate; its auth and caps have their own tests.
EXCLUDED_PATHS = ("/api/v1/events",)
# Round trips to a worker with a wait the client picks (`timeout`, any float > 0): 504 when that wait
# runs out and 503 when the breaker is open or the broker down are their documented answers, not bugs.
WORKER_ROUND_TRIPS = "^/api/v1/(emotion/detect|ops/echo)$"

CONFIG = f"""
suppress-health-check = ["all"]
request-timeout = 60
workers = 1

[generation]
mode = "all"
max-examples = {MAX_EXAMPLES}
deterministic = true
no-shrink = true

[phases.examples]
enabled = true
[phases.coverage]
enabled = true
[phases.fuzzing]
enabled = true
[phases.stateful]
enabled = true

[[operations]]
include-path-regex = "{WORKER_ROUND_TRIPS}"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "503", "504"]
"""


@dataclass
class Served:
    base: str
    workdir: Path
    api: ServiceProcess


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def served(
    request: pytest.FixtureRequest, log_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """The API on each database: values only PostgreSQL refuses (NUL in a path) must give 4xx too."""
    workdir = tmp_path_factory.mktemp("fuzz")
    if request.param == "sqlite":
        database = f"sqlite:///{workdir / 'jeffrey.db'}"
        upgrade(database)
    else:
        database = request.getfixturevalue("postgres_url")  # migrated; users here are random ids
    redis = RedisServer(log_dir).start()  # private: DELETE /dlq and the toggle touch nobody else's data
    env = service_env(redis.url(0), database)
    processes: list[ServiceProcess] = []
    try:
        processes.append(start_worker(env, log_dir, f"fuzz-{uuid.uuid4().hex[:6]}@localhost"))
        api, base = start_api(env, log_dir)
        processes.append(api)
        yield Served(base, workdir, api)
    finally:
        for process in reversed(processes):
            process.stop()
        redis.stop()


def schemathesis_run(served: Served) -> tuple[dict[str, Any], str]:
    """One `schemathesis run` over the live spec; its JSON report and its console output."""
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert cli, "schemathesis is not installed (pip install -e '.[dev]')"
    config = served.workdir / "schemathesis.toml"
    config.write_text(CONFIG)
    report = served.workdir / "report.json"
    token = mint_token(SECRET, "fuzz-admin", ["admin", "memories"], 3600)
    argv = [cli, "--config-file", str(config), "run", f"{served.base}/openapi.json"]
    argv += ["--header", f"Authorization: Bearer {token}", "--checks", ",".join(CHECKS)]
    argv += [f"--exclude-path={path}" for path in EXCLUDED_PATHS]
    argv += ["--report", "json", "--report-json-path", str(report), "--no-color"]
    done = subprocess.run(argv, cwd=served.workdir, capture_output=True, text=True, timeout=420)
    assert report.exists(), done.stdout[-5000:] + done.stderr[-3000:]
    loaded: dict[str, Any] = json.loads(report.read_text())
    return loaded, done.stdout


@pytest.mark.timeout(480)  # about a minute on 2 cores; the suite's 120 s default is for single tests
def test_schemathesis_finds_no_server_error_and_no_schema_violation(served: Served) -> None:
    report, output = schemathesis_run(served)
    cases = report["test_cases"]
    print(
        f"\nschemathesis {report['schemathesis_version']}: operations {report['operations']}, "
        f"cases {cases}, failures {len(report['failures'])}, errors {len(report['errors'])}, "
        f"{report['running_time']:.0f} s"
    )
    summary = output[output.rfind("SUMMARY") :] if "SUMMARY" in output else output[-3000:]
    assert report["complete"] and not report["errors"], summary
    assert not report["failures"], output[-12000:]
    assert report["operations"]["tested"] >= 20, report["operations"]
    assert "Traceback" not in served.api.output(), "the API logged an unhandled error"
