"""docker-compose.yml has the province's services, health checks and ordering, and no inline secret."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = {"api-server", "scheduler", "dag-processor", "triggerer"}


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


def test_services_and_profiles() -> None:
    services = _compose()["services"]
    assert AIRFLOW | {"postgres", "airflow-init", "simulator", "sftp", "redis", "worker"} <= set(services)
    assert services["redis"]["profiles"] == ["celery"] and services["worker"]["profiles"] == ["celery"]
    for name in AIRFLOW:
        assert "LocalExecutor" in services[name]["environment"]["AIRFLOW__CORE__EXECUTOR"], name
    assert services["worker"]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert services["api-server"]["environment"]["AIRFLOW__CORE__DAGS_FOLDER"].endswith("lianban_files/dags")


def test_health_checks_and_start_order() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        check = service.get("healthcheck", {})
        assert check.get("test") or name == "airflow-init", f"{name} has no health check"
    for name in AIRFLOW | {"worker"}:
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["airflow-init"]["condition"] == "service_completed_successfully", name
    assert services["worker"]["depends_on"]["redis"]["condition"] == "service_healthy"
    volumes = set(_compose()["volumes"])
    assert {"landing", "outbox", "reports"} <= volumes
    assert {
        "landing:/var/lianban/landing",
        "outbox:/var/lianban/outbox",
        "reports:/var/lianban/reports",
    } <= set(services["scheduler"]["volumes"])


def test_no_inline_secret() -> None:
    secretish = re.compile(r"(PASSWORD|SECRET|FERNET|TOKEN|KEY)", re.I)
    for name, service in _compose()["services"].items():
        assert service.get("env_file") in (None, ".env"), name
        for key, value in (service.get("environment") or {}).items():
            if secretish.search(key) and not key.endswith(("_FILE", "PASSWORD_ACCESS")):
                assert str(value).startswith("${"), f"{name}.{key} is written inline"
            assert not re.search(r"://[^:/@]+:[^$@][^@]*@", str(value)), (
                f"{name}.{key} has a password in a URL"
            )
    example = (ROOT / ".env.example").read_text(encoding="utf-8")
    for line in example.splitlines():
        key, _, value = line.partition("=")
        if secretish.search(key) and not line.startswith("#"):
            assert value in ("", "CHANGE-ME") or "CHANGE-ME" in value or "key_file" in value, key
