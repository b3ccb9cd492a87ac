"""Offline checks of the deployment files (no Docker engine, no cluster needed).

- every Kubernetes manifest under k8s/ validates against the official JSON schemas (strict,
  Kubernetes 1.30, via `kubernetes-validate`); kustomization.yaml, skaffold.yaml and the Temporal
  Helm values are checked structurally;
- docker-compose.temporal.yml validates against the Compose Specification JSON schema (the copy
  shipped by the `check-jsonschema` package);
- consistency: env var names are Settings fields, API port / probe paths agree between Dockerfile,
  compose and k8s, the worker's grace period outlasts its graceful shutdown, the same three
  Temporal search attributes are registered in compose and k8s, and the image gets the wheel's
  packages but not the dev stack (devstack/).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

import ticketing.temporal

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.temporal.yml"
SKAFFOLD = ROOT / "skaffold.yaml"
KUSTOMIZATION = K8S / "kustomization.yaml"
HELM_VALUES = K8S / "temporal" / "values.yaml"

K8S_VERSION = "1.30"
APP_IMAGE = "ticketing"
API_PORT = 8000
WORKER_METRICS_PORT = 9464
SEARCH_ATTRIBUTES = {key.name for key in ticketing.temporal.SEARCH_ATTRIBUTES}
# Secrets are referenced, never committed: (secret name, key) pairs every app container needs.
SECRET_REFS = {
    ("jwt-secret", "JWT_KEY"),
    ("stripe-secret", "STRIPE_KEY"),
    ("stripe-secret", "STRIPE_WEBHOOK_SECRET"),
}
# Credentials of managed services: from Secrets marked optional (absent = the in-cluster services).
OPTIONAL_SECRET_REFS = {
    ("mongodb-credentials", "MONGO_URL"),
    ("temporal-credentials", "TEMPORAL_API_KEY"),
    ("nats-credentials", "NATS_TOKEN"),
    ("nats-credentials", "NATS_USER"),
    ("nats-credentials", "NATS_PASSWORD"),
}
OPTIONAL_SECRET_VOLUMES = {"temporal-tls", "nats-tls", "mongodb-tls"}
# Runtime variables of the image itself, not app settings (`ticketing api` reads HOST directly).
IMAGE_ENV_NOT_SETTINGS = {"PATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "HOST"}


# ----------------------------------------------------------------------------- loaders


def _yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifest_files() -> list[Path]:
    """Every Kubernetes manifest under k8s/ (not the kustomization nor the Helm values)."""
    files = sorted(K8S.rglob("*.yaml")) + sorted(K8S.rglob("*.yml"))
    return [f for f in files if f not in {KUSTOMIZATION, HELM_VALUES}]


@cache
def k8s_objects() -> list[dict[str, Any]]:
    return [doc for f in manifest_files() for doc in _yaml_docs(f)]


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    found = [o for o in k8s_objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected exactly one {kind}/{name} under k8s/, found {len(found)}"
    return found[0]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"]


def image_name(image: str) -> str:
    """`registry:5000/team/ticketing:1.2@sha256:..` -> `ticketing`."""
    last = image.split("@")[0].rsplit("/", 1)[-1]
    return last.split(":")[0]


def app_containers() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, container) for every container running the ticketing image."""
    out = []
    for obj in k8s_objects():
        if obj["kind"] in {"Deployment", "StatefulSet", "Job", "DaemonSet"}:
            for c in pod_spec(obj).get("containers", []) + pod_spec(obj).get("initContainers", []):
                if image_name(c["image"]) == APP_IMAGE:
                    out.append((obj, c))
    return out


def app_container(deployment: str) -> dict[str, Any]:
    containers = [
        c for c in pod_spec(k8s_object("Deployment", deployment))["containers"] if image_name(c["image"]) == APP_IMAGE
    ]
    assert len(containers) == 1, f"{deployment} must run exactly one {APP_IMAGE} container"
    return containers[0]


def config_map() -> dict[str, str]:
    data = k8s_object("ConfigMap", "ticketing-config")["data"]
    assert all(isinstance(v, str) for v in data.values()), "ConfigMap values must be strings"
    return data


