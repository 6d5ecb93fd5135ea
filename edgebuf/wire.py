"""The wire contract between the edge and the cloud: one definition, imported by both.

What a record may carry is decided here once: the edge refuses at ``log_prediction`` exactly
what the cloud's ``POST /log`` would refuse, so a record the edge has stored is never
refused later as poison (and dead-lettered). ``cloud.models`` and ``cloud.wire`` import
these limits; tests/test_wire_contract.py checks the two sides agree (Hypothesis).
"""

from __future__ import annotations

import re

__all__ = [
    "DEVICE_ID_PATTERN",
    "DEVICE_ID_RE",
    "MAX_DEPTH",
    "MAX_DEVICE_ID",
    "MAX_IMAGE_ID",
    "MAX_MODEL_VERSION",
    "MAX_RECORD_ID",
    "MAX_SEQ",
    "text_problem",
]

# A device id: 1-128 of these characters (it also names files and metric labels).
DEVICE_ID_PATTERN = r"^[A-Za-z0-9._:@-]+$"
MAX_DEVICE_ID = 128
DEVICE_ID_RE = re.compile(r"[A-Za-z0-9._:@-]{1,128}")  # use with fullmatch
MAX_RECORD_ID = 64
MAX_IMAGE_ID = 256
MAX_MODEL_VERSION = 128
MAX_SEQ = 2**63 - 1  # the cloud stores it as a BIGINT
MAX_DEPTH = 64  # nesting of the prediction's objects and arrays


def text_problem(value: str, limit: int) -> str | None:
    """Why ``value`` may not be a record's text field (``image_id``, ``model_version``), or
    None. PostgreSQL text cannot hold NUL; a lone surrogate is not UTF-8."""
    if len(value) > limit:
        return f"is {len(value)} characters, over the limit of {limit}"
    if "\x00" in value:
        return "must not contain NUL characters"
    if not value.isascii():  # ASCII is valid UTF-8; only other text can hold a lone surrogate
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "is not valid UTF-8 text"
    return None
