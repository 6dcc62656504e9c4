"""Every write-back format, by the name a connection or a request gives (docs/platforms.md). A new
platform is one module beside these and one line here."""

from __future__ import annotations

from chalicelib.adapters.writeback.ci360 import Ci360Format
from chalicelib.adapters.writeback.json_format import JsonFormat
from chalicelib.adapters.writeback.swrve import SwrveFormat
from chalicelib.adapters.writeback.tealium import TealiumFormat
from chalicelib.adapters.writeback.twilio_form import TwilioFormat
from chalicelib.domain.writeback import WriteBackFormat


def formats() -> dict[str, WriteBackFormat]:
    """A fresh set (a format may hold state, such as Tealium's tokens): one per container."""
    found: list[WriteBackFormat] = [JsonFormat(), TwilioFormat(), SwrveFormat(), TealiumFormat(), Ci360Format()]
    return {f.name: f for f in found}


NAMES = tuple(formats())
