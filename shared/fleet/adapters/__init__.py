"""Real adapters of the ports (fleet.ports), over the vendor SDKs.

Each module declares ``RAM_ACTIONS``, the RAM actions it calls, so that the functions' RAM
policy can be checked against what the code really does (tests/unit/test_ram_policy.py).
"""
