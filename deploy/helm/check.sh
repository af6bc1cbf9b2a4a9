#!/usr/bin/env bash
# Lint, render and validate the k2rl chart. `make helm-check` runs this.
#
# With a `helm` binary (a user's machine): helm lint + helm template for the default (GPU)
# values and values-cpu-demo.yaml. Without one (CI): the chart is rendered by
# deploy/helm/render, a Go text/template + sprig renderer that mirrors Helm's engine, built
# offline from Debian's golang-go, golang-github-masterminds-sprig-dev and
# golang-k8s-sigs-yaml-dev. Either way every rendered manifest is validated against the
# Kubernetes OpenAPI schemas (kubernetes-validate, strict) for the chart's minimum Kubernetes
# version and the newest one it knows.
set -euo pipefail
cd "$(dirname "$0")/../.."
chart=deploy/helm/k2rl
python="${PYTHON:-.venv/bin/python}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

# name -> extra values: GPU defaults need a token; the second variant turns every optional
# object on (PodMonitor, Kubernetes-runtime RBAC, TLS, external Redis) so they render too.
cat >"$out/gpu.yaml" <<'VALUES'
auth: {token: check-token}
VALUES
cat >"$out/all-on.yaml" <<'VALUES'
auth: {token: check-token}
tls: {enabled: true, secretName: k2rl-tls}
redis: {enabled: false, url: "redis://redis.example:6379/0"}
gpuNode: {nodes: 2, checkpoints: {existingClaim: k2rl-checkpoints}}
monitoring: {podMonitor: {enabled: true, labels: {release: kube-prometheus-stack}}}
sandbox: {kubernetesRuntime: {enabled: true}}
otelCollector: {enabled: false, externalEndpoint: "http://tempo.observability:4317"}
VALUES

render() {  # render <output> <values files...>
  local target="$1"; shift
  local args=()
  for values in "$@"; do args+=(-f "$values"); done
  if command -v helm >/dev/null 2>&1; then
    helm template k2rl "$chart" --namespace k2rl "${args[@]}" >"$target"
  else
    "$out/render" --name k2rl --namespace k2rl "${args[@]}" "$chart" >"$target"
  fi
}

if command -v helm >/dev/null 2>&1; then
  echo "helm: $(helm version --short)"
  helm lint "$chart" -f "$out/gpu.yaml"
  helm lint "$chart" -f "$chart/values-cpu-demo.yaml"
else
  echo "no helm binary: building deploy/helm/render (GOPATH mode, Debian Go packages)"
  (cd deploy/helm/render && GO111MODULE=off GOPATH="${GOPATH:-/usr/share/gocode}" \
     GOCACHE="${GOCACHE:-$out/gocache}" go build -o "$out/render" .)
fi
render "$out/rendered-gpu.yaml" "$out/gpu.yaml"
render "$out/rendered-cpu-demo.yaml" "$chart/values-cpu-demo.yaml"
render "$out/rendered-all-on.yaml" "$out/all-on.yaml"
"$python" deploy/helm/validate.py "$out"/rendered-*.yaml
