"""The appliances themselves: is one ready, how many live sessions does it hold (the agent's
status endpoint, or PAN-OS's session count), and an in-memory fake of both."""
