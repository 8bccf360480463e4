"""UDP through reactor-mux against UDP direct: iperf3 -u at fixed rates, the loss.

    .venv/bin/python bench/udp_loss.py [--rates 50M,200M,500M] [--seconds 5]
        [--length 1400] [--json FILE]

iperf3's UDP test keeps a TCP control connection beside the datagrams, on the
same port number, so the tunnel carries both: ``-L P:127.0.0.1:5201`` and ``-L
udp:P:127.0.0.1:5201`` on one port P.  Each rate runs twice in the same run, to
the iperf3 server directly and through the tunnel (plaintext, one channel on
loopback), and the table gives what the receiver got and the datagrams lost.
UDP has no flow control: past the rate a path can carry, loss is the answer
(the tunnel's queue drops and counts, it never grows), so the rows are a
rate-to-loss curve rather than a single figure.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from reactor_mux.tools.procs import ReactorMuxProcess  # noqa: E402


def free_port() -> int:
    """A port free for TCP and UDP both (iperf3 uses the same number for each)."""
    while True:
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port


def iperf_udp(port: int, rate: str, seconds: float, length: int) -> dict[str, float]:
    done = subprocess.run(
        ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-u", "-b", rate, "-t", str(seconds),
         "-l", str(length), "-J"],
        capture_output=True, text=True, timeout=seconds + 60,
    )  # fmt: skip
    report = json.loads(done.stdout)
    if "error" in report:
        raise RuntimeError(report["error"])
    total = report["end"]["sum"]
    arrived = total["packets"] - total["lost_packets"]
    return {  # end.sum's bit rate is the sender's: what arrived is counted here
        "receiver_mbit": arrived * length * 8 / total["seconds"] / 1e6,
        "lost_percent": total["lost_percent"],
        "packets": total["packets"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="50M,200M,500M")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--length", type=int, default=1400, help="datagram payload bytes")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if shutil.which("iperf3") is None:
        print("needs iperf3 (Debian's package)", file=sys.stderr)
        return 2
    target = free_port()
    iperf = subprocess.Popen(["iperf3", "-s", "-p", str(target)], stdout=subprocess.DEVNULL)
    server = client = None
    rows = []
    try:
        time.sleep(0.5)
        server = ReactorMuxProcess(["server", "--listen", "127.0.0.1:0", "--drain-timeout", "1"])
        local = free_port()
        client = ReactorMuxProcess(
            ["client", "--server", f"127.0.0.1:{server.listening_port()}", "--drain-timeout", "1",
             "-L", f"{local}:127.0.0.1:{target}", "-L", f"udp:{local}:127.0.0.1:{target}"]
        )  # fmt: skip
        client.forwards(2)
        for rate in args.rates.split(","):
            direct = iperf_udp(target, rate, args.seconds, args.length)
            tunnel = iperf_udp(local, rate, args.seconds, args.length)
            rows.append({"rate": rate, "direct": direct, "rmux": tunnel})
            print(f"{rate:>6}  direct {direct['receiver_mbit']:8.1f} Mbit/s "
                  f"lost {direct['lost_percent']:6.2f}%   rmux {tunnel['receiver_mbit']:8.1f} "
                  f"Mbit/s lost {tunnel['lost_percent']:6.2f}%", flush=True)  # fmt: skip
    finally:
        for proc in (client, server):
            if proc is not None:
                proc.stop()
        iperf.terminate()
        iperf.wait(10)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
