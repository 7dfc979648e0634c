"""drift: when a live child matches, and the three-way merge patch."""

from __future__ import annotations

from gossip_operator.manifests.drift import canonical, matches, merge_patch, without_paths


def test_server_defaults_do_not_count_as_drift() -> None:
    desired = {"spec": {"ports": [{"name": "http", "port": 7946}], "selector": {"a": "b"}}}
    live = {"spec": {"ports": [{"name": "http", "port": 7946, "protocol": "TCP"}], "selector": {"a": "b"},
                     "clusterIP": "10.0.0.1"}, "status": {}}
    assert matches(desired, live)


def test_changes_count() -> None:
    assert not matches({"spec": {"replicas": 3}}, {"spec": {"replicas": 4}})
    assert not matches({"spec": {"items": [1, 2]}}, {"spec": {"items": [1]}})
    assert not matches({"a": {"b": 1}}, {})
    assert not matches({"flag": True}, {"flag": 1})


def test_quantities_compare_by_value() -> None:
    assert matches({"memory": "1024Mi", "cpu": "0.5"}, {"memory": "1Gi", "cpu": "500m"})
    assert not matches({"memory": "1Gi"}, {"memory": "2Gi"})


def test_merge_patch_removes_what_the_last_apply_had() -> None:
    last = {"spec": {"nodeSelector": {"zone": "a"}, "replicas": 3}, "metadata": {"labels": {"x": "1"}}}
    desired = {"spec": {"replicas": 4}, "metadata": {"labels": {}}}
    assert merge_patch(desired, last) == {"spec": {"replicas": 4, "nodeSelector": None}, "metadata": {"labels": {}}}
    assert merge_patch({"a": {"b": 1}}, None) == {"a": {"b": 1}}


def test_without_paths_and_canonical() -> None:
    body = {"spec": {"selector": {"x": 1}, "replicas": 3}}
    assert without_paths(body, (("spec", "selector"),)) == {"spec": {"replicas": 3}}
    assert body["spec"]["selector"] == {"x": 1}  # not mutated
    assert canonical({"b": 1, "a": 2}) == '{"a":2,"b":1}'
