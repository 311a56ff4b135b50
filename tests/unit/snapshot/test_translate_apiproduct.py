"""Which products a gateway enforces: all of them, or those whose `gateways` select it."""

from gossamer.resources import Resource, load_text
from gossamer.snapshot.translate_apiproduct import api_products

MANIFESTS = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: edge}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: partners, namespace: shop}
spec:
  selector: {app: partners-gw}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
"""

PRODUCT = """\
---
apiVersion: gossamer.dev/v1alpha1
kind: ApiProduct
metadata: {{name: {name}, namespace: shop}}
spec:
  gateways: {gateways}
  routes: [{{uri: {{prefix: /{name}}}}}]
  plans: [{{name: basic}}]
"""


def resources() -> list[Resource]:
    text = MANIFESTS
    for name, gateways in (
        ("everywhere", "[]"),
        ("public", "[edge/public]"),
        ("partners", "[partners]"),
        ("nowhere", "[missing]"),
    ):
        text += PRODUCT.format(name=name, gateways=gateways)
    result = load_text(text, "test.yaml")
    assert not result.problems, result.problems
    return [loaded.resource for loaded in result.resources]


def names(labels: dict[str, str] | None) -> list[str]:
    return [product.name for product in api_products(resources(), (), 0.0, labels)]


def test_a_gateway_enforces_the_products_of_the_gateways_that_select_it() -> None:
    assert names({"istio": "ingressgateway"}) == ["shop/everywhere", "shop/public"]
    assert names({"app": "partners-gw", "version": "v1"}) == ["shop/everywhere", "shop/partners"]
    assert names({"app": "other"}) == ["shop/everywhere"]


def test_without_a_gateway_every_product_is_listed() -> None:
    assert names(None) == ["shop/everywhere", "shop/nowhere", "shop/partners", "shop/public"]
