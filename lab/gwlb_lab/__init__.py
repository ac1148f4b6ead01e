"""The lab: gwlb-fleet on one Linux machine, in network namespaces, with no cloud account."""
