"""Creates per second the Twilio simulator sustains over keep-alive connections.

Printed by `make bench`; a figure, never a test assertion. The connector's own
benchmarks run against this simulator, so it must not be their bottleneck. The
clients run in their own processes so that they do not share the simulator's GIL.
"""

from __future__ import annotations

import multiprocessing
import time

import requests

from local.twilio_sim import SimConfig, TwilioSimulator

ACCOUNT_SID = "AC" + "4" * 32
TOKEN = "bench-token"


def _client(url: str, count: int, index: int) -> None:
    session = requests.Session()  # one keep-alive connection per client
    session.auth = (ACCOUNT_SID, TOKEN)
    for i in range(count):
        answer = session.post(url, data={"To": f"+1555{index:03d}{i:04d}", "From": "+15005550006", "Body": "b"})
        if answer.status_code != 201:
            raise SystemExit(f"create failed: {answer.status_code} {answer.text}")


def creates_per_second(total: int = 2000, clients: int = 4) -> float:
    with TwilioSimulator(SimConfig(ACCOUNT_SID, TOKEN, time_scale=1.0)) as sim:
        url = f"{sim.base_url}/Accounts/{ACCOUNT_SID}/Messages.json"
        per_client = total // clients
        processes = [multiprocessing.Process(target=_client, args=(url, per_client, i)) for i in range(clients)]
        started = time.perf_counter()
        for p in processes:
            p.start()
        for p in processes:
            p.join()
        elapsed = time.perf_counter() - started
        created = len(sim.sim.creates())
        if created != per_client * clients or any(p.exitcode for p in processes):
            raise SystemExit(f"only {created} of {per_client * clients} creates succeeded")
    return created / elapsed


def main() -> None:
    rate = creates_per_second()
    verdict = "ok" if rate >= 500 else "BELOW TARGET"
    print(
        f"simulator creates/s (keep-alive, 4 client processes, 2000 creates): {rate:,.0f}  target >= 500  [{verdict}]"
    )


if __name__ == "__main__":
    main()
