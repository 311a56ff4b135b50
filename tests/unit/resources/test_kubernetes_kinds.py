"""Every common Kubernetes kind loads; `--strict` says what is not acted on; references that a pod
makes to ConfigMaps, Secrets and its ServiceAccount are checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from gossamer.resources import validate_paths
from gossamer.resources.registry import KINDS
from gossamer.resources.support import KEPT

_POD = """
  template:
    metadata: {labels: {app: a}}
    spec:
      restartPolicy: RESTART
      containers: [{name: a, command: [run]}]"""

# (apiVersion, kind, the rest of a minimal manifest): every kind of the groups issue 19 names.
KINDS_TABLE: list[tuple[str, str, str]] = [
    ("v1", "Service", "spec: {ports: [{port: 80}]}"),
    ("v1", "ConfigMap", "data: {a: b}"),
    ("v1", "Secret", "data: {a: Yg==}\nstringData: {c: d}"),
    ("v1", "ServiceAccount", ""),
    ("v1", "Namespace", ""),
    ("v1", "Pod", "spec: {containers: [{name: a, image: nginx}]}"),
    ("v1", "PodTemplate", "template: {spec: {containers: []}}"),
    ("v1", "ReplicationController", "spec: {replicas: 1}"),
    ("v1", "Endpoints", "subsets: []"),
    ("v1", "Event", "reason: Started\nmessage: hi\ninvolvedObject: {kind: Pod, name: a}"),
    ("v1", "LimitRange", "spec: {limits: []}"),
    ("v1", "ResourceQuota", "spec: {hard: {pods: '10'}}"),
    ("v1", "PersistentVolume", "spec: {capacity: {storage: 1Gi}}"),
    ("v1", "PersistentVolumeClaim", "spec: {accessModes: [ReadWriteOnce]}"),
    ("v1", "Node", "spec: {}"),
    ("v1", "Binding", "target: {kind: Node, name: n}"),
    ("v1", "ComponentStatus", "conditions: []"),
    ("apps/v1", "Deployment", "spec:\n  selector: {matchLabels: {app: a}}" + _POD),
    (
        "apps/v1",
        "StatefulSet",
        "spec:\n  selector: {matchLabels: {app: a}}" + _POD,
    ),
    ("apps/v1", "DaemonSet", "spec: {selector: {matchLabels: {app: a}}}"),
    ("apps/v1", "ReplicaSet", "spec: {replicas: 2}"),
    ("apps/v1", "ControllerRevision", "revision: 1\ndata: {}"),
    ("batch/v1", "Job", "spec:" + _POD.replace("RESTART", "Never")),
    ("batch/v1", "CronJob", "spec: {schedule: '*/5 * * * *'}"),
    (
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        "spec: {scaleTargetRef: {kind: Deployment, name: a}, minReplicas: 1, maxReplicas: 3}",
    ),
    (
        "autoscaling/v1",
        "HorizontalPodAutoscaler",
        "spec:\n  scaleTargetRef: {kind: Deployment, name: a}\n  maxReplicas: 3\n"
        "  targetCPUUtilizationPercentage: 70",
    ),
    ("policy/v1", "PodDisruptionBudget", "spec: {minAvailable: 1}"),
    ("networking.k8s.io/v1", "Ingress", "spec: {}"),
    ("networking.k8s.io/v1", "IngressClass", "spec: {controller: example.com/c}"),
    ("networking.k8s.io/v1", "NetworkPolicy", "spec: {podSelector: {}}"),
    ("rbac.authorization.k8s.io/v1", "Role", "rules: [{verbs: [get]}]"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", "rules: []"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding", "subjects: []\nroleRef: {kind: Role}"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "roleRef: {kind: ClusterRole}"),
]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("version", "kind", "rest"), KINDS_TABLE, ids=[k[1] for k in KINDS_TABLE])
def test_every_kind_loads_and_strict_names_only_what_is_kept(
    version: str, kind: str, rest: str, tmp_path: Path
) -> None:
    text = f"apiVersion: {version}\nkind: {kind}\nmetadata: {{name: a}}\n"
    text += rest.replace("RESTART", "Always") + "\n"
    result = validate_paths([_write(tmp_path, text)], strict=True)
    assert [r.kind for r in result.loaded.resources] == [kind]
    errors = [str(p) for p in result.problems if p.severity.value != "notice"]
    assert errors == [], errors
    notices = [str(p) for p in result.problems]
    if kind in KEPT:
        assert notices == [
            f"{tmp_path / 'm.yaml'}:2: notice: {kind} a: kind: kind accepted and kept, "
            "not enforced yet"
        ]
    else:
        assert all("kind accepted" not in n for n in notices), notices


def test_the_table_covers_every_kubernetes_kind_the_registry_reads() -> None:
    kubernetes = {
        (group, kind)
        for (group, _, kind) in KINDS
        if not group.endswith("istio.io")
        # The Gateway API has its own tests (test_gateway_api_kinds.py).
        and group not in ("gossamer.dev", "extensions", "gateway.networking.k8s.io")
    }
    covered = {(version.rpartition("/")[0], kind) for version, kind, _ in KINDS_TABLE}
    assert kubernetes == covered


_REFERENCES = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {color: blue}
---
apiVersion: v1
kind: Secret
metadata: {name: keys}
data: {token: dG9r}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: known}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: app}
spec:
  selector: {matchLabels: {app: a}}
  template:
    metadata: {labels: {app: a}}
    spec:
      serviceAccountName: ACCOUNT
      containers:
        - name: a
          command: [run]
          env:
            - name: COLOR
              valueFrom: {configMapKeyRef: {name: settings, key: KEY}}
            - name: TOKEN
              valueFrom: {secretKeyRef: {name: SECRET, key: token, OPTIONAL}}
          envFrom:
            - configMapRef: {name: MAP}
          volumeMounts: [{name: files, mountPath: /etc/files}]
      volumes:
        - name: files
          configMap:
            name: settings
            items: [{key: ITEM, path: color.txt}]
"""