def container_port(container: dict[str, Any], port: int | str) -> int:
    """Resolve a probe/Service port (number or port name) to the container's port number."""
    if isinstance(port, int):
        return port
    named = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    assert port in named, f"port name {port!r} is not declared by container {container['name']}"
    return named[port]


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def compose_env(service: str) -> dict[str, Any]:
    env = compose()["services"][service].get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return env


def compose_command(service: str) -> list[str]:
    cmd = compose()["services"][service].get("command")
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd or [])


def duration_seconds(value: str | int) -> float:
    """Compose durations such as `60s`, `1m30s`, `500ms`."""
    if isinstance(value, int):
        return float(value)
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", value)
    assert parts, f"bad duration {value!r}"
    assert "".join(n + u for n, u in parts) == value, f"bad duration {value!r}"
    return sum(float(n) * units[u] for n, u in parts)


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """Instructions per stage, continuation lines joined, comments dropped, ARGs substituted in FROM."""
    logical: list[str] = []
    buf = ""
    for line in DOCKERFILE.read_text().splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    args: dict[str, str] = {}
    stages: list[list[tuple[str, str]]] = []
    for raw in logical:
        instr, _, rest = raw.strip().partition(" ")
        instr, rest = instr.upper(), rest.strip()
        if instr == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
            continue
        if instr == "FROM":
            rest = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m[1] or m[2], ""), rest)
            stages.append([])
        assert stages, f"instruction before FROM: {raw}"
        stages[-1].append((instr, rest))
    return stages


def dockerfile_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instr, rest in stage:
        if instr == "ENV":
            for token in shlex.split(rest):
                key, _, value = token.partition("=")
                env[key] = value
    return env


def exec_form(rest: str) -> list[str]:
    value = json.loads(rest)
    assert isinstance(value, list), f"use the exec (JSON array) form: {rest}"
    return value


def settings_env_names() -> set[str]:
    from ticketing.settings import Settings

    prefix = str(Settings.model_config.get("env_prefix") or "")
    names = set()
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias if isinstance(field.validation_alias, str) else field.alias
        names.add((prefix + (alias or field_name)).upper())
    return names


def search_attribute_creates(script: str) -> list[tuple[list[str], list[str]]]:
    """(names, types) of every `temporal operator search-attribute create` in a shell script."""
    out = []
    for match in re.finditer(r"search-attribute\s+create\b([^\n;&|]*)", script):
        args = match.group(1)
        names = re.findall(r"--name[\s=]+[\"']?(\w+)", args)
        types = re.findall(r"--type[\s=]+[\"']?(\w+)", args)
        out.append((names, types))
    return out


def assert_registers_search_attributes(script: str, where: str) -> None:
    creates = search_attribute_creates(script)
    assert creates, f"{where}: no `temporal operator search-attribute create`"
    for names, types in creates:
        # The CLI takes several --name but a single --type that only applies to the first name,
        # so each attribute gets its own command.
        assert len(names) == 1, f"{where}: one --name X --type Keyword per create"
        assert types == ["Keyword"], f"{where}: one --name X --type Keyword per create"
    registered = [n for names, _ in creates for n in names]
    assert sorted(registered) == sorted(SEARCH_ATTRIBUTES), f"{where}: registers {registered}"


# ------------------------------------------------------------- (a) Kubernetes schemas


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_k8s_manifest_validates_against_kubernetes_schema(path: Path) -> None:
    docs = _yaml_docs(path)
    assert docs, f"{path} has no YAML document"
    for doc in docs:
        what = f"{path.relative_to(ROOT)}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        # Raises ValidationError (bad field, wrong type, unknown field: strict) or
        # SchemaNotFoundError (unknown kind/apiVersion for this Kubernetes version).
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{what}: {'.'.join(map(str, e.path))}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            pytest.fail(f"{what}: {e.message}")
        # namespace-agnostic: the namespace comes from kubectl -n / kustomize / skaffold
        assert "namespace" not in doc["metadata"], f"{what}: must not hard-code a namespace"


