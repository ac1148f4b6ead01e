"""A GWLB emulator: intercepts client <-> server traffic and sends it through appliances in Geneve.

It runs inside the lab's ``gwlb`` namespace, where policy routing sends every packet between
client and server into a tun device. For each packet it finds the flow's appliance, wraps the
packet in Geneve with 32 bytes of options (endpoint id, attachment id, flow cookie), sends it from
a per-flow source port to the appliance's UDP 6081, and writes what the appliance returns back
into the tun after checking that it came from that appliance with the Geneve header unchanged.

Like the GWLB's server group it schedules new flows by a 5-, 3- or 2-tuple hash over the members
that are Available and healthy, health-checks the members (TCP or HTTP, interval, timeout,
thresholds), honours ServerFailoverMode (NoRebalance / Rebalance) and connection draining, and
takes its members from a ``MemberSource``: a static list, a JSON file, or the lab cloud's
in-memory GWLB (which the control plane drives through the real SDK and into which the emulator
writes its health results for GetListenerHealthStatus).

- ``packet``    inner IPv4 flow keys and TCP flags, the outer IPv4/UDP header
- ``encap``     Geneve option layouts (AWS's published one; an opaque stand-in for Alibaba's)
- ``scheduler`` 5TCH / 3TCH / 2TCH hashing (rendezvous) of a flow over the members
- ``members``   members (status, health, counters), the member set, the membership sources
- ``flows``     the flow table: flow -> member, source port, Geneve header; moves and TCP ends
- ``health``    TCP and HTTP probes, the health-check settings and the checker
- ``config``    the emulator's settings
- ``tun``       the tun device the intercepted traffic comes out of and goes back into
- ``emulator``  the data path (failover and draining decisions included) and its counters
- ``service``   ``GwlbEmulator``: data path, membership sync and health checks in one object
- ``status``    a small local HTTP endpoint with the status and flows
- ``cli``       ``python -m gwlb_lab.gwlb``
"""
