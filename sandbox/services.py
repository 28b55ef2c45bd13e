"""Services the sandbox runs around a cycle: the police REST simulator under uvicorn.

Registered as the `lianban.services` entry point (pyproject.toml); hub.run.side_services starts it, so
the runtime never imports the sandbox (docs/architecture.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from core.settings import RestSource, Settings
from core.storage import Storage


@contextmanager
def police_simulator(settings: Settings) -> Iterator[None]:
    """Start the police simulator under uvicorn when a REST source points at the sandbox."""
    rest = [c for c in settings.sources.values() if isinstance(c, RestSource) and c.base_url_env]
    sandbox = Storage(settings).sandbox
    if (
        not rest
        or not (sandbox / "police").exists()
        or all(os.environ.get(c.base_url_env or "") for c in rest)
    ):
        yield
        return
    from sandbox.simulator import running_police_simulator  # starlette, uvicorn: the sandbox extra

    with running_police_simulator(sandbox) as (base_url, token):
        saved = {k: os.environ.get(k) for c in rest for k in (c.base_url_env or "", c.token_env)}
        for c in rest:
            os.environ[c.base_url_env or ""] = base_url
            os.environ[c.token_env] = token
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
