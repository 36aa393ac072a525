"""`jeffrey memories import` against a real API: bad lines are reported, never abort; re-import is a no-op."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from jeffrey_core.auth import mint_token
from tests.support.processes import service_env, start_api

pytestmark = pytest.mark.integration


def run_import(path: Path, base: str, env: dict[str, str], user: str, *extra: str) -> tuple[int, dict, str]:  # type: ignore[type-arg]
    argv = [sys.executable, "-m", "jeffrey_dev.cli.main", "memories", "import", str(path), "--user", user]
    argv += ["--api", base, "--batch-size", "3", *extra]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    return result.returncode, json.loads(result.stdout) if result.stdout.strip() else {}, result.stderr


def test_import_jsonl_and_csv(
    redis_url: str, sqlite_url: str, log_dir: Path, tmp_path: Path, user_id: str
) -> None:
    env = service_env(redis_url, sqlite_url)
    api, base = start_api(env, log_dir)
    try:
        jsonl = tmp_path / "memories.jsonl"
        lines = [
            json.dumps({"text": "first day at the new job", "created_at": "2026-01-05T09:00:00Z"}),
            "{not json",
            json.dumps({"text": ""}),
            json.dumps({"text": "x" * 5001}),
            json.dumps({"text": "walk on the beach", "meta": {"place": "Brest"}}),
            json.dumps({"text": "first day at the new job", "created_at": "2026-01-05T09:00:00Z"}),
            json.dumps({"text": "bad date", "created_at": "someday"}),
            "",
            json.dumps({"text": "cooked for friends"}),
            json.dumps({"text": "read a book"}),
            json.dumps({"text": "rain all day"}),
        ]
        jsonl.write_text("\n".join(lines) + "\n")
        code, summary, stderr = run_import(jsonl, base, env, user_id)
        assert code == 0, stderr
        assert summary["imported"] == 5 and summary["duplicates"] == 1
        assert [r["line"] for r in summary["rejected"]] == [2, 3, 4, 7]
        assert "invalid JSON" in summary["rejected"][0]["reason"]

        headers = {
            "Authorization": f"Bearer {mint_token(env['JEFFREY_SECRET_KEY'], user_id, ['memories'], 60)}"
        }
        stored = httpx.get(f"{base}/api/v1/memories", headers=headers).json()["items"]
        assert len(stored) == 5 and {m["user_id"] for m in stored} == {user_id}

        again_code, again, _ = run_import(jsonl, base, env, user_id)
        assert again_code == 0 and again["imported"] == 0 and again["duplicates"] == 6
        assert len(httpx.get(f"{base}/api/v1/memories", headers=headers).json()["items"]) == 5

        csv_file = tmp_path / "memories.csv"
        csv_file.write_text(
            'text,created_at,meta\nmet Paul,2026-02-01T10:00:00Z,"{""k"": 1}"\n,,\nlate dinner,,\n'
        )
        csv_code, csv_summary, _ = run_import(csv_file, base, env, user_id)
        assert csv_code == 0 and csv_summary["imported"] == 2 and len(csv_summary["rejected"]) == 1
    finally:
        api.stop()
