"""Broken manifests: each case gives the one-line problem with the right file, line and field."""

from pathlib import Path

import pytest

from gossamer.resources import Severity, validate_paths

SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: reviews
spec:
  selector: {app: reviews}
  ports:
  - name: http
    port: 9080
"""

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: reviews-v1
spec:
  selector:
    matchLabels: {app: reviews, version: v1}
  template:
    metadata:
      labels: {app: reviews, version: v1}
    spec:
      containers:
      - name: reviews
        command: ["python", "-m", "reviews"]
        ports:
        - {name: http, containerPort: 9080}
"""

RULE = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets:
  - name: v1
    labels: {version: v1}
"""

CASES: list[tuple[str, str, list[str]]] = [
    (
        "yaml syntax error",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: [a\n",
        ["m.yaml:4: YAML syntax error: did not find expected ',' or ']'"],
    ),
    (
        "wrong type: string where a number belongs",
        SERVICE.replace("port: 9080", 'port: "9080"'),
        [
            "m.yaml:9: Service reviews: spec.ports[0].port: must be an integer, not the string '9080'"
        ],
    ),
    (
        "wrong type: number where a string belongs",
        SERVICE.replace("name: reviews", "name: reviews\n  labels: {version: 1}"),
        [
            "m.yaml:5: Service reviews: metadata.labels.version: "
            'must be a string, not the number 1 (quote it: "1")'
        ],
    ),
    (
        "unknown field with a suggestion",
        SERVICE.replace("  selector:", "  selectr:"),
        ["m.yaml:6: Service reviews: spec.selectr: unknown field (did you mean selector?)"],
    ),
    (
        "unknown top-level field",
        SERVICE + "extra: true\n",
        [
            "m.yaml:10: Service reviews: extra: unknown field (known fields: apiVersion, kind, "
            "metadata, status, spec)"
        ],
    ),
    (
        "value out of range",
        """\
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 20
    - destination:
        host: reviews
        subset: v1
      weight: 120
""",
        [
            "m.yaml:14: VirtualService reviews: spec.http[0].route[1].weight: "
            "must be between 0 and 100, not 120"
        ],
    ),
    (
        "enum value",
        SERVICE.replace("    port: 9080", "    port: 9080\n    protocol: tcp"),
        [
            "m.yaml:10: Service reviews: spec.ports[0].protocol: "
            "must be one of 'TCP', 'UDP' or 'SCTP', not 'tcp'"
        ],
    ),
    (
        "bad duration",
        """\
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
    timeout: 10 seconds
