"""Issue 9, item 8: two leaders are impossible. A replica whose API-server connection hangs (a TCP proxy that stops
forwarding, in front of the API stand-in) must stop leading within the renew deadline (10 s), before its Lease
(15 s) can pass to another replica. Today a leader-election round has no timeout, so a hung request keeps the
deposed leader "leading" (and reconciling) indefinitely.

What the implementation must match: `infergate_operator_leader` on the stalled replica's admin listener drops to 0
within RENEW_DEADLINE (10 s) + 3 s of slack.
"""
from __future__ import annotations

import re
import time

from conftest import Operator, wait_for
from security_helpers import StallProxy, security_item

NS = "infergate-system"


@security_item(8, built=True)
def test_leader_with_a_hung_api_connection_steps_down_before_its_lease_expires(standin, kubectl, tmp_path):
    kubectl("apply", "-f", "-", input=f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}}}\n")
    proxy = StallProxy(standin.port)
    # The stalled replica talks to the stand-in through the proxy: same kubeconfig, another port.
    text = standin.kubeconfig.read_text()
    stalled_kubeconfig = tmp_path / "kubeconfig-via-proxy"
    stalled_kubeconfig.write_text(re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{proxy.port}", text))
    assert str(proxy.port) in stalled_kubeconfig.read_text()

    class ViaProxy:  # the Operator fixture class reads only `.kubeconfig` from the stand-in
        kubeconfig = stalled_kubeconfig

    op = Operator(ViaProxy(), tmp_path, "op-stalled", namespace=NS)
    try:
        wait_for("the replica to lead", lambda: op.metric("infergate_operator_leader") == 1, timeout=60)
        proxy.stall()
        stalled_at = time.monotonic()
        deadline = stalled_at + 13
        while time.monotonic() < deadline and op.metric("infergate_operator_leader") == 1:
            time.sleep(0.25)
        held = time.monotonic() - stalled_at
        assert op.metric("infergate_operator_leader") == 0, (
            f"the replica still claims leadership {held:.0f}s after its API connection hung (renew deadline 10s)")
    finally:
        op.stop(timeout=5)
        proxy.stop()