def test_k8s_has_expected_objects_and_no_committed_secrets() -> None:
    kinds = {(o["kind"], o["metadata"]["name"]) for o in k8s_objects()}
    expected = {
        ("ConfigMap", "ticketing-config"),
        ("Deployment", "ticketing-api"),
        ("Service", "ticketing-api"),
        ("Deployment", "ticketing-worker"),
        ("StatefulSet", "mongodb"),
        ("Service", "mongodb"),
        ("StatefulSet", "nats"),
        ("Service", "nats"),
        ("Ingress", "ticketing"),
        ("Job", "temporal-search-attributes"),
        ("Deployment", "temporal-ui"),
        ("Service", "temporal-ui"),
    }
    assert expected <= kinds, f"missing: {expected - kinds}"
    assert not [o for o in k8s_objects() if o["kind"] == "Secret"], "never commit Secret values"
    # Stateful backends keep their data on a PVC; MongoDB's Service is headless.
    for name in ("mongodb", "nats"):
        sts = k8s_object("StatefulSet", name)
        assert sts["spec"]["volumeClaimTemplates"], f"{name} needs a PVC"
        assert sts["spec"]["serviceName"] == name
    assert k8s_object("Service", "mongodb")["spec"].get("clusterIP") == "None"
    nats_args = pod_spec(k8s_object("StatefulSet", "nats"))["containers"][0].get("args", [])
    assert "-js" in nats_args or "--jetstream" in nats_args, "NATS must run with JetStream"


def test_k8s_secrets_come_from_secret_key_refs() -> None:
    secret_names = {key for _, key in SECRET_REFS | OPTIONAL_SECRET_REFS} - {"MONGO_URL"}
    assert not secret_names & set(config_map()), "secrets must not be in the ConfigMap"
    # The in-cluster MongoDB URL may stay in the ConfigMap, without credentials.
    assert "@" not in config_map()["MONGO_URL"], "a MONGO_URL with credentials belongs in mongodb-credentials"
    for workload, container in app_containers():
        where = workload["metadata"]["name"]
        refs = {
            (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"]): e["valueFrom"][
                "secretKeyRef"
            ].get("optional", False)
            for e in container.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {})
        }
        assert set(refs) == SECRET_REFS | OPTIONAL_SECRET_REFS, f"{where}: secretKeyRefs {set(refs)}"
        assert not any(refs[r] for r in SECRET_REFS), f"{where}: the app's own secrets are required"
        assert all(refs[r] for r in OPTIONAL_SECRET_REFS), f"{where}: managed-service credentials are optional"
        for e in container.get("env", []):
            if e["name"] in secret_names:
                assert "value" not in e, f"{e['name']} must come from a Secret, not a literal"
        volumes = {v["name"]: v for v in pod_spec(workload).get("volumes", [])}
        mounted = {m["name"] for m in container.get("volumeMounts", [])}
        for name in OPTIONAL_SECRET_VOLUMES:
            assert volumes[name]["secret"] == {"secretName": name, "optional": True}, f"{where}: volume {name}"
            assert name in mounted, f"{where}: {name} not mounted"


def test_k8s_config_passes_the_prod_checks() -> None:
    """The ConfigMap's settings (APP_ENV=prod) start: the in-cluster plain-text services are
    explicitly allowed, and nothing else is refused."""
    from ticketing.settings import Settings

    values: dict[str, Any] = {name.lower(): value for name, value in config_map().items()}
    settings = Settings(**values, jwt_key="x" * 40, stripe_key="sk_live_x", stripe_webhook_secret="whsec_x")
    assert settings.app_env == "prod"
    assert settings.allow_insecure_transport is True
    with pytest.raises(ValueError, match="ALLOW_INSECURE_TRANSPORT"):
        Settings(
            **{**values, "allow_insecure_transport": "false"},
            jwt_key="x" * 40,
            stripe_key="sk_live_x",
            stripe_webhook_secret="whsec_x",
        )


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    assert "namespace" not in kustomization, "namespace-agnostic"
    resources_ = kustomization["resources"]
    assert len(resources_) == len(set(resources_)), "duplicate resources"
    for r in resources_:
        assert (K8S / r).is_file(), f"kustomization resource {r} does not exist"
    listed = {(K8S / r).resolve() for r in resources_}
    assert listed == {f.resolve() for f in manifest_files()}, "kustomization must list exactly the manifests"
    assert {i["name"] for i in kustomization.get("images", [])} <= {APP_IMAGE}


