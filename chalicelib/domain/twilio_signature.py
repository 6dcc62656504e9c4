"""X-Twilio-Signature: compute it as Twilio does, and check it failing closed.

Twilio signs the full public URL it called followed by every POST parameter,
names sorted, each name followed by its value(s), with HMAC-SHA1 keyed by the
account's auth token. The webhook must check against the configured public URL
(stage path included), never the Host header. During token rotation
both the primary and the secondary token are tried.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit, urlunsplit

Params = Sequence[tuple[str, str]]


def compute_signature(url: str, params: Params, auth_token: str) -> str:
    values: dict[str, set[str]] = {}
    for name, value in params:
        values.setdefault(name, set()).add(value)
    payload = url + "".join(name + value for name in sorted(values) for value in sorted(values[name]))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _url_variants(url: str) -> list[str]:
    """Twilio is inconsistent about the default port: accept the URL with and without it."""
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    host = parts.hostname or ""
    if parts.port is None and default:
        with_port = urlunsplit(parts._replace(netloc=f"{host}:{default}"))
        return [url, with_port]
    if parts.port == default:
        return [url, urlunsplit(parts._replace(netloc=host))]
    return [url]


def is_valid(url: str, params: Params, signature: str | None, auth_tokens: Iterable[str | None]) -> bool:
    """True only for a present signature that one of the tokens produced for this URL and body."""
    if not signature:
        return False
    for token in auth_tokens:
        if not token:
            continue
        for candidate in _url_variants(url):
            if hmac.compare_digest(compute_signature(candidate, params, token), signature):
                return True
    return False
