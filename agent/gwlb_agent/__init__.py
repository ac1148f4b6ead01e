"""gwlb-agent: the on-appliance daemon that returns the GWLB's Geneve traffic, inspected."""
