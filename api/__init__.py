"""The FastAPI application: app factory, dependencies, error mapping and routers."""
