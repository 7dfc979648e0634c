"""Command-line tools: `gossipctl` (local clusters from a GossipCluster manifest, and client commands)."""
