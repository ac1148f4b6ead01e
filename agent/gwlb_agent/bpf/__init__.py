"""Loading the agent's prebuilt BPF objects (agent/bpf, compiled ahead of time): the libbpf
binding (``libbpf``, ctypes) and what every object needs (``object.BpfObject``); the XDP fast
path (``xdp.loader``) and the tun offload (``kernel.offload``) add their own attachments."""
