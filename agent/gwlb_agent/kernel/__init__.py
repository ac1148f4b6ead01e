"""The kernel-mode appliance: the kernel inspects, the agent does Geneve.

``tun`` and ``routing``: the data path (Geneve in, inner packet to a tun device, the kernel's
ruleset decides, what it forwards comes back through the tun and goes out with its flow's Geneve
header). The flow records and Suricata stage read the kernel's own state (conntrack, NFLOG).
"""
