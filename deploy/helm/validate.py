"""Validate rendered Helm manifests: YAML without duplicate keys, and every object against the
Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown fields are errors) for the
chart's minimum Kubernetes version and the newest one the package ships. Custom resources
(PodMonitor) have no schema there; they are reported as not schema-validated.

    python deploy/helm/validate.py rendered.yaml...
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml
from kubernetes_validate.utils import latest_version

MIN_KUBERNETES = "1.28.0"  # Chart.yaml kubeVersion; apps.kubernetes.io/pod-index needs it
CUSTOM_RESOURCES = {("monitoring.coreos.com/v1", "PodMonitor")}


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys (kubectl / the API server do too)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in keys:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            keys.add(key)
        return super().construct_mapping(node, deep)


def load_manifests(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.load_all(text, Loader=UniqueKeyLoader) if doc]


def validate(doc: dict[str, Any]) -> list[str]:
    """Errors of one object; empty when valid. Raises KeyError for kinds without a schema."""
    if (doc.get("apiVersion"), doc.get("kind")) in CUSTOM_RESOURCES:
        raise KeyError(f"{doc['apiVersion']} {doc['kind']}")
    errors = []
    for version in (MIN_KUBERNETES, latest_version()):
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = "/".join(str(p) for p in error.path)
            errors.append(f"{version}: {path}: {error.message}")
    return errors


def main(paths: list[str]) -> int:
    failed = 0
    for path in paths:
        docs = load_manifests(Path(path).read_text())
        unvalidated = []
        for doc in docs:
            name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            try:
                errors = validate(doc)
            except KeyError:
                unvalidated.append(name)
                continue
            for error in errors:
                print(f"{path}: {name}: {error}", file=sys.stderr)
                failed += 1
        note = f"; not schema-validated (custom resources): {', '.join(unvalidated)}" if unvalidated else ""
        print(f"{path}: {len(docs) - len(unvalidated)} objects valid{note}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
