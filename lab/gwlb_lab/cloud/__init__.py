"""The lab's cloud: one process inside the gwlb namespace that plays every managed service around
the product's own code — Alibaba Cloud's OpenAPI (GWLB, ESS, ECS, CloudMonitor, FC), SLS,
Panorama, the GWLB data plane, EventBridge and Function Compute running the real handlers — and
turns ESS's instances into appliance namespaces running the real agent (cloud.py).

``python -m gwlb_lab.cloud --config RUN_DIR/cloud.json``; the runner (gwlb_lab.fleetlab) starts it and talks
to it on ``RUN_DIR/cloud.sock`` (gwlb_lab.control).
"""
