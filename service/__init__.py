"""suture's service: a REST job API over a persistent job store, executed by Ray worker pools.

Layers: `settings` and `schemas` are the boundary types; `store/` persists jobs and tokens (SQLAlchemy);
`jobs/` runs one job on a loaded model (no Ray, no HTTP); `workers/` hosts that on Ray actors and
dispatches queued jobs to them; `api/` is the FastAPI application; `client` talks to it.
"""
