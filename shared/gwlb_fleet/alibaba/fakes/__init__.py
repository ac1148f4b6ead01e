"""In-memory fakes of the Alibaba Cloud services: they keep state and fail the way the real
services do. ``cloud.FakeCloud`` wires them into one account; the lab serves them to the real
SDKs (gwlb_lab.api)."""
