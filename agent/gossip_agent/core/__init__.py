"""Pure protocol cores: they take events and a time, and return messages and actions.

Nothing here opens a socket, reads a clock or uses global randomness (an import-linter contract keeps it true).
"""
