"""python -m local.twilio_sim --port 8931 --account-sid AC… --auth-token T"""

from __future__ import annotations

import argparse
import secrets
import signal
import sys

from local.twilio_sim.core import SCENARIOS, SimConfig, new_account_sid
from local.twilio_sim.server import TwilioSimulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.twilio_sim", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8931)
    parser.add_argument("--account-sid", help="the only account accepted (default: a new random AC sid)")
    parser.add_argument("--auth-token", help="its auth token (default: a new random token)")
    parser.add_argument("--time-scale", type=float, default=1.0, help="simulated seconds per real second")
    parser.add_argument("--scenario", default="delivered", choices=sorted(SCENARIOS), help="default outcome")
    parser.add_argument("--inbound-url", help="where inbound messages (replies, STOP) are posted")
    parser.add_argument("--latency-ms", type=int, default=0, help="added to every API request")
    parser.add_argument(
        "--max-in-flight", type=int, help="concurrent requests the account may have; beyond: 429 / 20429 (as Twilio)"
    )
    parser.add_argument(
        "--sender-rate",
        action="append",
        default=[],
        metavar="SENDER=RATE",
        help="segments/s a sender drains (default: long code 1, toll-free 3, short code 100; +1500555… unpaced)",
    )
    args = parser.parse_args(argv)
    rates = {}
    for pair in args.sender_rate:
        sender, _, rate = pair.partition("=")
        rates[sender] = float(rate)

    config = SimConfig(
        account_sid=args.account_sid or new_account_sid(),
        auth_token=args.auth_token or secrets.token_hex(16),
        time_scale=args.time_scale,
        default_scenario=args.scenario,
        inbound_url=args.inbound_url,
        latency_ms=args.latency_ms,
        max_in_flight=args.max_in_flight,
        sender_rates=rates,
    )
    simulator = TwilioSimulator(config, host=args.host, port=args.port)
    print(f"Twilio simulator on {simulator.base_url}", flush=True)
    print(f"  account sid: {config.account_sid}", flush=True)
    if not args.auth_token:
        print(f"  auth token:  {config.auth_token}", flush=True)
    print(f"  control API: {simulator.origin}/_sim/ (creates, scenarios, faults, inbound, clock)", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        simulator.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        simulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
