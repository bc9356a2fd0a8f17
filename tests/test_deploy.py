"""docker-compose.yml validated by `docker-compose config` (no Docker engine needed), and the Dockerfile installs
the same way the README does."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import ROOT

SECRETS = {"POSTGRES_PASSWORD": "pg-secret-1", "REDIS_PASSWORD": "redis-secret-2", "LAB_ADDRESS": "10.0.0.5",
           "OPTLAB_SERVER": "10.0.0.5"}  # fmt: skip


def config(*files: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("docker-compose")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is missing (apt-get install docker-compose)")
        pytest.skip("docker-compose is not installed")
    flags = [part for f in files for part in ("-f", f)]
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return subprocess.run([tool, *flags, "config"], cwd=ROOT, capture_output=True, text=True,
                          env={**clean, **(env if env is not None else SECRETS)})  # fmt: skip


@pytest.fixture(scope="module")
def compose() -> dict:  # type: ignore[type-arg]
    result = config("docker-compose.yml")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)  # type: ignore[no-any-return]


def test_services_and_their_order(compose: dict) -> None:  # type: ignore[type-arg]
    services = compose["services"]
    assert set(services) == {"redis", "postgres", "migrate", "app", "api", "worker-gpu", "worker-cpu"}
    assert services["migrate"]["command"] == ["python", "-m", "db.migrate"]
    for name in ("app", "api", "worker-gpu", "worker-cpu"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgresql://") and env["REDIS_URL"].startswith("redis://:")
        assert env["OPTLAB_AUTH"] == "true"  # logins are on for a server
    assert services["app"]["ports"][0]["target"] == 8501 and services["api"]["ports"][0]["target"] == 8502


def test_secrets_come_from_the_environment_and_only_the_ui_and_api_are_published(compose: dict) -> None:  # type: ignore[type-arg]
    text = (ROOT / "docker-compose.yml").read_text()
    assert "pg-secret-1" not in text and "redis-secret-2" not in text and "optlab:optlab@" not in text
    services = compose["services"]
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"app", "api"}
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "pg-secret-1"
    assert "--requirepass" in services["redis"]["command"] and "redis-secret-2" in services["redis"]["command"]
    command = services["redis"]["command"]
    options = dict(zip(command[1::2], command[2::2], strict=False))  # "redis-server", then --flag value pairs
    assert options["--appendonly"] == "yes" and options["--appendfsync"] == "everysec"  # queued runs survive a restart
    assert options["--requirepass"] == "redis-secret-2"
    assert "redis-data:/data" in str(services["redis"]["volumes"]) or any(
        v.get("target") == "/data" for v in services["redis"]["volumes"] if isinstance(v, dict)
    )
    assert "redis-secret-2@redis:6379" in services["app"]["environment"]["REDIS_URL"]
    missing = config("docker-compose.yml", env={})
    said = missing.stderr + missing.stdout
    assert missing.returncode != 0 and ("set POSTGRES_PASSWORD in .env" in said or "set REDIS_PASSWORD" in said)


def test_more_gpu_machines_join_the_same_redis_and_postgres() -> None:
    exposed = config("docker-compose.yml", "docker-compose.expose.yml")
    assert exposed.returncode == 0, exposed.stderr
    services = yaml.safe_load(exposed.stdout)["services"]
    ports = [p for name in ("redis", "postgres") for p in services[name]["ports"]]
    hosts = {p["host_ip"] if isinstance(p, dict) else p.split(":")[0] for p in ports}  # long or short syntax
    assert hosts == {"10.0.0.5"} and len(ports) == 2
    joined = config("docker-compose.worker.yml")
    assert joined.returncode == 0, joined.stderr
    workers = yaml.safe_load(joined.stdout)["services"]
    assert set(workers) == {"worker-gpu0"}
    env = workers["worker-gpu0"]["environment"]
    assert env["DATABASE_URL"] == "postgresql://optlab:pg-secret-1@10.0.0.5:5432/optlab"
    assert env["REDIS_URL"] == "redis://:redis-secret-2@10.0.0.5:6379/0"
    assert workers["worker-gpu0"]["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"


def test_one_image_for_everything_and_a_gpu_reservation(compose: dict) -> None:  # type: ignore[type-arg]
    services = compose["services"]
    ours = ("migrate", "app", "api", "worker-gpu", "worker-cpu")
    assert {services[s]["image"] for s in ours} == {"optimizer-lab:latest"}
    devices = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert services["worker-cpu"]["environment"]["CUDA_VISIBLE_DEVICES"] == ""


def test_dockerfile_installs_like_the_readme() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install -r requirements.txt" in dockerfile
    assert "torch==2.13.0" in (ROOT / "requirements.txt").read_text()
