"""In-memory fakes of the ports: they keep state and fail the way the real services do."""
