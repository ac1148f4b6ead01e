"""A GWLB emulator: intercepts client <-> server traffic and sends it through appliances in Geneve.

It runs inside the lab's ``gwlb`` namespace (``python -m lab.gwlb``), where policy routing sends
every packet between client and server into a tun device. For each packet it picks an appliance
(a flow keeps its appliance), wraps the packet in Geneve with 32 bytes of options, sends it from a
per-flow source port to the appliance's UDP 6081, and writes what the appliance returns back into
the tun after checking that it came from that appliance with the Geneve header unchanged.

The seams, one module each, so that the full emulator of the Lab issue can grow from here:

- ``packet``   inner IPv4 flow keys, the outer IPv4/UDP header
- ``encap``    Geneve option layouts (AWS's published one; an opaque stand-in for Alibaba's)
- ``members``  the server group: members, health state, flow-hash selection over healthy ones
- ``flows``    the emulator's flow table: flow -> member, source port, Geneve header
- ``health``   health checks of each member (HTTP or TCP, interval, thresholds)
- ``tun``      the tun device the intercepted traffic comes out of and goes back into
- ``emulator`` the data path tying them together, and its counters
- ``status``   a small local HTTP endpoint with the counters, members and flows
- ``cli``      ``python -m lab.gwlb``
"""
