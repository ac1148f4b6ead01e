"""gwlb-agent: the on-appliance daemon that returns the GWLB's Geneve traffic, inspected."""

import os

# This start of the agent, the prefix of every record id it makes (flows, loss reports): with a
# sequence number after it, ids never repeat across restarts.
BOOT_ID = os.urandom(4).hex()
