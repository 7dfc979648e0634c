"""The emulator's fixes of kmock's gaps, over real HTTP (tests/support/kube_emulator.py)."""

from __future__ import annotations

import asyncio
import http.client
import json
import time
import urllib.parse
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.kube_emulator import EmulatedCluster, emulated_cluster_in_thread

CMS = "/api/v1/namespaces/default/configmaps"
GSCS = "/apis/gossip-operator.dev/v1alpha1/namespaces/default/gossipclusters"


async def _req(cluster: EmulatedCluster, method: str, path: str, body: Any = None,
               content_type: str = "application/merge-patch+json", **params: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.request(
            method, cluster.url + path, params=params, data=None if body is None else json.dumps(body),
            headers={"Content-Type": content_type}) as response:
        return response.status, await response.json(content_type=None)


async def test_create_stamps_metadata_and_answers_201(cluster: EmulatedCluster) -> None:
    status, obj = await _req(cluster, "POST", CMS, {"metadata": {"name": "a"}, "data": {"k": "v"}},
                             content_type="application/json")
    assert status == 201
    meta = obj["metadata"]
    assert meta["namespace"] == "default" and meta["uid"] and meta["creationTimestamp"].endswith("Z")
    assert meta["generation"] == 1 and int(meta["resourceVersion"]) > 0
    status, again = await _req(cluster, "POST", CMS, {"metadata": {"name": "a"}}, content_type="application/json")
    assert (status, again["reason"]) == (409, "AlreadyExists")
    status, generated = await _req(cluster, "POST", CMS, {"metadata": {"generateName": "ev-"}},
                                   content_type="application/json")
    assert status == 201 and generated["metadata"]["name"].startswith("ev-")


async def test_patches_generation_conflicts_and_failed_json_patch_test(cluster: EmulatedCluster) -> None:
    _, obj = await _req(cluster, "POST", CMS, {"metadata": {"name": "a"}, "data": {"k": "v"}},
                        content_type="application/json")
    rv = obj["metadata"]["resourceVersion"]
    _, patched = await _req(cluster, "PATCH", f"{CMS}/a", {"data": {"k": "w"}})
    assert patched["metadata"]["generation"] == 2 and patched["metadata"]["resourceVersion"] != rv
    _, same = await _req(cluster, "PATCH", f"{CMS}/a", {"data": {"k": "w"}})
    assert same["metadata"]["resourceVersion"] == patched["metadata"]["resourceVersion"]  # no-op: no bump
    status, body = await _req(cluster, "PATCH", f"{CMS}/a", [{"op": "test", "path": "/metadata/resourceVersion",
                                                              "value": rv}], "application/json-patch+json")
    assert (status, body["reason"]) == (422, "Invalid")
    status, body = await _req(cluster, "PATCH", f"{CMS}/a", {"metadata": {"resourceVersion": rv}})
    assert (status, body["reason"]) == (409, "Conflict")
    status, body = await _req(cluster, "PATCH", f"{CMS}/missing", {"data": {}})
    assert (status, body["reason"]) == (404, "NotFound")


async def test_list_has_kind_and_version_and_discovery_is_right(cluster: EmulatedCluster) -> None:
    await _req(cluster, "POST", CMS, {"metadata": {"name": "a", "labels": {"x": "1"}}},
               content_type="application/json")
    await _req(cluster, "POST", CMS, {"metadata": {"name": "b"}}, content_type="application/json")
    _, listing = await _req(cluster, "GET", CMS)
    assert (listing["apiVersion"], listing["kind"]) == ("v1", "ConfigMapList")
    assert listing["metadata"]["resourceVersion"] and len(listing["items"]) == 2
    _, selected = await _req(cluster, "GET", CMS, labelSelector="x=1")
    assert [i["metadata"]["name"] for i in selected["items"]] == ["a"]
    _, core = await _req(cluster, "GET", "/api/v1")
    assert core["groupVersion"] == "v1"
    _, ours = await _req(cluster, "GET", "/apis/gossip-operator.dev/v1alpha1")
    entries = {r["name"]: r for r in ours["resources"]}
    assert entries["gossipclusters"]["shortNames"] == ["gossip", "gsc"]
    assert (entries["gossipclusters/scale"]["group"], entries["gossipclusters/scale"]["kind"]) == (
        "autoscaling", "Scale")


async def test_status_and_scale_subresources(cluster: EmulatedCluster) -> None:
    body = {"metadata": {"name": "d"}, "spec": {"replicas": 3, "image": "x"}, "status": {"replicas": 9}}
    _, obj = await _req(cluster, "POST", GSCS, body, content_type="application/json")
    assert "status" not in obj  # dropped on create
    _, obj = await _req(cluster, "PATCH", f"{GSCS}/d", {"spec": {"image": "y"}, "status": {"replicas": 9}})
    assert "status" not in obj and obj["metadata"]["generation"] == 2
    _, obj = await _req(cluster, "PATCH", f"{GSCS}/d/status", {"spec": {"image": "z"},
                                                               "status": {"replicas": 2, "selector": "a=b"}})
    assert obj["spec"]["image"] == "y" and obj["status"]["replicas"] == 2 and obj["metadata"]["generation"] == 2
    _, scale = await _req(cluster, "GET", f"{GSCS}/d/scale")
    assert (scale["kind"], scale["spec"]["replicas"], scale["status"]) == ("Scale", 3, {"replicas": 2,
                                                                                       "selector": "a=b"})
    _, scale = await _req(cluster, "PATCH", f"{GSCS}/d/scale", {"spec": {"replicas": 5}})
    assert scale["spec"]["replicas"] == 5
    _, obj = await _req(cluster, "GET", f"{GSCS}/d")
    assert obj["spec"]["replicas"] == 5 and obj["metadata"]["generation"] == 3


async def test_watch_honours_resource_version_and_is_json(cluster: EmulatedCluster) -> None:
    _, a = await _req(cluster, "POST", CMS, {"metadata": {"name": "a"}}, content_type="application/json")
    since = a["metadata"]["resourceVersion"]
    await _req(cluster, "PATCH", f"{CMS}/a", {"data": {"k": "1"}})
    await _req(cluster, "POST", CMS, {"metadata": {"name": "b"}}, content_type="application/json")
    async with aiohttp.ClientSession() as session, session.get(
            cluster.url + CMS, params={"watch": "true", "resourceVersion": since, "timeoutSeconds": "1"}) as response:
        assert response.headers["Content-Type"].startswith("application/json")
        lines = [json.loads(line) async for line in response.content if line.strip()]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in lines] == [("MODIFIED", "a"), ("ADDED", "b")]


