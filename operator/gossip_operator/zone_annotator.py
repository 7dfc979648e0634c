"""Write each agent pod's zone annotation (the decision is zones.py's; this module only patches).

Called from three places (handlers.py), each with what kopf's indexes already hold, so no call here reads
the API: a pod event (the pod was scheduled or its annotation changed), a node event (the node appeared or
was relabelled: every agent pod on it), and each cluster's resync pass (a patch that failed once is retried
there; kopf does not retry event handlers). Patches are merge patches of one annotation, idempotent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from gossip_operator import zones
from gossip_operator.kube import ApiError, NotFound
from gossip_operator.manifests.resources import PODS
from gossip_operator.runtime import Runtime

logger = logging.getLogger(__name__)

NodeLookup = Callable[[str], zones.NodeZone | None]


async def annotate(runtime: Runtime, pods: Iterable[zones.PodZone], node_zone: NodeLookup) -> int:
    """Bring the pods' zone annotations in line with their nodes; returns how many pods were patched.

    A pod that is gone (404) is skipped; any other failure is logged and counted, and the rest still get
    theirs (the next event or resync pass tries again).
    """
    patched = 0
    for pod in pods:
        node = node_zone(pod.node) if pod.node else None
        if node is not None and pod.node and not node.problem:
            runtime.zone_problems.pop(pod.node, None)
        if node is not None and pod.node and node.problem and runtime.zone_problems.get(pod.node) != node.problem:
            runtime.zone_problems[pod.node] = node.problem
            runtime.metrics.zone_annotations.labels(result="invalid_label").inc()
            logger.warning("Zone of node %s not used (its pods get none): %s", pod.node, node.problem)
        patch = zones.annotation_patch(pod, node)
        if patch is None:
            continue
        try:
            await runtime.kube.patch(PODS, pod.namespace, pod.name, patch)
        except NotFound:
            continue
        except ApiError as exc:
            runtime.metrics.zone_annotations.labels(result="error").inc()
            logger.warning("%s/%s: could not write the zone annotation: %s", pod.namespace, pod.name, exc)
            continue
        runtime.metrics.zone_annotations.labels(result="written").inc()
        patched += 1
    return patched
