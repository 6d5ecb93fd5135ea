"""edgebuf cloud: the service that stores edge prediction records exactly once.

Public entry points: `create_app(settings)` and `CloudSettings` (imported lazily, so
`import cloud.testing` does not pull in FastAPI and SQLAlchemy), and `python -m cloud`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["CloudSettings", "create_app"]

if TYPE_CHECKING:
    from cloud.app import create_app
    from cloud.settings import CloudSettings


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from cloud.app import create_app

        return create_app
    if name == "CloudSettings":
        from cloud.settings import CloudSettings

        return CloudSettings
    raise AttributeError(f"module 'cloud' has no attribute {name!r}")