""",
        [
            "m.yaml:9: VirtualService reviews: spec.http[0].timeout: "
            "must be a duration such as 1.5s, 100ms or 2m, not '10 seconds'"
        ],
    ),
    (
        "required field missing",
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r}\n"
        "spec:\n  subsets: []\n",
        ["m.yaml:4: DestinationRule r: spec.host: required field is missing"],
    ),
    (
        "name missing",
        "apiVersion: v1\nkind: Service\nmetadata:\n  labels: {a: b}\n",
        ["m.yaml:3: Service (unnamed): metadata.name: required field is missing"],
    ),
    (
        "key given twice",
        SERVICE.replace("  ports:", "  selector: {app: other}\n  ports:"),
        [
            "m.yaml:6: warning: Service reviews: spec.selector: matches no Deployment or "
            "WorkloadEntry in namespace default, so the Service has no endpoints",
            "m.yaml:7: Service reviews: spec.selector: given twice; line 6 already sets it",
        ],
    ),
    (
        "unknown kind",
        "apiVersion: v1\nkind: Servise\nmetadata: {name: a}\n",
        [
            "m.yaml:2: Servise a: kind: unknown kind Servise; did you mean Service?",
        ],
    ),
    (
        "unknown kind of a known group",
        "apiVersion: apps/v1\nkind: Rollout\nmetadata: {name: a}\n",
        [
            "m.yaml:2: Rollout a: kind: unknown kind Rollout (apps/v1 has ControllerRevision, "
            "DaemonSet, Deployment, ReplicaSet, StatefulSet)",
        ],
    ),
    (
        "unknown kind of an unknown group",
        "apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata: {name: a}\n",
        [
            "m.yaml:2: Rollout a: kind: unknown kind Rollout: Gossamer does not read the API "
            "group argoproj.io (apps, autoscaling, batch, core, extensions, "
            "gateway.networking.k8s.io, gossamer.dev, networking.istio.io, "
            "networking.k8s.io, policy, rbac.authorization.k8s.io, security.istio.io, "
            "telemetry.istio.io)",
        ],
    ),
    (
        "kind in the wrong case",
        "apiVersion: v1\nkind: service\nmetadata: {name: a}\n",
        ["m.yaml:2: service a: kind: unknown kind service; did you mean Service?"],
    ),
    (
        "known kind, unknown version",
        "apiVersion: networking.istio.io/v2\nkind: Gateway\nmetadata: {name: a}\n",
        [
            "m.yaml:1: Gateway a: apiVersion: Gateway is read as networking.istio.io/v1, "
            "networking.istio.io/v1alpha3 or networking.istio.io/v1beta1, not networking.istio.io/v2"
        ],
    ),
    (
        "apiVersion missing",
        "kind: Service\nmetadata: {name: a}\n",
        ["m.yaml:1: Service a: apiVersion: required field is missing"],
    ),
    (
        "document is not a mapping",
        "- just\n- a list\n",
        ["m.yaml:1: a manifest must be a mapping with apiVersion, kind and metadata"],
    ),
    (
        "container with an image and no command",
        DEPLOYMENT.replace(
            '        command: ["python", "-m", "reviews"]\n', "        image: reviews:1\n"
        ),
        [
            "m.yaml:13: Deployment reviews-v1: spec.template.spec.containers[0].command: a command "
            "is needed: Gossamer runs each container as a local process, so give command (and args) "
            "(image reviews:1 is kept but not run)"
        ],
    ),
    (
        "selector that does not match the template",
        DEPLOYMENT.replace("labels: {app: reviews, version: v1}", "labels: {app: reviews}"),
        [
            "m.yaml:6: Deployment reviews-v1: spec.selector: does not match "
            "spec.template.metadata.labels, so the Deployment would own none of its replicas"
        ],
    ),
    (
        "route to a subset no DestinationRule defines",
        SERVICE
        + "---\n"
        + DEPLOYMENT
        + "---\n"
        + RULE
        + """\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v2}
""",
        [
            "m.yaml:45: VirtualService reviews: spec.http[0].route[0].destination.subset: "
            "DestinationRule reviews (m.yaml:28) defines no subset v2 (subsets: v1); requests to "
            "this route would fail"
        ],
    ),
    (
        "route to an unknown service, weights not adding up",
        """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - route:
    - destination: {host: ratings}
      weight: 50
    - destination: {host: ratings.prod.svc.cluster.local}
      weight: 40
""",
        [
            "m.yaml:7: warning: VirtualService ratings: spec.http[0].route: weights add up to 90, "
            "not 100; traffic will be split in proportion",
            "m.yaml:8: warning: VirtualService ratings: spec.http[0].route[0].destination.host: "
            "no Service or ServiceEntry is named ratings (ratings.default.svc.cluster.local)",
            "m.yaml:10: warning: VirtualService ratings: spec.http[0].route[1].destination.host: "
            "no Service or ServiceEntry is named ratings.prod.svc.cluster.local "
            "(ratings.prod.svc.cluster.local)",
        ],
    ),
    (
        "two VirtualServices claim one host",
        SERVICE
        + "---\n"
        + DEPLOYMENT
        + """\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: b}
spec:
  hosts: [reviews.default.svc.cluster.local]
  http: [{route: [{destination: {host: reviews}}]}]
""",
        [
            "m.yaml:39: VirtualService b: spec.hosts[0]: host reviews.default.svc.cluster.local is "
            "also routed by VirtualService a (m.yaml:28); inside the mesh one VirtualService must "
            "own a host"
        ],
    ),
    (
        "selector that matches no Deployment",
        SERVICE,
        [
            "m.yaml:6: warning: Service reviews: spec.selector: matches no Deployment or "
            "WorkloadEntry in namespace default, so the Service has no endpoints"
        ],
    ),
    (
        "the same object twice",
        SERVICE + "---\n" + DEPLOYMENT + "---\n" + SERVICE,
        [
            "m.yaml:31: Service reviews: metadata.name: Service default/reviews is already defined "
            "at m.yaml:1"
        ],
    ),
    (
        "ingress to an unknown service and port",
        SERVICE
        + "---\n"
        + DEPLOYMENT
        + """\
