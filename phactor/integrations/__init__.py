"""Integrations of phactor with frameworks and libraries, each in its own module.

Import the one you use; none is imported by `import phactor`, and each imports its framework
only when imported itself (see docs/integrations.md):

- `phactor.integrations.django` — `PhactorMiddleware`
- `phactor.integrations.flask` — `PhactorFlask`
- `phactor.integrations.asgi` — `PhactorASGIMiddleware` (FastAPI, Starlette, any ASGI app)
- `phactor.integrations.wsgi` — `PhactorWSGIMiddleware`
- `phactor.integrations.celery` — `PhactorCelery`
- `phactor.integrations.pytest_plugin` — the `phactor_events` fixture (pytest plugin `phactor`)
- `phactor.integrations.structlog` — `capture_exceptions`
"""

__all__: list[str] = []
