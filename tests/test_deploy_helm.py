"""deploy/helm: the k2rl chart rendered without a helm binary and validated.

- the renderer (deploy/helm/render: Go text/template + sprig + Helm's helpers, built offline
  from Debian's Go packages) reproduces Helm behaviours a chart relies on: include, tpl,
  required, toYaml key order, float64 numbers from values, "<no value>" removed, -f overlays
  with null deleting a key;
- `deploy/helm/check.sh` (what `make helm-check` runs) renders the GPU defaults, the CPU
  demo and an everything-on variant and validates every object against the Kubernetes
  OpenAPI schemas (strict), and that validation rejects a broken object;
- the rendered chart matches the code: ports are k2rl.core.config's defaults,
  K2RL_DEPENDENCIES names Services that exist on those ports, every K2RL_* variable is a
  real setting; the GPU Pod colocates trainer / inference / checkpoint engine on one
  memory-backed /dev/shm without hostIPC, with torchrun rendezvous through the headless
  Service; the sandbox denies egress, mounts no token, autoscales; PDBs, probes, secret.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from k2rl.core.config import (
    DEFAULT_GRPC_PORTS,
    DEFAULT_METRICS_PORTS,
    SERVICE_NAMES,
    ServiceSettings,
)
from k2rl.core.testing import require_binary, running_in_ci

ROOT = Path(__file__).resolve().parents[1]
HELM = ROOT / "deploy" / "helm"
CHART = HELM / "k2rl"
GOPATH = Path("/usr/share/gocode")
APT_PACKAGES = "golang-go golang-github-masterminds-sprig-dev golang-k8s-sigs-yaml-dev"

sys.path.insert(0, str(HELM))
import validate as chart_validate  # noqa: E402  (deploy/helm/validate.py)


def _require_go_sources() -> None:
    for package in ("github.com/Masterminds/sprig", "sigs.k8s.io/yaml"):
        if not (GOPATH / "src" / package).is_dir():
            message = f"Go package {package} not under {GOPATH}; apt-get install {APT_PACKAGES}"
            if running_in_ci():
                pytest.fail(message)
            pytest.skip(message)


@pytest.fixture(scope="module")
def gocache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gocache")


@pytest.fixture(scope="module")
def renderer(tmp_path_factory: pytest.TempPathFactory, gocache: Path) -> Path:
    go = require_binary("go", "golang-go")
    _require_go_sources()
    binary = tmp_path_factory.mktemp("render") / "render"
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": str(GOPATH), "GOCACHE": str(gocache)}
    result = subprocess.run([go, "build", "-o", str(binary), "."], cwd=HELM / "render", env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return binary


def render(renderer: Path, chart: Path, *values: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    args = []
    for i, text in enumerate(values):
        path = tmp / f"values-{i}.yaml"
        path.write_text(text)
        args += ["-f", str(path)]
    return subprocess.run([str(renderer), "--name", "k2rl", "--namespace", "rl", *args, str(chart)],
                          capture_output=True, text=True, timeout=60)


def manifests(renderer: Path, tmp: Path, *values: str) -> list[dict[str, Any]]:
    result = render(renderer, CHART, *values, tmp=tmp)
    assert result.returncode == 0, result.stderr
    return chart_validate.load_manifests(result.stdout)


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


# --- the renderer behaves like Helm -----------------------------------------------------------

FIXTURE_TEMPLATE = """\
{{- define "fx.name" -}}{{ .Chart.Name }}-{{ .Release.Name }}{{- end -}}
name: {{ include "fx.name" . }}
big: {{ .Values.big }}
missing: "{{ .Values.missing }}"
tpl: {{ tpl .Values.tplText . }}
kept: {{ .Values.nested.kept }}
dropped: {{ hasKey .Values.nested "dropped" }}
yaml: {{ toYaml .Values.map | nindent 2 }}
sprig: {{ list 3 1 2 | sortAlpha | join "," }} {{ "a_b" | replace "_" "-" | upper }}
ns: {{ .Release.Namespace }} {{ .Template.Name }} {{ .Capabilities.APIVersions.Has "apps/v1" }}
"""


def test_renderer_matches_helm_semantics(renderer: Path, tmp_path: Path) -> None:
    chart = tmp_path / "fx"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: fx\nversion: 1.0.0\n")
    (chart / "values.yaml").write_text(
        "big: 1000000\ntplText: '{{ .Release.Name }}-x'\nnested: {kept: 1, dropped: 2}\nmap: {b: 2, a: 1}\n")
    (chart / "templates" / "cm.yaml").write_text(FIXTURE_TEMPLATE)
    result = render(renderer, chart, "nested: {dropped: null}\n", tmp=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "# Source: fx/templates/cm.yaml" in out
    assert "name: fx-k2rl" in out
    assert "big: 1e+06" in out  # values are read as float64, exactly as Helm does
    assert 'missing: ""' in out and "<no value>" not in out
    assert "tpl: k2rl-x" in out
    assert "kept: 1" in out and "dropped: false" in out  # null in an overlay deletes the key
    assert "yaml: \n  a: 1\n  b: 2" in out  # sigs.k8s.io/yaml sorts keys
    assert "sprig: 1,2,3 A-B" in out
    assert "ns: rl fx/templates/cm.yaml true" in out

    # Helm parses deeper paths first and reverse-lexically within a depth, so of duplicate
    # defines the shallowest, lexically first file's wins; tpl text can define and include.
    for rel, body in (("_b.tpl", "b"), ("_a.tpl", "a"), ("deep/_c.tpl", "c")):
        (chart / "templates" / rel).parent.mkdir(exist_ok=True)
        (chart / "templates" / rel).write_text(f'{{{{- define "fx.dup" -}}}}{body}{{{{- end -}}}}\n')
    (chart / "templates" / "dup.yaml").write_text(
        "dup: {{ include \"fx.dup\" . }}\n"
        "own: {{ tpl \"{{ define \\\"fx.own\\\" }}in-{{ .Release.Name }}{{ end }}{{ include \\\"fx.own\\\" . }}\" . }}\n")
    result = render(renderer, chart, tmp=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "dup: a" in result.stdout and "own: in-k2rl" in result.stdout
    for rel in ("_a.tpl", "_b.tpl", "deep/_c.tpl", "dup.yaml"):
        (chart / "templates" / rel).unlink()

    (chart / "templates" / "req.yaml").write_text('x: {{ required "set x please" .Values.x }}\n')
    failed = render(renderer, chart, tmp=tmp_path)
    assert failed.returncode == 1 and "set x please" in failed.stderr
    (chart / "templates" / "req.yaml").write_text('x: {{ env "HOME" }}\n')  # Helm removes env
    failed = render(renderer, chart, tmp=tmp_path)
    assert failed.returncode == 1 and 'function "env" not defined' in failed.stderr


# --- check.sh: render every variant, validate every object ----------------------------------

def test_helm_check_renders_and_validates_every_variant(renderer: Path, gocache: Path) -> None:
    require_binary("go", "golang-go")
    env = {**os.environ, "PYTHON": sys.executable, "GOCACHE": str(gocache)}
    result = subprocess.run(["bash", str(HELM / "check.sh")], capture_output=True, text=True, timeout=300,
                            env=env, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if "objects valid" in line]
    assert len(lines) == 3, result.stdout


def _deployment(**container: Any) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}},
                     "template": {"metadata": {"labels": {"a": "b"}},
                                  "spec": {"containers": [{"name": "c", "image": "i", **container}]}}}}


def test_validation_rejects_a_broken_object() -> None:
    assert chart_validate.validate(_deployment()) == []
    wrong_type = _deployment()
    wrong_type["spec"]["replicas"] = "two"
    assert any("spec/replicas" in e for e in chart_validate.validate(wrong_type))
    unknown_field = _deployment(imagePolicy="Always")  # strict: a typo of imagePullPolicy
    assert any("imagePolicy" in e for e in chart_validate.validate(unknown_field))
    with pytest.raises(Exception, match="duplicate key"):
        chart_validate.load_manifests("a: 1\na: 2\n")


# --- the chart agrees with the code -------------------------------------------------------------

GPU_VALUES = "auth: {token: t}\n"


def test_values_ports_are_the_configured_defaults() -> None:
    import yaml

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["ports"] == {name: {"grpc": DEFAULT_GRPC_PORTS[name], "metrics": DEFAULT_METRICS_PORTS[name]}
                               for name in SERVICE_NAMES}


def _containers(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for doc in docs:
        if doc["kind"] in {"Deployment", "StatefulSet"}:
            out += doc["spec"]["template"]["spec"]["containers"]
    return out


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def _setting_names() -> set[str]:
    from importlib.metadata import entry_points

    names = set(ServiceSettings.model_fields)
    for entry in entry_points(group="k2rl.services"):
        names |= set(entry.load().settings_type.model_fields)
    return names


@pytest.mark.parametrize("values", [GPU_VALUES, (CHART / "values-cpu-demo.yaml").read_text()],
                         ids=["gpu", "cpu-demo"])
def test_every_service_runs_on_its_ports_and_finds_the_others(renderer: Path, tmp_path: Path, values: str) -> None:
    docs = manifests(renderer, tmp_path, values)
    services = by_kind(docs, "Service")
    k2rl_containers = {c["name"].replace("-", "_"): c for c in _containers(docs)
                       if c["name"].replace("-", "_") in SERVICE_NAMES}
    assert set(k2rl_containers) == set(SERVICE_NAMES)
    settings = _setting_names()
    for name, container in k2rl_containers.items():
        env = _env(container)
        assert env["K2RL_PORT"] == str(DEFAULT_GRPC_PORTS[name])
        assert env["K2RL_METRICS_PORT"] == str(DEFAULT_METRICS_PORTS[name])
        assert env["K2RL_AUTH_TOKEN"]["secretKeyRef"]["key"] == "token"
        assert env["REDIS_URL"] == "redis://k2rl-redis:6379/0" and "k2rl-redis" in services
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://k2rl-otel-collector:4317"
        assert {p["containerPort"] for p in container["ports"]} >= {DEFAULT_GRPC_PORTS[name],
                                                                   DEFAULT_METRICS_PORTS[name]}
        for key in env:
            if key.startswith("K2RL_"):
                assert key.removeprefix("K2RL_").lower() in settings, f"{name}: {key} is not a setting"
        dependencies = json.loads(env["K2RL_DEPENDENCIES"])
        assert set(dependencies) == set(SERVICE_NAMES)
        for dep, address in dependencies.items():
            host, port = address.rsplit(":", 1)
            assert int(port) == DEFAULT_GRPC_PORTS[dep]
            assert int(port) in {p["port"] for p in services[host]["spec"]["ports"]}, (dep, address)
        if name != "trainer" or "torchrun" not in container.get("command", []):
            assert container["readinessProbe"]["grpc"]["port"] == DEFAULT_GRPC_PORTS[name]


def test_gpu_pod_colocates_the_weight_path_on_shared_memory(renderer: Path, tmp_path: Path) -> None:
    docs = manifests(renderer, tmp_path, GPU_VALUES, "gpuNode: {nodes: 4, gpusPerNode: 8}\n")
    sts = by_kind(docs, "StatefulSet")["k2rl-gpu"]
    pod = sts["spec"]["template"]["spec"]
    assert sts["spec"]["replicas"] == 4
    assert [c["name"] for c in pod["containers"]] == ["trainer", "inference", "checkpoint-engine"]
    assert pod["hostIPC"] is False
    shm = next(v for v in pod["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"]["medium"] == "Memory"
    for container in pod["containers"]:
        assert {"name": "shm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    anti = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert anti["topologyKey"] == "kubernetes.io/hostname"
    trainer = pod["containers"][0]
    assert trainer["resources"]["limits"]["nvidia.com/gpu"] == 8
    assert trainer["command"] == ["torchrun"] and "--nnodes=4" in trainer["args"]
    assert "--nproc-per-node=8" in trainer["args"]
    env = _env(trainer)
    headless = by_kind(docs, "Service")[sts["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    assert env["MASTER_ADDR"] == f"k2rl-gpu-0.{headless['metadata']['name']}.rl.svc"
    assert env["NODE_RANK"]["fieldRef"]["fieldPath"] == "metadata.labels['apps.kubernetes.io/pod-index']"
    assert "readinessProbe" not in trainer  # ranks > 0 serve no gRPC
    pdb = by_kind(docs, "PodDisruptionBudget")["k2rl-gpu"]
    assert pdb["spec"]["maxUnavailable"] == 0


def test_sandbox_is_isolated_and_autoscaled(renderer: Path, tmp_path: Path) -> None:
    docs = manifests(renderer, tmp_path, GPU_VALUES)
    pod = by_kind(docs, "Deployment")["k2rl-sandbox"]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["seccompProfile"]["type"] == "Unconfined"  # bwrap needs user namespaces
    assert pod["containers"][0]["securityContext"]["runAsNonRoot"] is True
    policy = by_kind(docs, "NetworkPolicy")["k2rl-sandbox"]
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"] and policy["spec"]["egress"] == []
    assert by_kind(docs, "HorizontalPodAutoscaler")["k2rl-sandbox"]["spec"]["maxReplicas"] >= 2
    assert "Role" not in {d["kind"] for d in docs}
    assert {"k2rl-controller", "k2rl-sandbox", "k2rl-judge", "k2rl-gpu"} <= set(by_kind(docs, "PodDisruptionBudget"))
    assert by_kind(docs, "Secret")["k2rl-auth"]["data"]["token"] == "dA=="  # base64("t")

    docs = manifests(renderer, tmp_path, GPU_VALUES, "sandbox: {kubernetesRuntime: {enabled: true}}\n")
    role = by_kind(docs, "Role")["k2rl-sandbox"]
    assert {tuple(r["resources"]) for r in role["rules"]} == {("pods",), ("pods/exec", "pods/log")}
    assert not any("*" in r["verbs"] for r in role["rules"])
    assert by_kind(docs, "NetworkPolicy")["k2rl-sandbox"]["spec"]["egress"]  # API server only


def test_auth_token_is_required_unless_an_existing_secret_is_named(renderer: Path, tmp_path: Path) -> None:
    result = render(renderer, CHART, tmp=tmp_path)
    assert result.returncode == 1 and "auth.token (or auth.existingSecret) is required" in result.stderr
    docs = manifests(renderer, tmp_path, "auth: {existingSecret: mine}\n")
    assert "Secret" not in {d["kind"] for d in docs}
    trainer = next(c for c in _containers(docs) if c["name"] == "judge")
    assert _env(trainer)["K2RL_AUTH_TOKEN"]["secretKeyRef"]["name"] == "mine"