---
apiVersion: extensions/v1beta1
kind: Ingress
metadata: {name: web}
spec:
  rules:
  - host: example.com
    http:
      paths:
      - path: /reviews
        backend: {serviceName: reviews, servicePort: 8080}
      - path: /ratings
        backend: {serviceName: ratings, servicePort: 8080}
""",
        [
            "m.yaml:37: warning: Ingress web: spec.rules[0].http.paths[0].backend: Service reviews "
            "has no port 8080 (ports: 9080 (http))",
            "m.yaml:39: warning: Ingress web: spec.rules[0].http.paths[1].backend.serviceName: "
            "no Service named ratings in namespace default",
        ],
    ),
    (
        "topic with an undefined dead-letter topic",
        "apiVersion: gossamer.dev/v1alpha1\nkind: Topic\nmetadata: {name: users}\nspec:\n"
        "  deadLetter:\n    topic: users-dlq\n",
        [
            "m.yaml:6: warning: Topic users: spec.deadLetter.topic: no Topic named users-dlq in "
            "namespace default"
        ],
    ),
    (
        "topic schema that is not a JSON Schema",
        "apiVersion: gossamer.dev/v1alpha1\nkind: Topic\nmetadata: {name: users}\nspec:\n"
        "  schema:\n    type: objekt\n",
        [
            "m.yaml:6: Topic users: spec.schema.type: not a valid JSON Schema at type: 'objekt' is "
            "not valid under any of the given schemas"
        ],
    ),
    (
        "api product consumer on an unknown plan",
        """\
apiVersion: gossamer.dev/v1alpha1
kind: ApiProduct
metadata: {name: p}
spec:
  routes: [{uri: {prefix: /}}]
  plans: [{name: free}]
  consumers:
  - name: acme
    plan: gold
    keys: [{sha256: abc}]
""",
        [
            "m.yaml:9: ApiProduct p: spec.consumers[0].plan: no plan named gold (plans: free)",
            "m.yaml:10: ApiProduct p: spec.consumers[0].keys[0].sha256: must be 64 lowercase "
            "hexadecimal digits",
        ],
    ),
    (
        "api product plan naming an unknown route, and a zero window",
        """\
apiVersion: gossamer.dev/v1alpha1
kind: ApiProduct
metadata: {name: p}
spec:
  routes: [{name: records, uri: {prefix: /records}}]
  plans:
  - name: free
    routes: [reports]
    rateLimit: {requests: 20, per: 0s}
""",
        [
            "m.yaml:8: ApiProduct p: spec.plans[0].routes[0]: no route named reports (records)",
            "m.yaml:9: ApiProduct p: spec.plans[0].rateLimit.per: must be longer than 0s",
        ],
    ),
    (
        "authorization policy with an unknown condition key",
        """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p, namespace: istio-system}
spec:
  rules:
  - when:
    - key: request.header[x-user]
      values: ["a"]
""",
        [
            "m.yaml:7: AuthorizationPolicy p: spec.rules[0].when[0].key: unknown condition key "
            "'request.header[x-user]'"
        ],
    ),
    (
        "a kubectl List of objects",
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n"
        "  metadata: {name: a}\n  spec:\n    ports: [{port: 0}]\n",
        ["m.yaml:8: Service a: spec.ports[0].port: must be between 1 and 65535, not 0"],
    ),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_problem_lines(
    text: str, expected: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("m.yaml").write_text(text)
    result = validate_paths([Path("m.yaml")])
    assert [str(problem) for problem in result.problems] == expected


def test_warnings_alone_leave_a_configuration_valid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("m.yaml").write_text(SERVICE)
    result = validate_paths([Path("m.yaml")])
    assert result.count(Severity.WARNING) == 1
    assert result.ok
    assert not validate_paths([Path("m.yaml")], strict=True).ok


def test_a_valid_mesh_has_no_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("m.yaml").write_text(SERVICE + "---\n" + DEPLOYMENT + "---\n" + RULE)
    result = validate_paths([Path("m.yaml")])
    assert result.problems == ()
    assert [r.name for r in result.loaded.resources] == ["reviews", "reviews-v1", "reviews"]
