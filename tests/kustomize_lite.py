"""A deliberately small kustomize renderer for the k8s/ tests, used when no kustomize binary is available.

It covers exactly the kustomization features k8s/ uses, and refuses any other key, so a new feature cannot be
silently ignored:
- `resources`: YAML files (all documents) and directories holding a kustomization (rendered recursively, so a
  base's own namespace/labels/patches apply before the overlay's);
- `patches`: `path:` strategic-merge patches (one document per file; the target is the patch's kind + name) and
  inline `patch:` JSON 6902 operations (add / replace / remove) with a `target` of kind + name;
- `namespace`: set on every namespaced resource, and on RoleBinding subjects of kind ServiceAccount;
- `labels` with `pairs` only: added to metadata.labels (kustomize's default: no selectors, no pod templates).

Strategic merge here is a simplification of Kubernetes': maps merge recursively, `null` deletes a key, lists of
maps that all have a `name` merge by name, every other list is replaced. It does not know per-field patch
strategies (`$patch`, `$retainKeys`, merge keys other than `name`, such as ports' `containerPort`), ordering
directives, generators, `images`, `replicas`, name prefixes/suffixes, components or remote bases. When a real
`kubectl kustomize` / `kustomize` binary is found, tests/test_k8s_manifests.py checks this renderer against it.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass", "StorageClass"}
KNOWN_KEYS = {"apiVersion", "kind", "resources", "patches", "namespace", "labels"}


class KustomizeLiteError(Exception):
    """The kustomization uses something this renderer does not implement, or is inconsistent."""


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def strategic_merge(base: Any, patch: Any) -> Any:
    """Merge `patch` into `base` (see the module docstring for what is and is not covered)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = strategic_merge(merged[key], value)
            else:
                merged[key] = copy.deepcopy(value)
        return merged
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(item, dict) and "name" in item for item in base + patch)
    ):
        merged_list = [copy.deepcopy(item) for item in base]
        index = {item["name"]: i for i, item in enumerate(merged_list)}
        for item in patch:
            if item["name"] in index:
                merged_list[index[item["name"]]] = strategic_merge(merged_list[index[item["name"]]], item)
            else:
                merged_list.append(copy.deepcopy(item))
        return merged_list
    return copy.deepcopy(patch)


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise KustomizeLiteError(f"JSON pointer must start with '/': {path}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json6902(doc: dict[str, Any], operations: list[dict[str, Any]]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    for op in operations:
        *parents, last = _pointer(op["path"])
        node: Any = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        kind = op["op"]
        if kind not in ("add", "replace", "remove"):
            raise KustomizeLiteError(f"JSON 6902 op {kind!r} is not implemented")
        if isinstance(node, list):
            if kind == "add":
                node.insert(len(node) if last == "-" else int(last), op["value"])
            elif kind == "replace":
                node[int(last)] = op["value"]
            else:
                del node[int(last)]
        else:
            if kind in ("replace", "remove") and last not in node:
                raise KustomizeLiteError(f"JSON 6902 {kind} of missing path {op['path']}")
            if kind == "remove":
                del node[last]
            else:
                node[last] = op["value"]
    return doc


def _matches(doc: dict[str, Any], kind: str, name: str) -> bool:
    return doc.get("kind") == kind and doc.get("metadata", {}).get("name") == name


def _apply_patch(docs: list[dict[str, Any]], entry: dict[str, Any], folder: Path) -> list[dict[str, Any]]:
    unknown = set(entry) - {"path", "patch", "target"}
    if unknown:
        raise KustomizeLiteError(f"{folder}: patch keys {sorted(unknown)} are not implemented")
    if "path" in entry:
        patch_docs = load_documents(folder / entry["path"])
        if len(patch_docs) != 1 or "target" in entry:
            raise KustomizeLiteError(f"{folder / entry['path']}: only single-document, untargeted SMP files")
        (patch,) = patch_docs
        kind, name = patch["kind"], patch["metadata"]["name"]
        apply = lambda doc: strategic_merge(doc, patch)  # noqa: E731
    else:
        target = entry.get("target") or {}
        if set(target) - {"kind", "name"} or not {"kind", "name"} <= set(target):
            raise KustomizeLiteError(f"{folder}: inline patches need a target of exactly kind + name")
        kind, name = target["kind"], target["name"]
        operations = yaml.safe_load(entry["patch"])
        if not isinstance(operations, list):
            raise KustomizeLiteError(f"{folder}: inline strategic-merge patches are not implemented")
        apply = lambda doc: json6902(doc, operations)  # noqa: E731
    hits = [i for i, doc in enumerate(docs) if _matches(doc, kind, name)]
    if len(hits) != 1:
        raise KustomizeLiteError(f"{folder}: patch target {kind}/{name} matches {len(hits)} resources")
    docs = list(docs)
    docs[hits[0]] = apply(docs[hits[0]])
    return docs


def render(folder: str | Path) -> list[dict[str, Any]]:
    """The resources a kustomization directory produces, in resource order."""
    folder = Path(folder)
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KNOWN_KEYS
    if unknown:
        raise KustomizeLiteError(f"{folder}/kustomization.yaml: keys {sorted(unknown)} are not implemented")
    docs: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = folder / entry
        docs += render(path) if path.is_dir() else [copy.deepcopy(d) for d in load_documents(path)]
    for patch in kustomization.get("patches", []):
        docs = _apply_patch(docs, patch, folder)
    namespace = kustomization.get("namespace")
    if namespace is not None:
        for doc in docs:
            if doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = namespace
            if doc["kind"] in ("RoleBinding", "ClusterRoleBinding"):
                for subject in doc.get("subjects", []):
                    if subject.get("kind") == "ServiceAccount":
                        subject["namespace"] = namespace
    for entry in kustomization.get("labels", []):
        if set(entry) - {"pairs"}:
            raise KustomizeLiteError(f"{folder}: labels options {sorted(set(entry) - {'pairs'})} are not implemented")
        for doc in docs:
            doc["metadata"].setdefault("labels", {}).update(entry["pairs"])
    keys = [(d["apiVersion"], d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
    duplicates = {k for k in keys if keys.count(k) > 1}
    if duplicates:
        raise KustomizeLiteError(f"{folder}: duplicate resources {sorted(map(str, duplicates))}")
    return docs
