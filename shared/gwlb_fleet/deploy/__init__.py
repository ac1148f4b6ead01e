"""``gwlb-fleet setup`` / ``teardown``: what the fc3 component cannot create, made idempotently
with the deployer's credentials (never the functions' role), each thing read back."""
