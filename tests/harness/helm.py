#!/usr/bin/env python3
"""Helm's own engine, offline, for the packaging tests (Helm is not packaged in Debian).

  helm.py lint CHART [VALUES_JSON]             lint findings; exit 1 on an error finding
  helm.py render CHART VALUES_JSON NAME NS     the rendered manifests (NOTES.txt apart) as one
                                               YAML stream on stdout, in the order `helm
                                               install` creates them (by kind), NOTES.txt on
                                               stderr; exit 3 when values.schema.json rejects
                                               the values

Runs in the virtualenv that tests/harness/bootstrap.sh prepares
(~/.cache/mx-operator/venv, with helm-python-sdk and kubernetes-validate).
"""
import json
import re
import sys

import helm_python as helm


def lint(chart, values):
    report = helm.lint(chart, values, strict=True, kube_version="v1.25.0")
    for message in report.get("messages", []):
        print(f"[{message['severity']}] {message['path']}: {message['error']}")
    errors = [m for m in report.get("messages", []) if m["severity"] >= 2]
    return 1 if errors or report.get("errors") else 0


# Helm's InstallOrder (pkg/releaseutil/kind_sorter.go): a ServiceAccount before the Deployment
# that runs as it, and so on. Kinds it does not list come last.
INSTALL_ORDER = [
    "PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange",
    "PodSecurityPolicy", "PodDisruptionBudget", "ServiceAccount", "Secret", "SecretList",
    "ConfigMap", "StorageClass", "PersistentVolume", "PersistentVolumeClaim",
    "CustomResourceDefinition", "ClusterRole", "ClusterRoleList", "ClusterRoleBinding",
    "ClusterRoleBindingList", "Role", "RoleList", "RoleBinding", "RoleBindingList", "Service",
    "DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment",
    "HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress",
    "APIService",
]


def install_rank(document):
    found = re.search(r"^kind:\s*(\S+)", document, re.MULTILINE)
    kind = found.group(1) if found else ""
    if kind in INSTALL_ORDER:
        return (INSTALL_ORDER.index(kind), "")
    return (len(INSTALL_ORDER), kind)


def render(chart_path, values, name, namespace):
    with helm.Chart.load(chart_path) as chart:
        try:
            chart.validate_schema(values)
        except helm.HelmError as error:
            print(f"values rejected: {error}", file=sys.stderr)
            return 3
        manifests = chart.render(values, name=name, namespace=namespace, is_install=True)
    documents = []
    for path in sorted(manifests):
        text = manifests[path]
        if path.endswith("NOTES.txt"):
            print(text, file=sys.stderr)
            continue
        for document in re.split(r"^---\s*$", text, flags=re.MULTILINE):
            if document.strip():
                documents.append((path, document.strip()))
    # sorted() is stable: within a kind, the file order stays.
    for path, document in sorted(documents, key=lambda d: install_rank(d[1])):
        print(f"---\n# Source: {path}\n{document}")
    return 0


def main(argv):
    if len(argv) >= 2 and argv[0] == "lint":
        values = json.loads(argv[2]) if len(argv) > 2 else None
        return lint(argv[1], values)
    if len(argv) == 5 and argv[0] == "render":
        return render(argv[1], json.loads(argv[2]), argv[3], argv[4])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
