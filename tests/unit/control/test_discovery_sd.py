"""Target groups from proxy-status items: one per admin endpoint, ordered, labels as Prometheus
spells them."""

from __future__ import annotations

from gossamer.control.api.discovery_sd import META, label_name, target_groups


def item(admin: str, workload: str, replica: str = "cp-a", **labels: str) -> dict[str, object]:
    return {
        "proxy": f"{workload}~{replica}~1",
        "name": f"{workload}-1",
        "workload": workload,
        "namespace": "default",
        "role": "sidecar",
        "controlPlane": replica,
        "admin": admin,
        "address": "127.0.0.1",
        "labels": labels,
    }


def test_one_group_per_admin_endpoint_the_first_listing_wins_sorted_by_workload() -> None:
    groups = target_groups(
        [
            item("127.0.0.1:3", "ratings"),
            item("127.0.0.1:1", "reviews-v1", app="reviews"),
            item("127.0.0.1:1", "reviews-v1", replica="cp-b"),  # its old replica's lease
            item("", "old-proxy"),  # announced no admin endpoint
        ]
    )
    assert [group["targets"] for group in groups] == [["127.0.0.1:3"], ["127.0.0.1:1"]]
    reviews = groups[1]["labels"]
    assert reviews[META + "control_plane"] == "cp-a"
    assert reviews[META + "app"] == "reviews"
    assert reviews[META + "version"] == "unknown"
    assert groups[0]["labels"][META + "app"] == "ratings"  # no app label: the workload


def test_pod_label_keys_become_label_names() -> None:
    assert label_name("app.kubernetes.io/name") == "app_kubernetes_io_name"
    [group] = target_groups([item("h:1", "web", **{"app.kubernetes.io/version": "2"})])
    assert group["labels"][META + "label_app_kubernetes_io_version"] == "2"
    assert group["labels"][META + "version"] == "2"
