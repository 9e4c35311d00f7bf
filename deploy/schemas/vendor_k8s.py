"""Write the standalone-strict Kubernetes schemas of ``deploy/schemas/k8s/`` (kubeconform's layout).

Not run by the tests: it records how the vendored files were made, for the next Kubernetes
version. Its input is the ``local-strict`` schemas that the ``kubernetes-validate`` wheel
(PyPI) carries, generated from Kubernetes' OpenAPI document by openapi2jsonschema, the
generator of yannh/kubernetes-json-schema. Each kind's schema has its references into
``_definitions.json`` inlined, as ``openapi2jsonschema --stand-alone`` does, so that one file
validates one kind with no network and no reference resolution:

    pip download --no-deps kubernetes-validate==1.37.0 -d /tmp/kv
    python deploy/schemas/vendor_k8s.py /tmp/kv/kubernetes_validate-1.37.0-py3-none-any.whl v1.34.0
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path
from typing import Any

# The kinds deploy/k8s uses, as file names: <kind>[-<group>]-<version>.json.
KINDS = (
    "namespace-v1",
    "serviceaccount-v1",
    "configmap-v1",
    "secret-v1",
    "service-v1",
    "deployment-apps-v1",
    "job-batch-v1",
    "horizontalpodautoscaler-autoscaling-v2",
    "poddisruptionbudget-policy-v1",
    "networkpolicy-networking-v1",
)
OUT = Path(__file__).resolve().parent / "k8s"


def inline(node: Any, definitions: dict[str, Any], seen: tuple[str, ...] = ()) -> Any:
    """``node`` with every ``$ref`` replaced by the definition it names (siblings kept)."""
    if isinstance(node, list):
        return [inline(item, definitions, seen) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if ref is None:
        return {key: inline(value, definitions, seen) for key, value in node.items()}
    name = ref.rpartition("/$defs/")[2]
    if name in seen:  # only CRD schemas are recursive; none of KINDS reaches one
        raise ValueError(f"recursive definition {name}")
    target = inline(definitions[name], definitions, (*seen, name))
    return {**target, **{key: inline(value, definitions, seen) for key, value in node.items() if key != "$ref"}}


def main(wheel: str, version: str) -> None:
    prefix = f"kubernetes_validate/kubernetes-json-schema/{version}-local-strict/"
    with zipfile.ZipFile(wheel) as archive:
        definitions = json.loads(archive.read(prefix + "_definitions.json"))["$defs"]
        target = OUT / f"{version}-standalone-strict"
        target.mkdir(parents=True, exist_ok=True)
        for kind in KINDS:
            schema = inline(json.loads(archive.read(f"{prefix}{kind}.json")), definitions)
            schema.pop("$id", None)  # its relative references are gone with the inlining
            (target / f"{kind}.json").write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
