"""Fixtures of the power-loss lab: a mounted PowerCutFS, or a skip with the reason (a failure
under CI=true, where .ci/run installs fuse3)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from edgebuf.lab.powercut import PowerCutError, PowerCutFS, unusable_reason


def require_fuse() -> None:
    reason = unusable_reason()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"FUSE is required under CI: {reason}")
    pytest.skip(f"FUSE unusable here: {reason}")


def _mount(metadata: str) -> PowerCutFS:
    require_fuse()
    fs = PowerCutFS(metadata=metadata)  # type: ignore[arg-type]
    try:
        fs.start()
    except PowerCutError as exc:
        if os.environ.get("CI", "").lower() == "true":
            raise
        pytest.skip(f"FUSE mount failed here: {exc}")
    return fs


@pytest.fixture
def powercut() -> Iterator[PowerCutFS]:
    """A power-cut filesystem (ext4-like metadata), unmounted after the test."""
    fs = _mount("inode")
    try:
        yield fs
    finally:
        fs.close()
        assert not os.path.ismount(fs.path), "stale mount left behind"


@pytest.fixture
def powercut_strict() -> Iterator[PowerCutFS]:
    """A power-cut filesystem with strict POSIX metadata (only a directory fsync counts)."""
    fs = _mount("dir")
    try:
        yield fs
    finally:
        fs.close()
