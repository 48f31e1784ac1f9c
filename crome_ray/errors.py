"""The one base of every error a user is meant to read: ``CromeError``.

Each layer raises its own subclass (a bad config, a storage problem, an oracle that cannot
serve, a run that must not start...), with a message that says what is wrong and what to do.
The command line catches ``CromeError`` alone and prints the message; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations


class CromeError(Exception):
    """A problem the user can act on; the message says what is wrong and what to do."""
