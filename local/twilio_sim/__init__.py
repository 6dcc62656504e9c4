"""A local stand-in for api.twilio.com/2010-04-01 (docs/development.md, "The local Twilio simulator")."""

from local.twilio_sim.core import SCENARIOS, CallbackFaults, Fault, SimConfig, Simulator, new_account_sid
from local.twilio_sim.server import TwilioSimulator

__all__ = ["SCENARIOS", "CallbackFaults", "Fault", "SimConfig", "Simulator", "TwilioSimulator", "new_account_sid"]
