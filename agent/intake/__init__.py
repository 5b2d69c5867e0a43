"""Frames in: camera sources and capture threads, the frame hub, bin presentations, manifests and
inbound MQTT messages."""
