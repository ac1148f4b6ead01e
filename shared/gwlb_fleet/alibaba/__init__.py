"""Alibaba Cloud's OpenAPI products behind the ports (gwlb_fleet.ports): adapters over the Tea
SDKs (GWLB, ESS, ECS, CloudMonitor, FC), the error mapping they share (``errors``, ``tea``), and
in-memory fakes (``fakes``) that keep state and fail with the services' own codes.

Each adapter module declares ``RAM_ACTIONS``, the RAM actions it calls, so that the functions' RAM
policy can be checked against what the code really does (tests/unit/test_ram_policy.py).
"""
