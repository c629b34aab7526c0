"""Fraud decisions posted to a Slack-compatible webhook by a consumer of its own (outside the detector)."""
