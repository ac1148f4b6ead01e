"""A local Alibaba Cloud OpenAPI endpoint for the real Tea SDKs (GWLB, ESS, ECS, CloudMonitor,
FC), answered by the in-memory fakes and recording every request (server.py)."""

from gwlb_lab.api.server import LocalOpenApi, RecordedRequest

__all__ = ["LocalOpenApi", "RecordedRequest"]
