"""Webhook Bridge: polls an asynchronous job API and pushes each result as a signed webhook."""

__version__ = "0.1.0"
# How the bridge names itself to upstreams and receivers.
USER_AGENT = f"webhook-bridge/{__version__}"
