"""gwlb-fleet's shared package: the domain and its adapters, used by functions, agent and lab."""
