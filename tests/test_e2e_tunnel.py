"""Data through real reactor-mux processes: -L, -R, many streams, several mappings."""

from __future__ import annotations

import random
import threading

import pytest
from support import (
    Exchange,
    HashReplyServer,
    Tunnel,
    check_exchange,
    payload,
    run_exchange,
)

from reactor_mux.tools.demo import echo_roundtrip


def test_l_and_r_carry_data_intact(tunnel, echo):
    _client, forwards = tunnel.client(
        "-L", f"0:127.0.0.1:{echo.port}", "-R", f"0:127.0.0.1:{echo.port}"
    )
    data = bytes(payload(1, 20 * 1024 * 1024))
    for kind, port, target in forwards:
        assert target == f"127.0.0.1:{echo.port}"
        echoed, ok, _ = echo_roundtrip(port, data)
        assert (echoed, ok) == (len(data), True), kind


def test_many_concurrent_streams_both_ways(tunnel, hash_target):
    """100 streams through -L and 100 through -R on one channel, 0 B..2 MB each way."""
    _client, forwards = tunnel.client(
        "-L", f"0:127.0.0.1:{hash_target.port}", "-R", f"0:127.0.0.1:{hash_target.port}"
    )
    ports = {kind: port for kind, port, _ in forwards}
    rng = random.Random(2026)
    edge_sizes = [(0, 0), (0, 1), (1, 0), (1, 1), (0, 2_000_000), (2_000_000, 0)]
    exchanges = []
    for i in range(200):
        if i // 2 < len(edge_sizes):  # each edge case through both -L and -R
            size, reply = edge_sizes[i // 2]
        else:
            size, reply = rng.randint(0, 2_000_000), rng.randint(0, 2_000_000)
        exchanges.append((ports["L" if i % 2 else "R"], Exchange(size, reply, seed=1000 + i * 3)))
    threads = [threading.Thread(target=run_exchange, args=(port, ex)) for port, ex in exchanges]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    for _port, ex in exchanges:
        check_exchange(ex, hash_target)
    assert hash_target.connections == 200
    total = sum(ex.send_len + ex.reply_len for _port, ex in exchanges)
    assert total > 300_000_000  # what the checks above covered, end to end


def test_several_mappings_on_one_channel(tunnel):
    targets = [HashReplyServer() for _ in range(4)]
    try:
        args = []
        for i, target in enumerate(targets):
            args += ["-L" if i % 2 == 0 else "-R", f"0:127.0.0.1:{target.port}"]
        _client, forwards = tunnel.client(*args)
        assert len(forwards) == 4
        by_target = {t: (kind, port) for kind, port, t in forwards}
        exchanges = []
        for i, target in enumerate(targets):
            kind, port = by_target[f"127.0.0.1:{target.port}"]
            assert kind == ("L" if i % 2 == 0 else "R")
            for j in range(3):
                exchanges.append(
                    (target, port, Exchange(300_000 + j, 200_000 + i, seed=i * 10 + j))
                )
        threads = [
            threading.Thread(target=run_exchange, args=(port, ex)) for _t, port, ex in exchanges
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        for target, _port, ex in exchanges:
            check_exchange(ex, target)
        # every mapping reached its own target, and only that one
        assert [t.connections for t in targets] == [3, 3, 3, 3]
    finally:
        for target in targets:
            target.close()


def test_two_clients_on_one_server(tunnel, hash_target):
    _a, forwards_a = tunnel.client(
        "-L", f"0:127.0.0.1:{hash_target.port}", "-R", f"0:127.0.0.1:{hash_target.port}"
    )
    _b, forwards_b = tunnel.client(
        "-L", f"0:127.0.0.1:{hash_target.port}", "-R", f"0:127.0.0.1:{hash_target.port}"
    )
    ports = [port for _, port, _ in forwards_a + forwards_b]
    assert len(set(ports)) == 4
    exchanges = [
        (port, Exchange(2_000_000, 1_000_000, seed=500 + i)) for i, port in enumerate(ports)
    ]
    threads = [threading.Thread(target=run_exchange, args=item) for item in exchanges]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for _port, ex in exchanges:
        check_exchange(ex, hash_target)
    assert tunnel.server.count_event("channel_up") == 2


def test_ipv6_literals(tunnel):
    target = HashReplyServer(host="::1")
    try:
        _client, forwards = tunnel.client(
            "-L", f"[::1]:0:[::1]:{target.port}", "-R", f"0:[::1]:{target.port}"
        )
        assert [(kind, t) for kind, _port, t in forwards] == [
            ("L", f"[::1]:{target.port}"),
            ("R", f"[::1]:{target.port}"),
        ]
        for i, (kind, port, _t) in enumerate(forwards):
            ex = Exchange(100_000, 50_000, seed=77 + i)
            run_exchange(port, ex, host="::1" if kind == "L" else "127.0.0.1")
            check_exchange(ex, target)
    finally:
        target.close()


@pytest.mark.parametrize("window", ["4K", "1M"])
def test_window_option_still_moves_data_intact(window, echo):
    tunnel = Tunnel(server_args=("--window", window))
    try:
        _client, forwards = tunnel.client(
            "-L", f"0:127.0.0.1:{echo.port}", extra=("--window", window)
        )
        data = bytes(payload(3, 3 * 1024 * 1024))
        echoed, ok, _ = echo_roundtrip(forwards[0][1], data)
        assert (echoed, ok) == (len(data), True)
    finally:
        tunnel.close()
