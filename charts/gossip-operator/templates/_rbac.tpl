{{/*
The operator's permissions: exactly the (apiGroup, resource, verb) triples the operator calls,
which gossip_operator.kube.API_CALLS lists (tests/chart checks the rendered rules against it, so
a call added there without a rule here, or a rule left here after a call goes, fails CI).

Rules on cluster-scoped resources (gossip-operator.clusterScopedResources) always go into a
ClusterRole; the rest go into a Role in the release namespace, or into the ClusterRole when
operator.clusterWide is true.
*/}}
{{- define "gossip-operator.rbacRules" -}}
# kopf: list+watch GossipClusters, patch them (progress annotations) and their status; get: a resync re-reads
# its cluster before creating children.
- apiGroups: [gossip-operator.dev]
  resources: [gossipclusters]
  verbs: [get, list, watch, patch]
- apiGroups: [gossip-operator.dev]
  resources: [gossipclusters/status]
  verbs: [patch]
# Children carry ownerReferences with blockOwnerDeletion: true. Where the OwnerReferencesPermissionEnforcement
# admission plugin runs (OpenShift), creating them needs update on the owner's finalizers subresource (403 else).
- apiGroups: [gossip-operator.dev]
  resources: [gossipclusters/finalizers]
  verbs: [update]
# kopf: notice CRDs appearing or changing (resource scanning). Cluster-scoped.
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
# kopf in namespaced mode: which of the served namespaces exist. Cluster-scoped.
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
# kopf's event poster (MemberFailed, InvalidSpec, ... and handler failures).
- apiGroups: [""]
  resources: [events]
  verbs: [create]
# Indexes of agent pods (where to reach the agents); no per-pass LIST. patch: each agent pod gets its node's
# zone as an annotation (projected into the pod by a downward-API volume).
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch, patch]
# An index of the nodes' zone labels (topology.kubernetes.io/zone), for the pods' zone annotation. Cluster-scoped.
- apiGroups: [""]
  resources: [nodes]
  verbs: [list, watch]
# The agents' StatefulSets: indexed (rollout progress) and written.
- apiGroups: [apps]
  resources: [statefulsets]
  verbs: [get, list, watch, create, patch]
# Children: peer and client Services, the agent ConfigMap.
- apiGroups: [""]
  resources: [services, configmaps]
  verbs: [get, create, patch]
# The gossip keyring and TLS CA: read, and a generated keyring created (never patched or deleted).
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, create]
# Optional children, deleted when switched off in the spec.
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, create, patch, delete]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, create, patch, delete]
{{- end }}

{{/* Resources that only a ClusterRole can grant. */}}
{{- define "gossip-operator.clusterScopedResources" -}}
- customresourcedefinitions
- namespaces
- nodes
- persistentvolumes
- storageclasses
- priorityclasses
- clusterroles
- clusterrolebindings
- selfsubjectaccessreviews
- selfsubjectrulesreviews
- tokenreviews
- subjectaccessreviews
{{- end }}

{{/* Rules split by where they can be granted: {"namespaced": [...], "cluster": [...]}. */}}
{{- define "gossip-operator.rbacSplit" -}}
{{- $clusterScoped := include "gossip-operator.clusterScopedResources" . | fromYamlArray }}
{{- $namespaced := list }}
{{- $cluster := list }}
{{- range $rule := include "gossip-operator.rbacRules" . | fromYamlArray }}
{{- $isCluster := false }}
{{- range $rule.resources }}
{{- if has (regexReplaceAll "/.*$" . "") $clusterScoped }}{{ $isCluster = true }}{{ end }}
{{- end }}
{{- if or $isCluster $.Values.operator.clusterWide }}
{{- $cluster = append $cluster $rule }}
{{- else }}
{{- $namespaced = append $namespaced $rule }}
{{- end }}
{{- end }}
{{- dict "namespaced" $namespaced "cluster" $cluster | toJson }}
{{- end }}
