"""Deployable services of fraudstream, the CLI, the local stack and the settings."""
