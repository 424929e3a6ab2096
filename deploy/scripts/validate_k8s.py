#!/usr/bin/env python3
"""Validates rendered Kubernetes manifests offline, and checks that they fit together.

Input: files holding the output of `kubectl kustomize` (multi-document YAML).
- Core kinds are validated strictly (unknown fields rejected) against the
  Kubernetes JSON schemas that `kubernetes-validate` ships, for KUBE_VERSION.
- ServiceMonitor is a Prometheus Operator CRD, absent from the core schemas:
  it is validated against servicemonitor.schema.json beside this script (the
  subset of the CRD kappe uses, unknown fields rejected).
- Any other kind fails: nothing passes unvalidated.
- References are resolved within the render: a Service or PDB selector must
  select a workload's pods, a Service targetPort and every probe port must name
  a container port, a ConfigMap or PVC volume must exist in the render, and the
  ServiceMonitor must select a Service that has the port it scrapes. Secrets
  are expected to be created outside the manifests and are listed, not required.

Usage: validate_k8s.py RENDERED.yaml [...]
Prints one line per problem and a summary per file; exit status 1 on failure.
"""

import json
import os
import sys

import jsonschema
import kubernetes_validate
import yaml

KUBE_VERSION = os.environ.get("KUBE_VERSION", "1.37.0")
HERE = os.path.dirname(os.path.abspath(__file__))
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet")


def selects(selector, labels):
    """Whether a matchLabels-style selector (dict) selects these labels."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pod_templates(docs):
    for d in docs:
        if d["kind"] in WORKLOADS:
            yield d, d["spec"]["template"]


def container_ports(template):
    return {
        p.get("name"): p["containerPort"]
        for c in template["spec"].get("containers", [])
        for p in c.get("ports", [])
    }


def check_references(docs):
    problems, notes = [], []
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    templates = list(pod_templates(docs))

    for name, svc in by_kind.get("Service", {}).items():
        sel = svc["spec"].get("selector", {})
        matched = [t for _, t in templates if selects(sel, t["metadata"].get("labels", {}))]
        if not matched:
            problems.append(f"Service/{name}: selector {sel} selects no pod template")
        for port in svc["spec"].get("ports", []):
            target = port.get("targetPort", port["port"])
            for t in matched:
                ports = container_ports(t)
                if isinstance(target, str) and target not in ports:
                    problems.append(f"Service/{name}: targetPort {target!r} is not a container port")
                elif isinstance(target, int) and target not in ports.values():
                    problems.append(f"Service/{name}: targetPort {target} is not a container port")

    for name, pdb in by_kind.get("PodDisruptionBudget", {}).items():
        sel = pdb["spec"]["selector"].get("matchLabels", {})
        if not any(selects(sel, t["metadata"].get("labels", {})) for _, t in templates):
            problems.append(f"PodDisruptionBudget/{name}: selector {sel} selects no pod template")

    for workload, t in templates:
        wname = f"{workload['kind']}/{workload['metadata']['name']}"
        sel = workload["spec"]["selector"].get("matchLabels", {})
        if not selects(sel, t["metadata"].get("labels", {})):
            problems.append(f"{wname}: selector does not match its own pod template")
        ports = container_ports(t)
        claims = {c["metadata"]["name"] for c in workload["spec"].get("volumeClaimTemplates", [])}
        volumes = {v["name"] for v in t["spec"].get("volumes", [])} | claims
        for c in t["spec"].get("containers", []):
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                spec = c.get(probe) or {}
                action = spec.get("httpGet") or spec.get("tcpSocket") or {}
                port = action.get("port")
                if isinstance(port, str) and port not in ports:
                    problems.append(f"{wname}: {probe} port {port!r} is not a container port")
            for m in c.get("volumeMounts", []):
                if m["name"] not in volumes:
                    problems.append(f"{wname}: volumeMount {m['name']!r} has no volume")
        for v in t["spec"].get("volumes", []):
            if "configMap" in v and v["configMap"]["name"] not in by_kind.get("ConfigMap", {}):
                problems.append(f"{wname}: ConfigMap {v['configMap']['name']!r} is not in the manifests")
            pvc = v.get("persistentVolumeClaim")
            if pvc and pvc["claimName"] not in by_kind.get("PersistentVolumeClaim", {}):
                problems.append(f"{wname}: PVC {pvc['claimName']!r} is not in the manifests")
            if "secret" in v:
                notes.append(f"{wname} expects Secret/{v['secret']['secretName']} to exist")

    for name, sm in by_kind.get("ServiceMonitor", {}).items():
        sel = sm["spec"]["selector"].get("matchLabels", {})
        services = [s for s in by_kind.get("Service", {}).values() if selects(sel, s["metadata"].get("labels", {}))]
        if not services:
            problems.append(f"ServiceMonitor/{name}: selector {sel} selects no Service")
        job_label = sm["spec"].get("jobLabel")
        for svc in services:
            svc_ports = {p.get("name") for p in svc["spec"].get("ports", [])}
            for ep in sm["spec"]["endpoints"]:
                if "port" in ep and ep["port"] not in svc_ports:
                    problems.append(f"ServiceMonitor/{name}: Service/{svc['metadata']['name']} has no port {ep['port']!r}")
            if job_label and job_label not in svc["metadata"].get("labels", {}):
                problems.append(f"ServiceMonitor/{name}: Service/{svc['metadata']['name']} lacks jobLabel {job_label!r}")
            elif job_label and svc["metadata"]["labels"][job_label] != "kappe":
                problems.append(f"ServiceMonitor/{name}: job would be {svc['metadata']['labels'][job_label]!r}, alerts expect 'kappe'")
    return problems, notes


def validate_file(path, sm_schema):
    problems = []
    with open(path, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    for d in docs:
        what = f"{d.get('kind')}/{d.get('metadata', {}).get('name')}"
        if d.get("kind") == "ServiceMonitor":
            errors = sorted(jsonschema.Draft202012Validator(sm_schema).iter_errors(d), key=lambda e: list(e.path))
            problems += [f"{what}: {'.'.join(map(str, e.path))}: {e.message}" for e in errors]
            continue
        try:
            kubernetes_validate.validate(d, KUBE_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{what}: no schema for {d.get('apiVersion')} {d.get('kind')}")
        except kubernetes_validate.ValidationError as e:
            problems.append(f"{what}: {'.'.join(map(str, e.path))}: {e.message}")
    ref_problems, notes = check_references(docs)
    problems += ref_problems
    for p in problems:
        print(f"{path}: {p}")
    kinds = sorted({d["kind"] for d in docs})
    status = "FAIL" if problems else "ok"
    print(f"{status}: {os.path.basename(path)}: {len(docs)} resources ({', '.join(kinds)}) against Kubernetes {KUBE_VERSION}"
          + (f"; {'; '.join(sorted(set(notes)))}" if notes else ""))
    return not problems


def main(argv):
    if len(argv) < 2:
        print("usage: validate_k8s.py RENDERED.yaml [...]", file=sys.stderr)
        return 2
    with open(os.path.join(HERE, "servicemonitor.schema.json"), encoding="utf-8") as f:
        sm_schema = json.load(f)
    results = [validate_file(p, sm_schema) for p in argv[1:]]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
