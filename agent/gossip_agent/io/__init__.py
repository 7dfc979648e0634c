"""The asyncio shell around the pure cores: UDP transport, HTTP API and peer client, security, metrics, and
the runtime that owns one Node, feeds it packets and time, and performs the effects it returns."""
