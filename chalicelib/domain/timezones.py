"""The recipient's time zones, from `phonenumbers`' timezone data (Google's libphonenumber, maintained): the
country's, and for North American numbers the area code's. Imported only when a connection sets quiet hours,
so the send path's cold start does not pay for it otherwise (docs/deploy.md, "Package weight")."""

from __future__ import annotations

from functools import lru_cache

UNKNOWN = "Etc/Unknown"


@lru_cache(maxsize=4096)
def zones_for(number: str) -> tuple[str, ...]:
    """Every zone the number may ring in (the caller takes the strictest); () when nothing is known."""
    import phonenumbers
    from phonenumbers import timezone

    digits = number.removeprefix("whatsapp:")
    try:
        parsed = phonenumbers.parse(digits)
    except phonenumbers.NumberParseException:
        return ()
    zones = tuple(z for z in timezone.time_zones_for_number(parsed) if z != UNKNOWN)
    if not zones:  # a mobile number: the country's zones (libphonenumber's own fallback for geography)
        zones = tuple(z for z in timezone._country_level_time_zones_for_number(parsed) if z != UNKNOWN)
    return zones
