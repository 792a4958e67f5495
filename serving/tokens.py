"""Request ids nobody can guess, and feedback tokens only the asker holds.

A prediction's answer carries `feedback_token` = HMAC-SHA256(FEEDBACK_SECRET, request id);
`/feedback` needs it, so knowing (or guessing) an id is not enough to label a prediction.
Replicas share the secret, so any replica can check a token another one issued.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets

log = logging.getLogger("serving.tokens")


def new_request_id() -> str:
    """128 random bits as 32 hex digits (the shape of a uuid4, and as unguessable)."""
    return secrets.token_hex(16)


class FeedbackSigner:
    """Issues and checks feedback tokens under one secret."""

    def __init__(self, secret: str) -> None:
        self.shared = bool(secret)
        self._key = secret.encode() if secret else secrets.token_bytes(32)

    def warn_if_private(self) -> None:
        """Log, once at start, that tokens from this process are not valid elsewhere."""
        if not self.shared:
            log.warning(
                "FEEDBACK_SECRET is not set: this process drew its own secret, so feedback "
                "tokens it issues are accepted by this process only (not by other replicas "
                "or workers, nor after a restart)",
                extra={"fields": {"event": "feedback_secret_missing"}},
            )

    def token(self, request_id: str) -> str:
        return hmac.new(self._key, request_id.encode(), hashlib.sha256).hexdigest()

    def valid(self, request_id: str, token: str) -> bool:
        """Constant-time check of a token against the id it claims."""
        return hmac.compare_digest(self.token(request_id).encode(), token.encode())
