"""tests/deploy/kustomize.py renders what kustomize would for the subset it implements, and
refuses what it does not implement instead of rendering it differently."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kustomize import KustomizeError, render, split_image, strategic_merge

DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "labels": {"app": "web"}},
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "initContainers": [{"name": "setup", "image": "web:1.0"}],
                "containers": [
                    {
                        "name": "web",
                        "image": "web:1.0",
                        "args": ["serve", "--fast"],
                        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                        "ports": [{"name": "http", "containerPort": 80}],
                        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                    },
                    {"name": "sidecar", "image": "registry:5000/tools/side:2"},
                ],
            },
        },
    },
}
NAMESPACE = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}


def write(directory: Path, files: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        text = (
            content
            if isinstance(content, str)
            else yaml.safe_dump_all(content if isinstance(content, list) else [content])
        )
        (directory / name).write_text(text)
    return directory


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return write(
        tmp_path / "base",
        {
            "kustomization.yaml": {"resources": ["app.yaml", "ns.yaml"], "namespace": "shop"},
            "app.yaml": DEPLOYMENT,
            "ns.yaml": NAMESPACE,
        },
    )


def test_namespace_is_set_on_namespaced_resources_only(base: Path) -> None:
    deployment, namespace = render(base)
    assert deployment["metadata"]["namespace"] == "shop"
    assert "namespace" not in namespace["metadata"]


def test_overlay_patches_by_kind_and_name(base: Path, tmp_path: Path) -> None:
    patch = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "env": [{"name": "B", "value": "two"}, {"name": "C", "value": "3"}],
                            "args": ["serve"],
                            "resources": {"requests": {"memory": "1Gi"}},
                        }
                    ]
                }
            }
        },
    }
    overlay = write(
        tmp_path / "overlay",
        {
            "kustomization.yaml": {"resources": ["../base"], "patches": [{"path": "p.yaml"}]},
            "p.yaml": patch,
        },
    )
    deployment = render(overlay)[0]
    web, sidecar = deployment["spec"]["template"]["spec"]["containers"]
    assert web["env"] == [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "two"},
        {"name": "C", "value": "3"},
    ]
    assert web["args"] == ["serve"], "lists without a merge key are replaced"
    assert web["resources"] == {"requests": {"cpu": "100m", "memory": "1Gi"}}
    assert web["ports"] == [{"name": "http", "containerPort": 80}]
    assert sidecar["name"] == "sidecar", "containers merge by name"


def test_null_deletes_in_a_patch() -> None:
    assert strategic_merge({"a": 1, "b": {"c": 2}}, {"b": None}) == {"a": 1}


def test_service_ports_merge_by_port() -> None:
    merged = strategic_merge(
        {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]},
        {"ports": [{"port": 443, "targetPort": 8443}]},
    )
    assert merged["ports"][1] == {"port": 443, "name": "https", "targetPort": 8443}


def test_images_replicas_and_labels(base: Path, tmp_path: Path) -> None:
    overlay = write(
        tmp_path / "overlay",
        {
            "kustomization.yaml": {
                "resources": ["../base"],
                "images": [
                    {"name": "web", "newName": "reg.example/web", "newTag": "2.0"},
                    {"name": "registry:5000/tools/side", "newTag": "3"},
                ],
                "replicas": [{"name": "web", "count": 4}],
                "labels": [{"pairs": {"team": "a"}, "includeTemplates": True}],
            }
        },
    )
    deployment, namespace = render(overlay)
    spec = deployment["spec"]["template"]["spec"]
    assert spec["initContainers"][0]["image"] == "reg.example/web:2.0"
    assert spec["containers"][0]["image"] == "reg.example/web:2.0"
    assert spec["containers"][1]["image"] == "registry:5000/tools/side:3"
    assert deployment["spec"]["replicas"] == 4
    assert deployment["metadata"]["labels"] == {"app": "web", "team": "a"}
    assert deployment["spec"]["template"]["metadata"]["labels"]["team"] == "a"
    assert deployment["spec"]["selector"]["matchLabels"] == {"app": "web"}, "selectors stay"
    assert namespace["metadata"]["labels"] == {"team": "a"}


def test_components_add_resources_and_take_the_overlays_namespace(
    base: Path, tmp_path: Path
) -> None:
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "extra"}}
    write(
        tmp_path / "component",
        {
            "kustomization.yaml": {
                "apiVersion": "kustomize.config.k8s.io/v1alpha1",
                "kind": "Component",
                "resources": ["cm.yaml"],
            },
            "cm.yaml": config,
        },
    )
    overlay = write(
        tmp_path / "overlay",
        {
            "kustomization.yaml": {
                "resources": ["../base"],
                "components": ["../component"],
                "namespace": "other",
            }
        },
    )
    kinds = {r["kind"]: r for r in render(overlay)}
    assert kinds["ConfigMap"]["metadata"]["namespace"] == "other"
    assert kinds["Deployment"]["metadata"]["namespace"] == "other"


@pytest.mark.parametrize(
    "kustomization",
    [
        {"resources": ["app.yaml"], "commonLabels": {"a": "b"}},
        {"resources": ["app.yaml"], "configMapGenerator": [{"name": "x"}]},
        {"resources": ["app.yaml"], "labels": [{"pairs": {"a": "b"}, "includeSelectors": True}]},
        {"resources": ["app.yaml"], "patches": [{"path": "p.yaml", "target": {"kind": "X"}}]},
        {"resources": ["missing.yaml"]},
        {"resources": ["app.yaml", "app.yaml"]},
        {"resources": ["app.yaml"], "replicas": [{"name": "nope", "count": 2}]},
    ],
    ids=["commonLabels", "generator", "selectors", "patch-target", "missing", "twice", "replicas"],
)
def test_what_is_not_implemented_or_wrong_is_refused(
    tmp_path: Path, kustomization: dict[str, Any]
) -> None:
    directory = write(tmp_path / "k", {"kustomization.yaml": kustomization, "app.yaml": DEPLOYMENT})
    with pytest.raises(KustomizeError):
        render(directory)


def test_a_patch_for_nothing_is_refused(base: Path, tmp_path: Path) -> None:
    overlay = write(
        tmp_path / "overlay",
        {
            "kustomization.yaml": {
                "resources": ["../base"],
                "patches": [{"patch": "kind: Deployment\nmetadata:\n  name: webb\n"}],
            }
        },
    )
    with pytest.raises(KustomizeError, match="webb"):
        render(overlay)


@pytest.mark.parametrize(
    ("image", "parts"),
    [
        ("web", ("web", None, None)),
        ("web:1.0", ("web", "1.0", None)),
        ("registry:5000/a/web", ("registry:5000/a/web", None, None)),
        ("registry:5000/a/web:2@sha256:ab", ("registry:5000/a/web", "2", "sha256:ab")),
    ],
)
def test_split_image(image: str, parts: tuple[str, str | None, str | None]) -> None:
    assert split_image(image) == parts