async def test_finalizers_and_garbage_collection(cluster: EmulatedCluster) -> None:
    _, owner = await _req(cluster, "POST", GSCS, {"metadata": {"name": "o", "finalizers": ["x/y"]},
                                                  "spec": {"image": "i"}}, content_type="application/json")
    ref = {"apiVersion": "gossip-operator.dev/v1alpha1", "kind": "GossipCluster", "name": "o",
           "uid": owner["metadata"]["uid"], "controller": True}
    await _req(cluster, "POST", CMS, {"metadata": {"name": "child", "ownerReferences": [ref]}},
               content_type="application/json")
    _, deleting = await _req(cluster, "DELETE", f"{GSCS}/o")
    assert deleting["metadata"]["deletionTimestamp"]
    assert (await _req(cluster, "GET", f"{CMS}/child"))[0] == 200
    await _req(cluster, "PATCH", f"{GSCS}/o", {"metadata": {"finalizers": None}})
    await asyncio.sleep(0)
    assert (await _req(cluster, "GET", f"{GSCS}/o"))[0] == 404
    assert (await _req(cluster, "GET", f"{CMS}/child"))[0] == 404
    writes = cluster.writes()
    assert {w.verb for w in writes} == {"create", "delete", "patch"}


def _watch_lines(url: str, path: str, *, read_timeout: float) -> tuple[http.client.HTTPConnection, Any]:
    """Open a watch from this (non-emulator) thread; the socket times out after read_timeout seconds."""
    parsed = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=read_timeout)
    connection.request("GET", f"{path}?watch=true&timeoutSeconds=60")
    response = connection.getresponse()
    assert response.status == 200
    return connection, response


def test_writes_from_the_test_thread_wake_watchers_at_once(tmp_path: Path) -> None:
    """create/patch/delete called from another thread than the emulator's loop must wake its watchers then,
    not whenever the loop next wakes up for another reason (here: never before the 60 s watch timeout)."""
    with emulated_cluster_in_thread(tmp_path / "kubeconfig") as cluster:
        connection, response = _watch_lines(cluster.url, CMS, read_timeout=10)
        try:
            time.sleep(0.2)  # the watch is registered and the emulator's loop is idle again
            cluster.api.create_object("v1/configmaps", {"metadata": {"name": "a", "namespace": "default"}})
            added = json.loads(response.readline())
            cluster.api.patch_object("v1/configmaps", "default", "a", {"data": {"k": "v"}})
            modified = json.loads(response.readline())
            cluster.api.delete_object("v1/configmaps", "default", "a")
            deleted = json.loads(response.readline())
        finally:
            connection.close()
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in (added, modified, deleted)] == [
            ("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]
        assert cluster.api.get_object("v1/configmaps", "default", "a") is None
        assert cluster.api.list_objects("v1/configmaps", "default") == []
