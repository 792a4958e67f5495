"""Why the service refuses a request, as a stable machine-readable reason.

HTTP-free on purpose: the prediction core (serving/inference/) raises `Refused` with a
reason, and only serving/errors.py decides which HTTP status each reason gets.
"""

from __future__ import annotations


class Refused(Exception):
    """A request the service will not (or cannot now) serve, and why.

    `reason` is stable (clients branch on it, metrics count it); `message` is for
    people; `retry_after_s` is set when trying again later can succeed (overload).
    """

    def __init__(self, reason: str, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retry_after_s = retry_after_s
