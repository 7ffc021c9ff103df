"""What kubernetes-validate cannot check in deploy/k8s: KEDA's kinds, and how the manifests refer
to each other.

Usage: check_k8s.py SCHEMA_DIR MANIFEST.yaml...   (run by crates/tidy/tests/deploy.rs)

1. ScaledObject and TriggerAuthentication are validated against KEDA's own CRD schemas, vendored
   in SCHEMA_DIR (see its README.md), made strict: an object that lists its properties takes no
   others, as kubernetes-validate --strict does for core kinds. (The API server would drop an
   unknown field silently, so a misspelt `minReplicaCount` would go unnoticed.)
2. References resolve: Services, PodDisruptionBudgets and the ScaledObject select or name a
   Deployment of the set; probes and Services name container ports that exist; volumes name
   ConfigMaps and claims of the set; KEDA reads the store URL from the same Secret key as the pods.
3. Every container has liveness and readiness probes, resource requests and limits, runs as
   non-root, cannot escalate privileges and has a read-only root filesystem.

Prints one ERROR line per problem, one INFO line per resource that passed; exits 1 on any error.
"""

import json
import os
import sys

import jsonschema
import yaml

KEDA = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda-scaledobject-v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda-triggerauthentication-v1alpha1.json",
}

errors = []


def error(where, message):
    errors.append(f"ERROR {where}: {message}")


def strict(schema):
    """Closes every object schema that lists properties, unless it keeps unknown fields."""
    if isinstance(schema, dict):
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        for value in schema.values():
            strict(value)
    elif isinstance(schema, list):
        for value in schema:
            strict(value)
    return schema


def name_of(doc):
    return f"{doc.get('kind', '?').lower()}/{doc.get('metadata', {}).get('name', '?')}"


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def main():
    schema_dir, files = sys.argv[1], sys.argv[2:]
    docs = []
    for path in files:
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc:
                    docs.append((os.path.basename(path), doc))

    # 1. KEDA's schemas.
    for file, doc in docs:
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key not in KEDA:
            continue
        with open(os.path.join(schema_dir, KEDA[key])) as f:
            schema = strict(json.load(f))
        validator = jsonschema.Draft7Validator(schema)
        found = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
        for e in found:
            path = ".".join(str(p) for p in e.absolute_path)
            error(f"{file} {name_of(doc)}", f"{path}: {e.message}")
        if not found:
            print(f"INFO {file} {name_of(doc)} passed KEDA's schema")

    # 2. References.
    by_kind = {}
    for file, doc in docs:
        by_kind.setdefault(doc.get("kind"), []).append((file, doc))
    deployments = by_kind.get("Deployment", [])

    def pods_selected(selector):
        return [d for _, d in deployments if matches(selector, d["spec"]["template"]["metadata"].get("labels", {}))]

    def port_names(deployment):
        return {p.get("name") for c in deployment["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}

    for file, doc in deployments:
        spec = doc["spec"]
        where = f"{file} {name_of(doc)}"
        labels = spec["template"]["metadata"].get("labels", {})
        if not matches(spec["selector"].get("matchLabels", {}), labels):
            error(where, "the selector does not match the pod template's labels")
        pod = spec["template"]["spec"]
        claims = {d["metadata"]["name"] for _, d in by_kind.get("PersistentVolumeClaim", [])}
        maps = {d["metadata"]["name"] for _, d in by_kind.get("ConfigMap", [])}
        for volume in pod.get("volumes", []):
            if "configMap" in volume and volume["configMap"]["name"] not in maps:
                error(where, f"volume {volume['name']} names a ConfigMap not in the set")
            claim = volume.get("persistentVolumeClaim", {}).get("claimName")
            if claim is not None and claim not in claims:
                error(where, f"volume {volume['name']} names a claim not in the set")
        for c in pod["containers"]:
            cwhere = f"{where} container {c['name']}"
            ports = {p.get("name") for p in c.get("ports", [])}
            for probe in ("livenessProbe", "readinessProbe"):
                if probe not in c:
                    error(cwhere, f"no {probe}")
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                port = c.get(probe, {}).get("httpGet", {}).get("port")
                if isinstance(port, str) and port not in ports:
                    error(cwhere, f"{probe} uses port {port}, which the container does not name")
            resources = c.get("resources", {})
            for part in ("requests", "limits"):
                if not {"cpu", "memory"} <= set(resources.get(part, {})):
                    error(cwhere, f"resources.{part} must give cpu and memory")
            security = c.get("securityContext", {})
            if security.get("readOnlyRootFilesystem") is not True:
                error(cwhere, "readOnlyRootFilesystem is not true")
            if security.get("allowPrivilegeEscalation") is not False:
                error(cwhere, "allowPrivilegeEscalation is not false")
            if not (security.get("runAsNonRoot") or pod.get("securityContext", {}).get("runAsNonRoot")):
                error(cwhere, "runAsNonRoot is not set")
            if "ALL" not in security.get("capabilities", {}).get("drop", []):
                error(cwhere, "capabilities are not all dropped")

    for file, doc in by_kind.get("Service", []):
        where = f"{file} {name_of(doc)}"
        selected = pods_selected(doc["spec"].get("selector", {}))
        if len(selected) != 1:
            error(where, f"selects {len(selected)} Deployments' pods, not 1")
            continue
        for port in doc["spec"]["ports"]:
            target = port.get("targetPort")
            if isinstance(target, str) and target not in port_names(selected[0]):
                error(where, f"targetPort {target} is not a port of {name_of(selected[0])}")

    for file, doc in by_kind.get("PodDisruptionBudget", []):
        selected = pods_selected(doc["spec"]["selector"].get("matchLabels", {}))
        if len(selected) != 1:
            error(f"{file} {name_of(doc)}", f"selects {len(selected)} Deployments' pods, not 1")

    auths = {d["metadata"]["name"]: d for _, d in by_kind.get("TriggerAuthentication", [])}
    for file, doc in by_kind.get("ScaledObject", []):
        where = f"{file} {name_of(doc)}"
        spec = doc.get("spec", {})
        target = spec.get("scaleTargetRef", {})
        names = {d["metadata"]["name"] for _, d in deployments}
        if target.get("kind", "Deployment") != "Deployment" or target.get("name") not in names:
            error(where, f"scaleTargetRef {target} is not a Deployment of the set")
            continue
        scaled = next(d for _, d in deployments if d["metadata"]["name"] == target["name"])
        if "replicas" in scaled["spec"]:
            error(where, f"{name_of(scaled)} sets replicas, which fights KEDA on every apply")
        secrets = {
            (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
            for c in scaled["spec"]["template"]["spec"]["containers"]
            for e in c.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {})
        }
        for trigger in spec.get("triggers", []):
            ref = trigger.get("authenticationRef", {}).get("name")
            if ref is None:
                continue
            if ref not in auths:
                error(where, f"authenticationRef {ref} is not a TriggerAuthentication of the set")
                continue
            for secret in auths[ref]["spec"].get("secretTargetRef", []):
                if (secret["name"], secret["key"]) not in secrets:
                    error(where, f"{ref} reads Secret {secret['name']}/{secret['key']}, which {name_of(scaled)} does not use")

    if not errors:
        print(f"INFO references and container settings of {len(docs)} resources are consistent")
    for line in errors:
        print(line)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
