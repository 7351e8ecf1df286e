"""REST API v1: thin routers that parse, authorise, call a service and shape the answer."""
