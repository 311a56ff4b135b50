"""The manifests of the source note, and the reference application built from it, load as they are."""

from pathlib import Path

from gossamer.resources import Severity, load_text, validate_paths
from gossamer.resources.kinds.core import Service
from gossamer.resources.kinds.ingress import IngressV1Beta1

REPO = Path(__file__).resolve().parents[3]

# As the source note writes them for Kubernetes (with the indentation its page lost restored).
SEED_INGRESS = """\
apiVersion: extensions/v1beta1
kind: Ingress
metadata:
  name: assetmanagement
spec:
  rules:
    - host: assetmanagement.example.com
      http:
        paths:
          - path: /assetconsumer
            backend:
              serviceName: asset-consumer-svc
              servicePort: 8080
          - path: /assetdashboard
            backend:
              serviceName: asset-dashboard-bff-svc
              servicePort: 8080
          - path: /assetmgrms
            backend:
              serviceName: asset-mgr-ms-svc
              servicePort: 8080
"""

SEED_SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: asset-consumer-svc
  labels:
    chart: asset-consumer
spec:
  type: ClusterIP
  ports:
  - port: 8080
    targetPort: 8080
    protocol: TCP
    name: asset-consumer-svc
  selector:
    app: asset-consumer
"""


def test_the_seed_ingress_loads_with_its_paths() -> None:
    result = load_text(SEED_INGRESS, "ingress.yaml")
    assert result.problems == []
    (loaded,) = result.resources
    assert isinstance(loaded.resource, IngressV1Beta1)
    routes = [(r.host, r.http_path, r.service, r.port) for r in loaded.resource.routes()]
    assert routes == [
        ("assetmanagement.example.com", "/assetconsumer", "asset-consumer-svc", 8080),
        ("assetmanagement.example.com", "/assetdashboard", "asset-dashboard-bff-svc", 8080),
        ("assetmanagement.example.com", "/assetmgrms", "asset-mgr-ms-svc", 8080),
    ]


def test_the_seed_service_loads_as_cluster_ip() -> None:
    result = load_text(SEED_SERVICE, "service.yaml")
    assert result.problems == []
    service = result.resources[0].resource
    assert isinstance(service, Service)
    assert service.spec.type == "ClusterIP"
    assert service.spec.selector == {"app": "asset-consumer"}
    assert [(p.port, p.effective_target, p.name) for p in service.spec.ports] == [
        (8080, 8080, "asset-consumer-svc")
    ]


def test_the_reference_application_is_valid_with_no_warning() -> None:
    result = validate_paths([REPO / "examples" / "assets"])
    assert [str(p) for p in result.problems] == []
    kinds = sorted({loaded.kind for loaded in result.loaded.resources})
    assert kinds == [
        "ApiProduct",
        "AuthorizationPolicy",
        "ConfigMap",
        "Deployment",
        "DestinationRule",
        "Ingress",
        "PeerAuthentication",
        "RequestAuthentication",
        "Service",
        "Topic",
        "VirtualService",
    ]


def test_strict_names_the_fields_of_the_reference_application_nothing_acts_on() -> None:
    result = validate_paths([REPO / "examples" / "assets"], strict=True)
    assert not result.ok
    assert {p.severity for p in result.problems} == {Severity.NOTICE}
    paths = {(p.kind, p.path) for p in result.problems}
    # The event backbone's Topics are read by the broker, not by the mesh.
    assert ("Topic", "spec.partitions") in paths
    assert ("DestinationRule", "spec.trafficPolicy.outlierDetection.interval") in paths
    # Routing, ingress and the processes `up` runs are.
    kinds = {kind for kind, _ in paths}
    assert not kinds & {"VirtualService", "Ingress", "Service"}
    # So are the policies sidecars enforce.
    assert not kinds & {"AuthorizationPolicy", "PeerAuthentication", "RequestAuthentication"}
    assert ("Deployment", "spec.replicas") not in paths
    assert ("Topic", "spec.description") not in paths
