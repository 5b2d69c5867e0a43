"""The binwatch edge agent: camera frames -> counts -> decisions -> mismatch alerts over MQTT.

Stages, in the order a frame meets them (docs/architecture.md has the route with every module):

- :mod:`agent.intake`: cameras (capture threads, frame hub), bin events, manifests, inbound messages;
- :mod:`agent.inference`: preprocessing, backends (ONNX Runtime, TensorRT), model store, decision,
  and the inference pipeline that ties them together;
- :mod:`agent.delivery`: snapshots, the SQLite outbox, the MQTT link, status and stats;
- :mod:`agent.web`: the local HTTP endpoint (health, readiness, metrics, ``/v1/count``).

:mod:`agent.runtime` builds them and passes each its collaborators; :mod:`agent.surface` is the
only part of the agent that training and export may use. The agent never imports torch.
"""