def test_skaffold_builds_the_image_and_deploys_the_manifests() -> None:
    skaffold = yaml.safe_load(SKAFFOLD.read_text())
    assert re.fullmatch(r"skaffold/v4beta\d+", skaffold["apiVersion"]), skaffold["apiVersion"]
    assert skaffold["kind"] == "Config"
    artifacts = skaffold["build"]["artifacts"]
    assert [a["image"] for a in artifacts] == [APP_IMAGE]
    assert (ROOT / artifacts[0].get("context", ".") / artifacts[0]["docker"]["dockerfile"]).resolve() == DOCKERFILE
    raw = skaffold["manifests"]["rawYaml"]
    assert {(ROOT / p).resolve() for p in raw} == {f.resolve() for f in manifest_files()}
    assert "kubectl" in skaffold["deploy"]


def test_temporal_helm_values_fit_the_app() -> None:
    text = HELM_VALUES.read_text()
    values = yaml.safe_load(text)
    assert isinstance(values, dict)
    persistence = values["server"]["config"]["persistence"]
    for store in ("default", "visibility"):
        assert persistence[store]["driver"] == "sql"
        assert persistence[store]["sql"]["driver"].startswith("postgres")
    assert "password" not in persistence["default"]["sql"], "use existingSecret, not a password"
    namespaces = [n["name"] for n in values["server"]["config"]["namespaces"]["namespace"]]
    assert config_map()["TEMPORAL_NAMESPACE"] in namespaces
    assert values["web"]["enabled"] is False, "the UI comes from k8s/temporal/ui.yaml"
    # Release `temporal` -> Service `temporal-frontend`, which the ConfigMap points at.
    commands = re.sub(r"\\\n#\s*", " ", text)  # join the documented, backslash-continued commands
    assert re.search(r"helm upgrade --install temporal temporal/temporal .*-f k8s/temporal/values\.yaml", commands)
    assert config_map()["TEMPORAL_ADDRESS"] == "temporal-frontend:7233"


def test_temporal_ui_listens_on_8080() -> None:
    ui = pod_spec(k8s_object("Deployment", "temporal-ui"))["containers"][0]
    assert image_name(ui["image"]) == "ui"
    assert [p["containerPort"] for p in ui["ports"]] == [8080]
    svc = k8s_object("Service", "temporal-ui")
    assert [p["port"] for p in svc["spec"]["ports"]] == [8080]
    assert compose()["services"]["temporal-ui"]["ports"] == ["8080:8080"]


# ------------------------------------------------------------------ (b) Compose schema


@cache
def compose_schema() -> dict[str, Any]:
    schema_file = resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
    return json.loads(schema_file.read_text())


