"""docker-compose.yml validated by `docker-compose config` (no Docker engine needed), and the Dockerfile installs
the same way the README does."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def compose() -> dict:  # type: ignore[type-arg]
    tool = shutil.which("docker-compose")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is missing (apt-get install docker-compose)")
        pytest.skip("docker-compose is not installed")
    result = subprocess.run([tool, "-f", "docker-compose.yml", "config"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)  # type: ignore[no-any-return]


def test_services_and_their_order(compose: dict) -> None:  # type: ignore[type-arg]
    services = compose["services"]
    assert set(services) == {"redis", "postgres", "migrate", "app", "worker-gpu", "worker-cpu"}
    assert services["migrate"]["command"] == ["python", "-m", "db.migrate"]
    for name in ("app", "worker-gpu", "worker-cpu"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgresql://") and env["REDIS_URL"].startswith("redis://redis:")
    assert services["app"]["ports"][0]["target"] == 8501


def test_one_image_for_everything_and_a_gpu_reservation(compose: dict) -> None:  # type: ignore[type-arg]
    services = compose["services"]
    ours = ("migrate", "app", "worker-gpu", "worker-cpu")
    assert {services[s]["image"] for s in ours} == {"optimizer-lab:latest"}
    devices = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert services["worker-cpu"]["environment"]["CUDA_VISIBLE_DEVICES"] == ""


def test_dockerfile_installs_like_the_readme() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install -r requirements.txt" in dockerfile
    assert "torch==2.13.0" in (ROOT / "requirements.txt").read_text()
