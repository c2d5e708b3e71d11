"""Keyed pseudonyms: the same input, key and project give the same output anywhere.

Everything is derived with keyed BLAKE2b (a MAC by construction) from a
per-project subkey, so a worker needs only the project's secret to agree with
every other worker, after any restart, and two projects never share a
pseudonym or a UID even if they were given the same secret.
"""

from __future__ import annotations

import hashlib
import uuid

MIN_KEY_BYTES = 16
DATE_SHIFT_MAX_DAYS = 730

_PATIENT = b"pixl-patient"
_UID = b"pixl-uid"
_TEXT = b"pixl-text"
_DATE = b"pixl-date-shift"


class Pseudonymizer:
    def __init__(self, key: bytes, project_slug: str) -> None:
        if not isinstance(key, bytes) or len(key) < MIN_KEY_BYTES:
            raise ValueError(f"the de-identification key must be at least {MIN_KEY_BYTES} bytes")
        # BLAKE2b keys are at most 64 bytes: longer secrets are condensed first.
        outer = key if len(key) <= 64 else hashlib.sha512(key).digest()
        self._key = hashlib.blake2b(project_slug.encode("utf-8"), key=outer, digest_size=32).digest()

    def _digest(self, purpose: bytes, value: str, size: int) -> bytes:
        return hashlib.blake2b(
            value.encode("utf-8"), key=self._key, person=purpose, digest_size=size
        ).digest()

    def patient_id(self, patient_id: str) -> str:
        """The research ID of a patient: 64 hex digits (fits LO)."""
        return self._digest(_PATIENT, patient_id.strip(), 32).hex()

    def text(self, value: str, max_length: int) -> str:
        """A keyed hash of any text value, cut to the VR's maximum length."""
        return self._digest(_TEXT, value.strip(), 32).hex()[:max_length]

    def uid(self, uid: str) -> str:
        """A new UID under 2.25 (UUID-derived), at most 44 characters."""
        digest = self._digest(_UID, uid.strip().rstrip("\0"), 16)
        return f"2.25.{uuid.UUID(bytes=digest, version=4).int}"

    def date_shift_days(self, patient_id: str) -> int:
        """Days to move this patient's dates back: 1 to DATE_SHIFT_MAX_DAYS, fixed per patient."""
        digest = self._digest(_DATE, patient_id.strip(), 8)
        return 1 + int.from_bytes(digest, "big") % DATE_SHIFT_MAX_DAYS