def test_compose_validates_against_compose_spec_schema() -> None:
    schema = compose_schema()
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    errors = sorted(validator_cls(schema).iter_errors(compose()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_compose_startup_order_and_healthchecks() -> None:
    services = compose()["services"]
    expected = {
        "postgresql",
        "temporal",
        "temporal-search-attributes",
        "temporal-ui",
        "mongodb",
        "nats",
        "api",
        "worker",
    }
    assert expected <= set(services), f"missing: {expected - set(services)}"
    for name, svc in services.items():
        # The schema only says "string"; Docker rejects anything else at `up` time.
        assert re.fullmatch(r"no|always|unless-stopped|on-failure(:\d+)?", svc.get("restart", "no")), name
        deps = svc.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: depends_on must use conditions"
        for dep, spec in deps.items():
            condition = spec["condition"]
            assert condition in {"service_healthy", "service_completed_successfully", "service_started"}
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}, which has no healthcheck"
    for name in ("api", "worker"):
        deps = services[name]["depends_on"]
        for backend in ("mongodb", "nats", "temporal"):
            assert deps[backend]["condition"] == "service_healthy", f"{name} -> {backend}"
        assert deps["temporal-search-attributes"]["condition"] == "service_completed_successfully"
        assert "healthcheck" in services[name]
        assert services[name]["build"]["dockerfile"] == DOCKERFILE.name
    assert services["api"]["image"] == services["worker"]["image"], "one image for api and worker"
    assert "-js" in compose_command("nats"), "NATS must run with JetStream"
    assert any(str(v).endswith(":/data") for v in services["nats"]["volumes"]), "NATS needs a volume"


# ------------------------------------------------------------------- (c) consistency


def test_env_names_are_settings() -> None:
    known = settings_env_names()
    used: dict[str, set[str]] = {
        "k8s ConfigMap ticketing-config": set(config_map()),
        "compose api": set(compose_env("api")),
        "compose worker": set(compose_env("worker")),
        "Dockerfile ENV": set(dockerfile_env(dockerfile_stages()[-1])) - IMAGE_ENV_NOT_SETTINGS,
    }
    for workload, container in app_containers():
        where = f"k8s {workload['kind']}/{workload['metadata']['name']}"
        used[where] = {e["name"] for e in container.get("env", [])}
        for source in container.get("envFrom", []):
            assert "prefix" not in source, f"{where}: envFrom prefix would rename settings"
            ref = source.get("configMapRef") or source.get("secretRef") or {}
            assert ref.get("name") == "ticketing-config", f"{where}: unexpected envFrom {source}"
    assert app_containers(), "no container runs the ticketing image"
    unknown = {where: sorted(names - known) for where, names in used.items() if names - known}
    assert not unknown, f"env vars that are not Settings fields: {unknown}"
    # The essentials are actually set everywhere the app runs.
    essentials = {"MONGO_URL", "NATS_URL", "TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TEMPORAL_TASK_QUEUE"}
    assert essentials <= set(config_map())
    assert essentials <= set(compose_env("api"))
    assert essentials <= set(compose_env("worker"))


def test_compose_and_k8s_agree_on_settings() -> None:
    cm = config_map()
    api_env = compose_env("api")
    assert api_env == compose_env("worker"), "api and worker share one environment"
    for name in (
        "MONGO_DB",
        "NATS_STREAM",
        "TEMPORAL_NAMESPACE",
        "TEMPORAL_TASK_QUEUE",
        "CURRENCY",
        "PORT",
        "WORKER_METRICS_PORT",
        "WORKER_GRACEFUL_SHUTDOWN_SECONDS",
    ):
        assert str(api_env[name]) == cm[name], f"{name}: compose {api_env[name]!r} != k8s {cm[name]!r}"
    assert cm["APP_ENV"] == "prod", "the cluster runs with APP_ENV=prod (secrets required)"


def test_dockerfile_builds_a_small_non_root_image_with_uv() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage build"
    builder, final = stages[0], stages[-1]
    for stage in (builder, final):
        assert re.fullmatch(r"python:3\.11-slim(\S*)?( AS \w+)?", stage[0][1], re.IGNORECASE), stage[0][1]
    runs = " ".join(rest for instr, rest in builder if instr == "RUN")
    assert re.search(r"pip install .*\buv==", runs), "uv comes from the uv PyPI package, pinned"
    assert re.search(r"uv pip sync --require-hashes requirements\.lock", runs), "runtime deps from the hashed lock"
    assert "requirements-dev.lock" not in runs
    assert not re.search(r"--extra|--all-extras", runs), "the dev extra is not installed in the image"
    users = [rest for instr, rest in final if instr == "USER"]
    assert users, "the final image runs as non-root"
    assert users[-1].split(":")[0] not in {"root", "0"}, "the final image runs as non-root"
    assert not [rest for instr, rest in final if instr == "RUN" and "uv" in rest.split()], "no uv at runtime"
    assert exec_form(next(rest for instr, rest in reversed(final) if instr == "CMD")) == ["ticketing", "api"]


def test_image_has_the_runtime_packages_and_no_dev_stack() -> None:
    wheel = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    copied = {src for instr, rest in dockerfile_stages()[0] if instr == "COPY" for src in shlex.split(rest)[:-1]}
    assert set(wheel["packages"]) <= copied, "the image copies every package of the wheel"
    assert "devstack" not in {*wheel["packages"], *copied}, "devstack/ (make run, the tests' servers) is dev-only"
    # There, `ticketing dev` says so in one line instead of a traceback.
    no_devstack = "import sys; sys.modules['devstack'] = None; from ticketing.cli import main; sys.exit(main(['dev']))"
    done = subprocess.run([sys.executable, "-c", no_devstack], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert "make run" in line


def test_api_port_and_probe_paths_agree() -> None:
    final = dockerfile_stages()[-1]
    exposed = {int(p.split("/")[0]) for instr, rest in final if instr == "EXPOSE" for p in rest.split()}
    assert API_PORT in exposed
    assert WORKER_METRICS_PORT in exposed
    assert dockerfile_env(final)["PORT"] == str(API_PORT)
    assert dockerfile_env(final)["HOST"] == "0.0.0.0", "uvicorn must listen on all interfaces in a container"

    # compose
    api = compose()["services"]["api"]
    assert compose_command("api") == ["ticketing", "api"]
    assert str(compose_env("api")["PORT"]) == str(API_PORT)
    assert any(str(p).split(":")[-1] == str(API_PORT) for p in api["ports"])
    assert f":{API_PORT}/healthz" in " ".join(api["healthcheck"]["test"])

    # k8s
    assert config_map()["PORT"] == str(API_PORT)
    deployment = k8s_object("Deployment", "ticketing-api")
    c = app_container("ticketing-api")
    assert c["command"] == ["ticketing", "api"]
    assert [p["containerPort"] for p in c["ports"]] == [API_PORT]
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert c[probe]["httpGet"]["path"] == path, probe
        assert container_port(c, c[probe]["httpGet"]["port"]) == API_PORT, probe
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(API_PORT)
    assert annotations["prometheus.io/path"] == "/metrics"

    svc = k8s_object("Service", "ticketing-api")
    assert svc["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    (svc_port,) = svc["spec"]["ports"]
    assert container_port(c, svc_port.get("targetPort", svc_port["port"])) == API_PORT
    assert svc_port["port"] == API_PORT

    ingress = k8s_object("Ingress", "ticketing")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    paths = [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert [p["path"] for p in paths] == ["/api/"], "only /api/ is exposed"
    backend = paths[0]["backend"]["service"]
    assert backend["name"] == "ticketing-api"
    assert backend["port"]["number"] == svc_port["port"]


def test_worker_deployment_shuts_down_gracefully() -> None:
    cm = config_map()
    graceful = int(cm["WORKER_GRACEFUL_SHUTDOWN_SECONDS"])
    deployment = k8s_object("Deployment", "ticketing-worker")
    spec = pod_spec(deployment)
    assert spec["terminationGracePeriodSeconds"] > graceful, "SIGKILL would cut the graceful shutdown"
    assert deployment["spec"]["replicas"] >= 2
    c = app_container("ticketing-worker")
    assert c["command"] == ["ticketing", "worker"]
    assert c["image"] == app_container("ticketing-api")["image"], "one image for api and worker"
    assert int(cm["WORKER_METRICS_PORT"]) == WORKER_METRICS_PORT
    assert WORKER_METRICS_PORT in [p["containerPort"] for p in c["ports"]]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(WORKER_METRICS_PORT)
    for probe in ("livenessProbe", "readinessProbe"):
        if "httpGet" in c.get(probe, {}):
            assert container_port(c, c[probe]["httpGet"]["port"]) == WORKER_METRICS_PORT

    worker = compose()["services"]["worker"]
    assert compose_command("worker") == ["ticketing", "worker"]
    graceful = int(compose_env("worker")["WORKER_GRACEFUL_SHUTDOWN_SECONDS"])
    assert duration_seconds(worker["stop_grace_period"]) > graceful
    assert f":{WORKER_METRICS_PORT}/metrics" in " ".join(worker["healthcheck"]["test"])


def test_search_attributes_registered_in_compose_and_k8s() -> None:
    svc = compose()["services"]["temporal-search-attributes"]
    assert image_name(svc["image"]) == "admin-tools"
    assert svc["depends_on"]["temporal"]["condition"] == "service_healthy"
    entrypoint = svc.get("entrypoint") or []
    script = " ".join(entrypoint if isinstance(entrypoint, list) else [entrypoint]) + "\n"
    script += "\n".join(
        compose_command("temporal-search-attributes") if isinstance(svc["command"], str) else svc["command"]
    )
    assert_registers_search_attributes(script, "compose temporal-search-attributes")

    job = k8s_object("Job", "temporal-search-attributes")
    (container,) = pod_spec(job)["containers"]
    assert image_name(container["image"]) == "admin-tools"
    assert_registers_search_attributes(
        "\n".join(container.get("command", []) + container.get("args", [])), "k8s Job temporal-search-attributes"
    )
    # The Job talks to the same Temporal as the app.
    env = {e["name"]: e for e in container["env"]}
    for name in ("TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE"):
        ref = env[name]["valueFrom"]["configMapKeyRef"]
        assert (ref["name"], ref["key"]) == ("ticketing-config", name)
