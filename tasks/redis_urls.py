"""Where Redis is, as text: a plain ``redis://`` URL or Celery's list of Sentinels. Pure parsing.

Celery's Sentinel form is ``sentinel://:password@host1:26379/0;sentinel://host2:26379/0``: one
``sentinel://`` address per Sentinel, separated by ``;``. As in Celery and Kombu, the username,
password and database number of the *first* address are those of the Redis master (the
Sentinels' own password is a setting of its own, ``PLAUD_SENTINEL_PASSWORD``), so a later
address that names a different one is refused rather than silently ignored. Every address needs
its port: Kombu and Celery's result backend do not agree on the default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from plaud.errors import ConfigError
from plaud.redact import mask_url_passwords

SENTINEL_SCHEME = "sentinel"
SEPARATOR = ";"


@dataclass(frozen=True)
class SentinelUrl:
    """The Sentinels to ask, and how to log in to the master they name."""

    sentinels: tuple[tuple[str, int], ...]
    db: int = 0
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)


def is_sentinel_url(url: str) -> bool:
    return url.strip().lower().startswith(f"{SENTINEL_SCHEME}://")


def parse_sentinel_url(url: str, variable: str = "REDIS_URL") -> SentinelUrl:
    """Parse Celery's Sentinel list; a ConfigError names ``variable`` and never quotes a password."""
    shown = mask_url_passwords(url)
    sentinels: list[tuple[str, int]] = []
    logins: list[tuple[str | None, str | None, int]] = []
    for chunk in (c.strip() for c in url.split(SEPARATOR)):
        if not chunk:
            continue
        parts = urlsplit(chunk)
        if parts.scheme.lower() != SENTINEL_SCHEME:
            raise ConfigError(f"{variable} mixes sentinel:// with other addresses ({shown}); "
                              f"list every Sentinel as sentinel://host:port, separated by ';'")
        try:
            port = parts.port
        except ValueError:
            raise ConfigError(f"{variable} has a bad port in {mask_url_passwords(chunk)}") from None
        if port is None:
            # Kombu's transport would take 26379 and Celery's result backend 6379: say it once for both.
            raise ConfigError(f"{variable}: give every Sentinel its port (usually 26379): "
                              f"{mask_url_passwords(chunk)}")
        if not parts.hostname:
            raise ConfigError(f"{variable} has a Sentinel address without a host: {mask_url_passwords(chunk)}")
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise ConfigError(f"{variable}: the database must be a number, got {path!r} in {mask_url_passwords(chunk)}")
        sentinels.append((parts.hostname, port))
        logins.append((unquote(parts.username) if parts.username else None,
                       unquote(parts.password) if parts.password else None, int(path) if path else 0))
    if not sentinels:
        raise ConfigError(f"{variable} names no Sentinel: {shown}")
    username, password, db = logins[0]
    for other_username, other_password, other_db in logins[1:]:
        # Celery and Kombu read only the first address's; a different one later is a mistake to show.
        if (other_username and other_username != username) or (other_password and other_password != password):
            raise ConfigError(f"{variable}: the Sentinel addresses name different Redis logins; give the master's "
                              f"username and password once, in the first address")
        if other_db not in (0, db):
            raise ConfigError(f"{variable}: the Sentinel addresses name different databases ({db} and {other_db})")
    return SentinelUrl(tuple(sentinels), db=db, username=username, password=password)
