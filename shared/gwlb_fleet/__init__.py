"""gwlb-fleet's shared package: the control plane's domain and its adapters, and what the agent
and the lab share with it. One package per concept; ARCHITECTURE.md at the root says what each
may import.

- ``geneve``: the Geneve codec (RFC 8926) the agent and the lab's GWLB emulator both use.
- ``workflows``: the control plane's procedures (launch, terminate, scaling, health, reconcile).
- ``events``, ``handler``, ``app``, ``settings``: from FC's bytes to a workflow call.
- ``ports``: what the workflows need of the world, as protocols.
- ``state``: the instance, group and idempotency records and their stores (SQLite, Tablestore).
- ``alibaba``: the Alibaba Cloud OpenAPI adapters (GWLB, ESS, ECS, CloudMonitor, FC) and fakes.
- ``panos``: PAN-OS: the XML API, Panorama, licensing, the bootstrap.
- ``sls``: Log Service: the wire client, the flow-record schema, set-up, the audit queries and
  the control plane's audit log.
- ``appliance``: probes of an appliance's readiness and live sessions.
"""
