"""Issue 9 item 6, placement: an agent serves only the endpoints whose `nodeSelector` matches its node, and an
endpoint with a selector is reached through a Service of its own that lists exactly those agents.

Two cluster-mode agents on two "nodes" (Node objects in the API stand-in, labelled gpu=a100 and gpu=h100), one
operator, and three endpoints: `stt-a` and `stt-h` share the model `whisper-1` under disjoint selectors (before
this, one of them was dropped as a duplicate on every agent, so both nodes served the same one), and `big`
(model `whisper-large`) lives on the h100 node only. The choice (per-endpoint Services rather than agents
forwarding to each other) is explained in compile/src/placement.rs."""
from __future__ import annotations

import base64
import json

import httpx

from conftest import wait_for
from gateway_fixtures import upstream, wav  # noqa: F401 - fixture
from security_helpers import security_item
from test_whole_loop import NS, ClusterAgent

TEAM = "team-place"


def world(upstream_url: str) -> str:
    def endpoint(name, model, gpu, upstream_model):
        return f"""---
apiVersion: infergate.dev/v1alpha1
kind: InferenceEndpoint
metadata: {{name: {name}, namespace: {TEAM}}}
spec:
  model: {model}
  features: [transcribe]
  nodeSelector: {{gpu: {gpu}}}
  backend: {{upstream: {{url: "{upstream_url}", model: {upstream_model}, allowPrivateNetwork: true}}}}
"""
    return f"""apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {TEAM}}}
---
apiVersion: v1
kind: Node
metadata: {{name: node-a100, labels: {{gpu: a100}}}}
---
apiVersion: v1
kind: Node
metadata: {{name: node-h100, labels: {{gpu: h100}}}}
---
apiVersion: infergate.dev/v1alpha1
kind: RateTier
metadata: {{name: place}}
spec: {{gpuSecondsPerMinute: 600, burstGpuSeconds: 600}}
""" + endpoint("stt-a", "whisper-1", "a100", "served-on-a100") + endpoint("stt-h", "whisper-1", "h100", "served-on-h100") \
        + endpoint("big", "whisper-large", "h100", "large-on-h100") + f"""---
apiVersion: infergate.dev/v1alpha1
kind: ApiKeyPolicy
metadata: {{name: app, namespace: {TEAM}}}
spec:
  tier: place
  environment: live
  secretName: app-key
  scopes: [{{endpoint: stt-a}}, {{endpoint: stt-h}}, {{endpoint: big}}]
"""


def transcribe(agent, key, model):
    return httpx.post(f"{agent.http}/v1/audio/transcriptions", headers={"authorization": f"Bearer {key}"},
                      files={"file": ("a.wav", wav(0.2))}, data={"model": model}, timeout=10)


@security_item(6, built=True)
def test_each_agent_serves_its_nodes_endpoints_and_each_endpoint_gets_a_service(standin, kubectl, start_operator,
                                                                               upstream, tmp_path):  # noqa: F811
    kubectl("apply", "-f", "-", input=world(upstream))
    start_operator("op-place", namespace=NS)
    secret = wait_for("the key Secret", lambda: kubectl.get_json("secret", "app-key", "-n", TEAM), timeout=60)
    key = base64.b64decode(secret["data"]["api-key"]).decode()
    agents = {node: ClusterAgent(standin.kubeconfig, tmp_path, node=node, extra_args=["--pod-ip", "127.0.0.1"])
              for node in ("node-a100", "node-h100")}
    try:
        a100, h100 = agents["node-a100"], agents["node-h100"]

        def answered(agent, model, expect):
            r = transcribe(agent, key, model)
            return r.status_code == 200 and expect in r.text

        # The same model, served on each node by that node's endpoint (the upstream echoes the model it was sent).
        wait_for("the a100 agent to serve stt-a", lambda: answered(a100, "whisper-1", "served-on-a100"), timeout=90)
        wait_for("the h100 agent to serve stt-h", lambda: answered(h100, "whisper-1", "served-on-h100"), timeout=90)
        assert answered(h100, "whisper-large", "large-on-h100")

        # A request that lands on an agent not serving its model is answered, naming the endpoint's Service.
        r = transcribe(a100, key, "whisper-large")
        assert (r.status_code, r.json()["error"]["code"]) == (421, "served_elsewhere"), r.text
        message = r.json()["error"]["message"]
        assert f"{TEAM}/big" in message and f".{NS}.svc" in message, message

        # Each endpoint's Service lists exactly the agents of its nodes.
        def members(endpoint):
            services = (kubectl.get_json("service", "-n", NS, "-l", "infergate.dev/component=endpoint-service")
                        or {}).get("items", [])
            svc = next((s for s in services if s["metadata"]["labels"].get("infergate.dev/owner-name") == endpoint),
                       None)
            if svc is None:
                return None
            slices = (kubectl.get_json("endpointslice", "-n", NS, "-l",
                                       f"kubernetes.io/service-name={svc['metadata']['name']}") or {}).get("items", [])
            return sorted((e.get("nodeName"), p["port"]) for s in slices for e in s.get("endpoints") or []
                          for p in s["ports"] if p["name"] == "http")

        wait_for("stt-a's Service to list the a100 agent", lambda: members("stt-a") == [("node-a100", a100.http_port)],
                 timeout=60)
        wait_for("stt-h's Service to list the h100 agent", lambda: members("stt-h") == [("node-h100", h100.http_port)],
                 timeout=60)
        assert members("big") == [("node-h100", h100.http_port)]

        # Relabelling a node moves the endpoint: the a100 node becomes h100 too, and now serves `big` as well.
        kubectl("label", "node", "node-a100", "gpu=h100", "--overwrite")
        wait_for("big's Service to list both agents",
                 lambda: members("big") == sorted([("node-a100", a100.http_port), ("node-h100", h100.http_port)]),
                 timeout=90)
        assert answered(a100, "whisper-large", "large-on-h100"), "the relabelled node's agent serves big now"
        lease = kubectl.get_json("lease", "infergate-agent-node-a100", "-n", NS)
        assert f"{TEAM}/big" in json.loads(lease["metadata"]["annotations"]["infergate.dev/serves"])
    finally:
        for agent in agents.values():
            agent.stop()
