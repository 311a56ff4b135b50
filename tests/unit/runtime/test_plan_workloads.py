"""What `up` runs for StatefulSets and Jobs, and what a replica gets from ConfigMaps, Secrets,
the Downward API and its volumes."""

from __future__ import annotations

import itertools
import stat
from pathlib import Path

import pytest

from gossamer.resources import load_text
from gossamer.resources.kinds.apps import POD_NAME_LABEL
from gossamer.runtime.plan import MeshPlan, PlanError, plan_mesh
from gossamer.runtime.volumes import materialize

MANIFESTS = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: shop}
data: {color: blue, "app.properties": "size=3\\n"}
binaryData: {logo: AAEC}
---
apiVersion: v1
kind: Secret
metadata: {name: keys, namespace: shop}
data: {token: dG9r}
stringData: {note: plain}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web, namespace: shop}
spec:
  serviceName: web
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}, annotations: {team: blue}}
    spec:
      serviceAccountName: web
      containers:
        - name: web
          command: [python, -m, web, --name, $(POD)]
          envFrom: [{prefix: CFG_, configMapRef: {name: settings}}]
          env:
            - {name: TOKEN, valueFrom: {secretKeyRef: {name: keys, key: token}}}
            - {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
            - {name: NS, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
            - {name: IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
            - {name: TEAM, valueFrom: {fieldRef: {fieldPath: "metadata.annotations['team']"}}}
            - {name: SA, valueFrom: {fieldRef: {fieldPath: spec.serviceAccountName}}}
          volumeMounts:
            - {name: config, mountPath: /etc/web}
            - {name: secret, mountPath: /var/run/secrets/web}
            - {name: scratch, mountPath: /tmp/scratch}
            - {name: data, mountPath: /data}
            - {name: config, mountPath: /etc/app.properties, subPath: app.properties}
      volumes:
        - {name: config, configMap: {name: settings}}
        - name: secret
          secret: {secretName: keys, defaultMode: 0400, items: [{key: token, path: t/token}]}
        - {name: scratch, emptyDir: {}}
  volumeClaimTemplates:
    - metadata: {name: data}
---
apiVersion: batch/v1
kind: Job
metadata: {name: migrate, namespace: shop}
spec:
  completions: 2
  backoffLimit: 2
  template:
    spec:
      restartPolicy: Never
      containers: [{name: m, command: [migrate]}]
"""


def _plan(text: str = MANIFESTS) -> MeshPlan:
    loaded = load_text(text, "m.yaml")
    assert [str(p) for p in loaded.problems] == []
    ports = itertools.count(20000)
    return plan_mesh([r.resource for r in loaded.resources], lambda _: next(ports))


def test_a_statefulset_has_stable_names_and_labels_its_pods_with_them() -> None:
    web = [r for r in _plan().replicas if r.deployment == "web"]
    assert [(r.name, r.pod, r.kind) for r in web] == [
        ("shop.web-0", "web-0", "StatefulSet"),
        ("shop.web-1", "web-1", "StatefulSet"),
    ]
    assert web[1].labels == {"app": "web", POD_NAME_LABEL: "web-1"}


def test_env_comes_from_configmaps_secrets_and_the_downward_api() -> None:
    replica = next(r for r in _plan().replicas if r.pod == "web-1")
    assert dict(replica.env) == {
        "CFG_color": "blue",
        "CFG_app.properties": "size=3\n",
        "CFG_logo": "\x00\x01\x02",
        "TOKEN": "tok",
        "POD": "web-1",
        "NS": "shop",
        "IP": "127.0.0.1",
        "TEAM": "blue",
        "SA": "web",
    }


def test_a_job_runs_its_completions_and_retries_up_to_its_backoff_limit() -> None:
    jobs = [r for r in _plan().replicas if r.kind == "Job"]
    assert [(r.pod, r.restart, r.backoff_limit) for r in jobs] == [
        ("migrate-0", "Never", 2),
        ("migrate-1", "Never", 2),
    ]


def test_volumes_become_folders_and_each_mount_a_variable(tmp_path: Path) -> None:
    replica = next(r for r in _plan().replicas if r.pod == "web-0")
    (tmp_path / "shop" / "web-0" / "scratch").mkdir(parents=True)
    (tmp_path / "shop" / "web-0" / "scratch" / "old").write_text("gone on start")
    env = materialize(replica, tmp_path)
    root = tmp_path / "shop" / "web-0"
    assert env == {
        "GOSSAMER_MOUNT_ETC_WEB": str(root / "config"),
        "GOSSAMER_MOUNT_VAR_RUN_SECRETS_WEB": str(root / "secret"),
        "GOSSAMER_MOUNT_TMP_SCRATCH": str(root / "scratch"),
        "GOSSAMER_MOUNT_DATA": str(root / "data"),
        "GOSSAMER_MOUNT_ETC_APP_PROPERTIES": str(root / "config" / "app.properties"),
    }
    assert (root / "config" / "color").read_text() == "blue"
    assert (root / "config" / "logo").read_bytes() == b"\x00\x01\x02"
    token = root / "secret" / "t" / "token"
    assert token.read_text() == "tok"
    assert stat.S_IMODE(token.stat().st_mode) == 0o400
    assert sorted(p.name for p in (root / "secret").iterdir()) == ["t"]
    assert list((root / "scratch").iterdir()) == []
    (root / "data" / "kept").write_text("a claim survives a restart")
    materialize(replica, tmp_path)
    assert (root / "data" / "kept").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("key: token}}", "key: nope}}"),
            "StatefulSet shop/web: spec.template.spec.containers[0].env[0].valueFrom."
            "secretKeyRef.key: Secret shop/keys has no key nope",
        ),
        (
            ("{name: config, configMap: {name: settings}}", "{name: config, configMap: {name: x}}"),
            "StatefulSet shop/web: spec.template.spec.volumes[0].configMap.name: no ConfigMap "
            "named x in namespace shop (set optional: true if it may be absent)",
        ),
    ],
)
def test_up_refuses_a_missing_reference_naming_the_field(
    change: tuple[str, str], message: str
) -> None:
    loaded = load_text(MANIFESTS.replace(*change), "m.yaml")
    ports = itertools.count(20000)
    with pytest.raises(PlanError) as raised:
        plan_mesh([r.resource for r in loaded.resources], lambda _: next(ports))
    assert str(raised.value) == message


def test_downward_api_and_projected_volumes_are_written_as_the_kubelet_writes_them(
    tmp_path: Path,
) -> None:
    text = MANIFESTS.replace(
        "        - {name: scratch, emptyDir: {}}\n",
        """        - {name: scratch, emptyDir: {}}
        - name: podinfo
          downwardAPI:
            items:
              - {path: name, fieldRef: {fieldPath: metadata.name}}
              - {path: labels, fieldRef: {fieldPath: metadata.labels}}
              - {path: cpu, resourceFieldRef: {containerName: web, resource: limits.cpu}}
        - name: bundle
          projected:
            defaultMode: 0440
            sources:
              - configMap: {name: settings, items: [{key: color, path: colors/now}]}
              - secret: {name: keys}
              - downwardAPI: {items: [{path: ns, fieldRef: {fieldPath: metadata.namespace}}]}
              - serviceAccountToken: {path: token-sa, expirationSeconds: 3600}
""",
    ).replace(
        "            - {name: data, mountPath: /data}\n",
        "            - {name: data, mountPath: /data}\n"
        "            - {name: podinfo, mountPath: /etc/podinfo}\n"
        "            - {name: bundle, mountPath: /etc/bundle}\n",
    )
    replica = next(r for r in _plan(text).replicas if r.pod == "web-1")
    materialize(replica, tmp_path)
    root = tmp_path / "shop" / "web-1"
    assert (root / "podinfo" / "name").read_text() == "web-1"
    labels = (root / "podinfo" / "labels").read_text()
    assert 'app="web"\n' in labels and 'statefulset.kubernetes.io/pod-name="web-1"\n' in labels
    assert not (root / "podinfo" / "cpu").exists()  # no resource limits for a local process
    assert (root / "bundle" / "colors" / "now").read_text() == "blue"
    assert (root / "bundle" / "token").read_text() == "tok"
    assert (root / "bundle" / "note").read_text() == "plain"
    assert (root / "bundle" / "ns").read_text() == "shop"
    assert stat.S_IMODE((root / "bundle" / "token").stat().st_mode) == 0o440
    assert not (root / "bundle" / "token-sa").exists()


def test_each_opaque_tcp_port_of_a_selecting_service_gets_a_sidecar_port() -> None:
    plan = _plan(
        MANIFESTS
        + """\
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports:
    - {name: http, port: 80}
    - {name: tcp-cache, port: 6379}
    - {name: db, port: 5432, appProtocol: postgresql}
    - {name: mongo, port: 27017}
"""
    )
    web = [replica for replica in plan.replicas if replica.deployment == "web"]
    assert [name for name, _ in web[0].tcp_ports] == ["mongo", "tcp-cache"]
    taken = [port for replica in web for _, port in replica.tcp_ports]
    assert len(set(taken)) == len(taken) == 4
    assert all(not replica.tcp_ports for replica in plan.replicas if replica.deployment != "web")
