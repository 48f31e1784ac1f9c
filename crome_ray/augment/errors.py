"""The augmentation's user-facing error."""

from __future__ import annotations

from crome_ray.errors import CromeError


class AugmentError(CromeError, RuntimeError):
    """An augmentation run that must not start or go on; the message says why and what to do."""