def _references(tmp_path: Path, **changes: str) -> list[str]:
    values = {
        "ACCOUNT": "known",
        "KEY": "color",
        "SECRET": "keys",
        "OPTIONAL": "optional: false",
        "MAP": "settings",
        "ITEM": "color",
    }
    values.update(changes)
    text = _REFERENCES
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    result = validate_paths([_write(tmp_path, text)])
    return [str(p).removeprefix(f"{tmp_path / 'm.yaml'}:") for p in result.problems]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, []),
        (
            {"KEY": "colour"},
            [
                "29: Deployment app: spec.template.spec.containers[0].env[0].valueFrom."
                "configMapKeyRef.key: ConfigMap default/settings has no key colour"
            ],
        ),
        (
            {"SECRET": "nope"},
            [
                "31: Deployment app: spec.template.spec.containers[0].env[1].valueFrom."
                "secretKeyRef.name: no Secret named nope in namespace default (set optional: "
                "true if it may be absent)"
            ],
        ),
        ({"SECRET": "nope", "OPTIONAL": "optional: true"}, []),
        (
            {"MAP": "other"},
            [
                "33: Deployment app: spec.template.spec.containers[0].envFrom[0].configMapRef."
                "name: no ConfigMap named other in namespace default (set optional: true if it "
                "may be absent)"
            ],
        ),
        (
            {"ITEM": "size"},
            [
                "39: Deployment app: spec.template.spec.volumes[0].configMap.items[0].key: "
                "ConfigMap default/settings has no key size"
            ],
        ),
        (
            {"ACCOUNT": "ghost"},
            [
                "23: warning: Deployment app: spec.template.spec.serviceAccountName: no "
                "ServiceAccount named ghost in namespace default; Kubernetes would refuse the pods"
            ],
        ),
    ],
    ids=["all found", "key", "secret", "optional", "envFrom", "file item", "account"],
)
def test_a_missing_configmap_secret_key_or_account_names_file_line_and_field(
    changes: dict[str, str], expected: list[str], tmp_path: Path
) -> None:
    assert _references(tmp_path, **changes) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {a: not base64!}\n",
            "4: Secret s: data.a: must be base64 (stringData takes plain text)",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a/b: x}\n",
            "4: ConfigMap c: data[\"a/b\"]: a key must be letters, digits, '-', '_' or '.' "
            "(it becomes a file name)",
        ),
        (
            "apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\nspec:"
            + _POD.replace("RESTART", "Always")
            + "\n",
            "8: Job j: spec.template.spec.restartPolicy: a Job's pods must set restartPolicy "
            "OnFailure or Never (Always never completes)",
        ),
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n"
            "  selector: {matchLabels: {app: a}}\n  template:\n    metadata: {labels: {app: a}}\n"
            "    spec:\n      containers:\n        - name: a\n          command: [run]\n"
            "          env: [{name: X, valueFrom: {fieldRef: {fieldPath: spec.host}}}]\n",
            "12: Deployment d: spec.template.spec.containers[0].env[0].valueFrom.fieldRef."
            "fieldPath: the Downward API gives metadata.name, metadata.namespace, metadata.uid, "
            "metadata.labels['KEY'], metadata.annotations['KEY'], spec.nodeName, "
            "spec.serviceAccountName, status.hostIP, status.hostIPs, status.podIP, status.podIPs",
        ),
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n"
            "  selector: {matchLabels: {app: a}}\n  template:\n    metadata: {labels: {app: a}}\n"
            "    spec:\n      containers:\n        - name: a\n          command: [run]\n"
            "          volumeMounts: [{name: data, mountPath: /data}]\n",
            "12: Deployment d: spec.template.spec.containers[0].volumeMounts[0].name: no volume "
            "named data in spec.volumes",
        ),
    ],
    ids=["secret base64", "configmap key", "job restart", "downward field", "unknown volume"],
)
def test_kind_rules(text: str, expected: str, tmp_path: Path) -> None:
    result = validate_paths([_write(tmp_path, text)])
    assert [str(p).removeprefix(f"{tmp_path / 'm.yaml'}:") for p in result.problems] == [expected]
