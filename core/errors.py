"""Domain errors. They subclass built-ins and become HTTP responses in one place (api/errors.py)."""

from __future__ import annotations


class EnvLinkError(Exception):
    """Base of every error EnvLink raises on purpose."""

    code = "error"


class SettingsError(EnvLinkError, ValueError):
    """A setting is missing or malformed; the message names the ENVLINK_* variable."""

    code = "bad_settings"


class ConfigError(EnvLinkError, ValueError):
    """A configuration file (config/*.yaml) is malformed; the message names the file and entry."""

    code = "bad_config"


class InvalidInput(EnvLinkError, ValueError):
    """The caller sent something that cannot be right; the message says what."""

    code = "invalid_input"


class TimeOutOfRange(InvalidInput):
    """A time outside the years EnvLink handles (core.timeutil.FIRST_YEAR to LAST_YEAR)."""

    code = "time_out_of_range"


class PayloadTooLarge(InvalidInput):
    """A request over a size limit; the message says which limit."""

    code = "payload_too_large"


class NotFound(EnvLinkError, LookupError):
    """A named thing does not exist."""

    code = "not_found"


class StationNotFound(NotFound):
    code = "station_not_found"


class ParameterNotFound(NotFound):
    code = "parameter_not_found"


class AgencyNotFound(NotFound):
    code = "agency_not_found"


class Unauthenticated(EnvLinkError, PermissionError):
    """No API key, or one that is unknown, revoked or expired."""

    code = "unauthenticated"


class Forbidden(EnvLinkError, PermissionError):
    """The key is valid but lacks the role or ownership the action needs."""

    code = "forbidden"


class LinkExpired(Forbidden):
    """A signed link (a bulletin's) past its expiry."""

    code = "link_expired"


class BadSignature(Forbidden):
    """A signed link whose signature does not match what it names (tampered, or another key)."""

    code = "bad_signature"


class RateLimited(EnvLinkError):
    """The key, or the client address after failed authentications, has used up its requests."""

    code = "rate_limited"

    def __init__(self, message: str, *, limit: int, remaining: int, reset_s: int) -> None:
        super().__init__(message)
        self.limit = limit
        self.remaining = remaining
        self.reset_s = reset_s


class MigrationsPending(EnvLinkError, RuntimeError):
    """The database lacks migrations this version of EnvLink ships (`envlink migrate`)."""

    code = "migrations_pending"


class DatabaseUnavailable(EnvLinkError, ConnectionError):
    """PostgreSQL cannot be reached or started."""

    code = "database_unavailable"


class TimescaleDbUnavailable(EnvLinkError, RuntimeError):
    """TimescaleDB is asked for (ENVLINK_TIMESCALEDB, --to-timescaledb) but cannot be used."""

    code = "timescaledb_unavailable"
