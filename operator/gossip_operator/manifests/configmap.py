"""The agent's ConfigMap: `config.json` in the agent config format (docs/agent-api.md).

JSON, not YAML: the agent reads JSON without importing a YAML parser, ~1 MiB less resident per pod.

The spec's agent sections are copied as they are (same camelCase keys); the operator adds what only it knows:
the port, the data directory, the paths where the keyring and TLS Secrets are mounted, the path of the pod's
zone file (`topology.zoneFile`: a downward-API file of the pod's zone annotation, see zones.py), and the seeds.
The pod name and pod IP come from the environment (GOSSIP_NAME, GOSSIP_ADVERTISE_ADDRESS), not from here,
so one ConfigMap serves every pod.

Seeds: the stable DNS names of the first (up to) three pods plus the headless Service's name, which
resolves to every pod, ready or not (publishNotReadyAddresses). They are relative (`NAME-0.NAME-peers.NS.svc`):
the pod's resolv.conf search path completes them with the cluster's real domain, so nothing assumes
cluster.local (a domain is appended only when the operator is configured with one). With one replica there
are no seeds: an agent alone must not wait to join anybody (its readiness requires a joined peer when seeds are set).
Seeds are left out of the config hash on the pod template: they only matter when an agent starts, so scaling
(which changes the list) must not restart the running agents.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from gossip_agent.core.config import SECTIONS, TopologyConfig, camel
from gossip_operator.manifests.common import (
    API_TOKENS_DIR,
    API_TOKENS_KEY,
    DATA_DIR,
    KEYRING_DIR,
    KEYRING_KEY,
    TLS_DIR,
    ZONE_FILE,
    Names,
    Owner,
    headless_dns_name,
    metadata,
    pod_dns_name,
)
from gossip_operator.spec import ClusterSpec

CONFIG_KEY = "config.json"
SEED_PODS = 3


def _setting_key(cls: type[Any], attr: str) -> tuple[str, str]:
    """(section, key) the agent's config file uses for a setting, from its declaration in gossip_agent.core.config
    (a renamed or moved setting fails here, at import, instead of being silently ignored by the agents)."""
    if attr not in {f.name for f in dataclasses.fields(cls)}:
        raise AssertionError(f"{cls.__name__} declares no setting {attr}")
    section = next(key for key, _, section_cls in SECTIONS if section_cls is cls)
    return section, camel(attr)


# The pod's zone, as the downward-API file the StatefulSet mounts (manifests/statefulset.py, zones.py).
ZONE_FILE_SETTING = _setting_key(TopologyConfig, "zone_file")


def seeds(spec: ClusterSpec, cluster_domain: str) -> list[str]:
    if spec.replicas <= 1:
        return []
    pods = [f"{pod_dns_name(spec, i, cluster_domain)}:{spec.port}" for i in range(min(spec.replicas, SEED_PODS))]
    return [*pods, f"{headless_dns_name(spec, cluster_domain)}:{spec.port}"]


def agent_config(spec: ClusterSpec, cluster_domain: str, *, with_seeds: bool = True,
                 tls_ca: bool = True) -> dict[str, Any]:
    """The agent config mapping (what `gossip_agent.core.config.from_mapping` reads). `tls_ca`: the TLS Secret
    has a ca.crt (without one the agent verifies peers against the system trust store)."""
    config: dict[str, Any] = {
        "bindAddress": "0.0.0.0",
        "port": spec.port,
        "preset": spec.preset,
    }
    if with_seeds:
        config["seeds"] = seeds(spec, cluster_domain)
    zone_section, zone_key = ZONE_FILE_SETTING
    for section, values in spec.agent_sections.items():
        if section not in ("storage", "security", zone_section):  # these get the operator's keys too (below)
            config[section] = dict(values)
    config["storage"] = {**spec.agent_sections.get("storage", {}), "dataDir": DATA_DIR}
    security: dict[str, Any] = {**spec.agent_sections.get("security", {}),
                                "keyringFile": f"{KEYRING_DIR}/{KEYRING_KEY}",
                                "apiTokensFile": f"{API_TOKENS_DIR}/{API_TOKENS_KEY}"}
    if spec.tls:
        security |= {"tlsCertFile": f"{TLS_DIR}/tls.crt", "tlsKeyFile": f"{TLS_DIR}/tls.key"}
        if tls_ca:  # a missing file would stop the agent at start
            security["tlsCaFile"] = f"{TLS_DIR}/ca.crt"  # the agent reads tlsCaFile (docs/agent-api.md: tlsCAFile)
    config["security"] = security
    config[zone_section] = {**spec.agent_sections.get(zone_section, {}), zone_key: ZONE_FILE}
    return config


def config_hash(spec: ClusterSpec, cluster_domain: str, *, tls_ca: bool = True) -> str:
    """Checksum of everything in the config an agent reads at start, except the seeds."""
    canonical = json.dumps(agent_config(spec, cluster_domain, with_seeds=False, tls_ca=tls_ca), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def render(spec: ClusterSpec, owner: Owner, *, cluster_domain: str, tls_ca: bool = True) -> dict[str, Any]:
    text = json.dumps(agent_config(spec, cluster_domain, tls_ca=tls_ca), indent=2) + "\n"
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(spec, owner, Names.of(spec.name).configmap),
        "data": {CONFIG_KEY: text},
    }
