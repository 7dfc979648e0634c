"""gossip-operator: a kopf operator that runs GossipClusters (gossip agents) on Kubernetes."""
