"""The XDP fast path: a BPF program (agent/bpf/geneve_xdp.c, compiled ahead of time) that answers
Geneve for flows whose verdict the agent has decided, and its loader over libbpf (ctypes)."""
