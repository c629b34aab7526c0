"""The live dashboard: Server-Sent Events from read_committed consumers of the decision topics."""
