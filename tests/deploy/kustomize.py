"""A small kustomize: renders deploy/k8s without kubectl, for the deployment tests.

It implements only what deploy/k8s uses, and refuses anything else rather than render it
differently from kustomize:

- `resources`: YAML files (one or more documents) and directories with a kustomization;
- `components`: directories with a `kind: Component` kustomization, applied after the
  resources (their resources are added, then their transformers run on everything);
- `namespace`: set on every namespaced resource;
- `labels`: `pairs` added to every resource's labels, and with `includeTemplates: true` to
  pod templates too (`includeSelectors` is refused: selectors stay as written);
- `images`: `name` with `newName`, `newTag` or `digest`, for containers and init containers;
- `replicas`: `name` and `count` for Deployments and StatefulSets;
- `patches`: strategic-merge patches (`path` or inline `patch`), each document matched to the
  resource of the same kind and name. Lists of containers, init containers, env, volumes,
  volume mounts and ports merge by their key; other lists are replaced; `null` deletes.

    python tests/deploy/kustomize.py deploy/k8s/overlays/production   # prints the manifests
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED_FIELDS = frozenset(
    {"apiVersion", "kind", "resources", "components", "namespace", "labels", "images"}
    | {"replicas", "patches"}
)
CLUSTER_SCOPED = frozenset(
    {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "PersistentVolume",
        "StorageClass",
        "PriorityClass",
        "IngressClass",
    }
)
SCALABLE = frozenset({"Deployment", "StatefulSet", "ReplicaSet"})
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
}
"""Lists merged item by item in a strategic-merge patch, and the key that matches items
(`ports` is handled apart: containers match on `containerPort`, Services on `port`)."""


class KustomizeError(Exception):
    """The kustomization uses something this renderer does not implement, or is wrong."""


def render(directory: Path | str) -> list[Resource]:
    """The resources `kubectl kustomize directory` would print (same content; key order and
    document order may differ)."""
    return _build(Path(directory).resolve(), kind="Kustomization")


def to_yaml(resources: Iterable[Resource]) -> str:
    """The resources as one multi-document YAML text."""
    return "---\n".join(yaml.safe_dump(r, sort_keys=False) for r in resources)


def load_documents(path: Path) -> list[Resource]:
    """The non-empty YAML documents of a file."""
    with path.open(encoding="utf-8") as file:
        documents = [d for d in yaml.safe_load_all(file) if d is not None]
    for document in documents:
        if not isinstance(document, dict) or "kind" not in document:
            raise KustomizeError(f"{path}: every document must be a mapping with a kind")
    return documents


def _kustomization(directory: Path) -> tuple[Path, dict[str, Any]]:
    for name in KUSTOMIZATION_FILES:
        path = directory / name
        if path.is_file():
            with path.open(encoding="utf-8") as file:
                loaded = yaml.safe_load(file) or {}
            if not isinstance(loaded, dict):
                raise KustomizeError(f"{path}: not a mapping")
            return path, loaded
    raise KustomizeError(f"{directory}: no kustomization file")


def _build(
    directory: Path, *, kind: str, accumulated: list[Resource] | None = None
) -> list[Resource]:
    path, spec = _kustomization(directory)
    found_kind = spec.get("kind", "Kustomization")
    if found_kind != kind:
        raise KustomizeError(f"{path}: kind {found_kind}, expected {kind}")
    unsupported = sorted(set(spec) - SUPPORTED_FIELDS)
    if unsupported:
        raise KustomizeError(f"{path}: not implemented here: {', '.join(unsupported)}")

    resources = list(accumulated or [])
    for entry in spec.get("resources") or []:
        target = (directory / entry).resolve()
        if target.is_dir():
            resources += _build(target, kind="Kustomization")
        elif target.is_file():
            resources += load_documents(target)
        else:
            raise KustomizeError(f"{path}: resource {entry} does not exist")
    for entry in spec.get("components") or []:
        target = (directory / entry).resolve()
        if not target.is_dir():
            raise KustomizeError(f"{path}: component {entry} is not a directory")
        resources = _build(target, kind="Component", accumulated=resources)

    for patch in spec.get("patches") or []:
        _apply_patch_entry(directory, path, patch, resources)
    if "namespace" in spec:
        _set_namespace(resources, str(spec["namespace"]))
    for entry in spec.get("labels") or []:
        _add_labels(path, resources, entry)
    for entry in spec.get("images") or []:
        _set_images(path, resources, entry)
    for entry in spec.get("replicas") or []:
        _set_replicas(path, resources, entry)
    _check_unique(path, resources)
    return resources


# --- patches ----------------------------------------------------------------------------------


def _apply_patch_entry(
    directory: Path, path: Path, entry: dict[str, Any], resources: list[Resource]
) -> None:
    if not isinstance(entry, dict) or set(entry) - {"path", "patch"}:
        raise KustomizeError(f"{path}: a patch takes `path` or `patch` only (no target): {entry}")
    if "path" in entry:
        documents = load_documents((directory / entry["path"]).resolve())
    elif "patch" in entry:
        documents = [d for d in yaml.safe_load_all(entry["patch"]) if d is not None]
    else:
        raise KustomizeError(f"{path}: a patch needs `path` or `patch`")
    for document in documents:
        kind, name = document.get("kind"), (document.get("metadata") or {}).get("name")
        matches = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
        if len(matches) != 1:
            raise KustomizeError(
                f"{path}: patch for {kind}/{name} matches {len(matches)} resources"
            )
        merged = strategic_merge(matches[0], document)
        matches[0].clear()
        matches[0].update(merged)


def strategic_merge(target: Any, patch: Any, field: str = "") -> Any:
    """`patch` merged into a copy of `target` the way a strategic-merge patch is."""
    if isinstance(patch, dict) and isinstance(target, dict):
        if "$patch" in patch or any(str(k).startswith("$") for k in patch):
            raise KustomizeError(f"patch directives are not implemented: {sorted(patch)}")
        merged = copy.deepcopy(target)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = strategic_merge(merged[key], value, key)
            else:
                merged[key] = copy.deepcopy(value)
        return merged
    if isinstance(patch, list) and isinstance(target, list):
        key = _merge_key(field, [*target, *patch])
        if key is None:
            return copy.deepcopy(patch)
        merged_list = copy.deepcopy(target)
        for item in patch:
            position = next(
                (i for i, old in enumerate(merged_list) if old.get(key) == item.get(key)), None
            )
            if position is None:
                merged_list.append(copy.deepcopy(item))
            else:
                merged_list[position] = strategic_merge(merged_list[position], item, field)
        return merged_list
    return copy.deepcopy(patch)


def _merge_key(field: str, items: list[Any]) -> str | None:
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    if field == "ports":
        return "containerPort" if all("containerPort" in i for i in items) else "port"
    return MERGE_KEYS.get(field)


# --- transformers -----------------------------------------------------------------------------


def _set_namespace(resources: list[Resource], namespace: str) -> None:
    for resource in resources:
        if resource["kind"] not in CLUSTER_SCOPED:
            resource["metadata"]["namespace"] = namespace


def _add_labels(path: Path, resources: list[Resource], entry: dict[str, Any]) -> None:
    if set(entry) - {"pairs", "includeTemplates", "includeSelectors"}:
        raise KustomizeError(f"{path}: labels take pairs, includeTemplates: {entry}")
    if entry.get("includeSelectors"):
        raise KustomizeError(f"{path}: labels with includeSelectors are not implemented")
    pairs = {str(k): str(v) for k, v in (entry.get("pairs") or {}).items()}
    for resource in resources:
        resource["metadata"].setdefault("labels", {}).update(pairs)
        template = (resource.get("spec") or {}).get("template")
        if entry.get("includeTemplates") and isinstance(template, dict):
            template.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)


def pod_spec(resource: Resource) -> dict[str, Any] | None:
    """The pod spec of a workload (Deployment, Job, ...), or None."""
    spec = resource.get("spec") or {}
    if resource["kind"] == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    template = spec.get("template")
    if isinstance(template, dict) and isinstance(template.get("spec"), dict):
        return template["spec"]
    return None


def containers_of(resource: Resource) -> list[dict[str, Any]]:
    """Init containers, then containers, of a workload."""
    spec = pod_spec(resource)
    if spec is None:
        return []
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """An image reference as (name, tag, digest): `registry:5000/a/b:1.0` is
    (`registry:5000/a/b`, `1.0`, None)."""
    digest = None
    if "@" in image:
        image, digest = image.split("@", 1)
    tag = None
    colon = image.rfind(":")
    if colon > image.rfind("/"):
        image, tag = image[:colon], image[colon + 1 :]
    return image, tag, digest


def _set_images(path: Path, resources: list[Resource], entry: dict[str, Any]) -> None:
    if set(entry) - {"name", "newName", "newTag", "digest"} or "name" not in entry:
        raise KustomizeError(f"{path}: an image takes name, newName, newTag, digest: {entry}")
    for resource in resources:
        for container in containers_of(resource):
            name, tag, digest = split_image(container["image"])
            if name != entry["name"]:
                continue
            name = entry.get("newName", name)
            if "digest" in entry:
                container["image"] = f"{name}@{entry['digest']}"
                continue
            tag = str(entry["newTag"]) if "newTag" in entry else tag
            image = name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
            container["image"] = image


def _set_replicas(path: Path, resources: list[Resource], entry: dict[str, Any]) -> None:
    targets = [
        r for r in resources if r["kind"] in SCALABLE and r["metadata"]["name"] == entry["name"]
    ]
    if not targets:
        raise KustomizeError(f"{path}: replicas for {entry['name']}: no such workload")
    for resource in targets:
        resource["spec"]["replicas"] = int(entry["count"])


def _check_unique(path: Path, resources: list[Resource]) -> None:
    seen: set[tuple[str, str, str]] = set()
    for r in resources:
        identity = (r["kind"], r["metadata"].get("namespace", ""), r["metadata"]["name"])
        if identity in seen:
            raise KustomizeError(f"{path}: {identity} is defined twice")
        seen.add(identity)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/deploy/kustomize.py DIRECTORY")
    sys.stdout.write(to_yaml(render(sys.argv[1])))
