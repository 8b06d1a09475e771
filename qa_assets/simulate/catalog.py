"""The Backstage catalog of the simulated system: a System, its Groups, a Component per workload and a
Resource per datastore, with ``spec.dependsOn`` and the tier in ``metadata.annotations["qa-assets.io/tier"]``.

Like real catalogs it is a little out of date: the topology can list calls the catalog forgot and
dependencies that no longer exist, and a decommissioned component is still there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from qa_assets.simulate.topology import Topology

TIER_ANNOTATION = "qa-assets.io/tier"


def _ref(kind: str, name: str) -> str:
    return f"{kind}:default/{name}"


def catalog_entities(topology: Topology) -> list[dict[str, Any]]:
    missing = set(topology.catalog_missing_edges)
    stale: dict[str, list[str]] = {}
    for caller, callee in topology.catalog_stale_edges:
        stale.setdefault(caller, []).append(callee)
    entities: list[dict[str, Any]] = [
        {
            "apiVersion": "backstage.io/v1alpha1",
            "kind": "System",
            "metadata": {"name": topology.system, "description": f"The {topology.name} platform"},
            "spec": {"owner": "group:default/team-platform"},
        }
    ]
    owners = sorted({s.owner for s in topology.services})
    for owner in owners:
        entities.append(
            {
                "apiVersion": "backstage.io/v1alpha1",
                "kind": "Group",
                "metadata": {"name": owner},
                "spec": {"type": "team", "children": []},
            }
        )
    for service in topology.services:
        depends = []
        for callee in topology.callees_of(service.name):
            if (service.name, callee) in missing:
                continue
            kind = "resource" if topology.service(callee).is_datastore else "component"
            depends.append(_ref(kind, callee))
        depends += [_ref("component", name) for name in stale.get(service.name, [])]
        annotations = {TIER_ANNOTATION: str(service.tier)}
        if not service.is_datastore:
            annotations["github.com/project-slug"] = f"{topology.system}/{service.name}"
            annotations["backstage.io/kubernetes-id"] = service.name
        metadata: dict[str, Any] = {"name": service.name, "annotations": annotations}
        if service.description:
            metadata["description"] = service.description
        if service.language:
            metadata["tags"] = [service.language]
        spec: dict[str, Any] = {
            "type": service.component_type,
            "lifecycle": service.lifecycle,
            "owner": f"group:default/{service.owner}",
            "system": topology.system,
        }
        if depends:
            spec["dependsOn"] = depends
        entities.append(
            {
                "apiVersion": "backstage.io/v1alpha1",
                "kind": "Resource" if service.is_datastore else "Component",
                "metadata": metadata,
                "spec": spec,
            }
        )
    for name in topology.deprecated_components:
        entities.append(
            {
                "apiVersion": "backstage.io/v1alpha1",
                "kind": "Component",
                "metadata": {
                    "name": name,
                    "description": "replaced; scheduled for removal",
                    "annotations": {TIER_ANNOTATION: "3"},
                },
                "spec": {
                    "type": "service",
                    "lifecycle": "deprecated",
                    "owner": "group:default/team-platform",
                    "system": topology.system,
                },
            }
        )
    return entities


def write_catalog(landing: Path, topology: Topology) -> Path:
    path = landing / "catalog" / "catalog-info.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump_all(catalog_entities(topology), sort_keys=False, explicit_start=True)
    path.write_text(text, encoding="utf-8")
    return path
