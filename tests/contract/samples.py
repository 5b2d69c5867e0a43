"""One valid, fully populated example of every top-level document (as JSON-ready dicts).

Every optional field is set, so a test that mutates a field always finds a value to mutate.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

from contract.base import Versioned
from contract.bundle import BundleManifest
from contract.card import ModelCard
from contract.messages import (
    Alert,
    BinEvent,
    BinOutcome,
    CommandRequest,
    CommandResult,
    ManifestEntry,
    ModelDesired,
    ModelReported,
    Result,
    Review,
    Stats,
    Status,
)

SHA_A = "a" * 64
SHA_B = "0123456789abcdef" * 4
TS = "2024-05-01T12:00:00.250000Z"
SIG = base64.b64encode(bytes(range(64))).decode()

_MODEL_REF = {"name": "bins-r18", "version": 7, "sha256": SHA_A, "precision": "int8", "backend": "tensorrt"}

_VERDICT: dict[str, Any] = {
    "seq": 41,
    "session": 3,
    "site": "dc-berlin",
    "device": "jetson-07",
    "camera": "cam0",
    "bin_id": "00121",
    "event_id": "evt-9",
    "frame_ts": TS,
    "published_ts": "2024-05-01T12:00:01+02:00",
    "expected_qty": 3,
    "predicted_qty": 2,
    "p_expected": 0.125,
    "distribution": {"0": 0.0, "1": 0.125, "2": 0.625, "3": 0.125, "4": 0.0625, "5+": 0.0625},
    "frames": 3,
    "is_historical": True,
    "model": _MODEL_REF,
    "snapshot": {
        "uri": "file:///var/lib/binwatch/snapshots/41.jpg",
        "sha256": SHA_B,
        "topic": "binwatch/v1/dc-berlin/jetson-07/alert/snapshot/4133728a-c4e6-41d5-9edd-3735da1a2174",
        "size": 48213,
    },
    "custom": {"aisle": "A7", "shift": 2, "temp_c": 21.5, "audited": False},
}

_ITEMS = [
    {"asin": "B000C33MI2", "sku": "SKU-1", "name": "Oil filter", "quantity": 2},
    {"asin": "B0050Z27KG", "sku": "SKU-2", "name": "Suncatcher", "quantity": 1},
]

EXAMPLES: dict[type[Versioned], dict[str, Any]] = {
    Alert: {
        "schema": "binwatch.alert",
        "schema_version": 2,
        "alert_id": "4133728a-c4e6-41d5-9edd-3735da1a2174",
        **_VERDICT,
    },
    Result: {
        "schema": "binwatch.result",
        "schema_version": 2,
        "result_id": "0d4e9c47-2d7e-4b8e-9b0e-1f6a3c2b1a00",
        "verdict": "uncertain",
        **_VERDICT,
    },
    Status: {
        "schema": "binwatch.status",
        "schema_version": 1,
        "state": "online",
        "session": 3,
        "ts": TS,
        "agent_version": "0.1.0",
        "model": _MODEL_REF,
        "cameras": {
            "cam0": {
                "state": "live",
                "fps": 14.5,
                "last_frame_ts": TS,
                "error": "none yet",
                "dropped_frames": 2,
                "reconnects": 1,
            }
        },
    },
    Stats: {
        "schema": "binwatch.stats",
        "schema_version": 3,
        "ts": TS,
        "uptime_s": 3600.5,
        "fps": 14.5,
        "frames_total": 52200,
        "frames_dropped": 12,
        "decode_errors": 1,
        "latency": {"infer": {"p50_ms": 4.5, "p99_ms": 9.25, "n": 870}},
        "outbox_depth": 0,
        "outbox_bytes": 0,
        "outbox_dropped": 0,
        "alerts_published": 17,
        "publish_refused": 2,
        "refused_waiting": 1,
        "last_refusal": "Not authorized",
        "invalid_messages": {"bin:invalid-json": 2},
        "verdicts": {"match": 40, "mismatch": 17, "uncertain": 3, "no_manifest": 1, "failed": 0},
        "backend": "tensorrt",
        "precision": "int8",
        "cameras": {"cam0": {"fps": 14.5, "frames_total": 52200, "frames_dropped": 12, "decode_errors": 1}},
    },
    ModelDesired: {
        "schema": "binwatch.model_desired",
        "schema_version": 2,
        "version": 8,
        "bundle_url": "https://models.example/bins-r18-v8.tar",
        "sha256": SHA_B,
        "signature": SIG,
        "rollout_id": "r-2024-05-01",
        "rollback": False,
    },
    ModelReported: {
        "schema": "binwatch.model_reported",
        "schema_version": 1,
        "version": 8,
        "state": "failed",
        "detail": "golden set: accuracy 0.61 < card 0.80",
        "ts": TS,
        "rollout_id": "r-2024-05-01",
    },
    BinEvent: {
        "schema": "binwatch.bin",
        "schema_version": 2,
        "bin_id": "P-1-A123",
        "camera": "cam0",
        "event_id": "evt-10",
        "expected_qty": 3,
        "items": _ITEMS,
        "frames": 4,
        "ts": TS,
    },
    BinOutcome: {
        "schema": "binwatch.bin_outcome",
        "schema_version": 1,
        "site": "dc-berlin",
        "device": "jetson-07",
        "camera": "cam0",
        "bin_id": "P-1-A123",
        "event_id": "evt-10",
        "outcome": "mismatch",
        "reason": "",
        "expected_qty": 3,
        "predicted_qty": 2,
        "p_expected": 0.125,
        "alert_id": "4133728a-c4e6-41d5-9edd-3735da1a2174",
        "ts": TS,
    },
    Review: {
        "schema": "binwatch.review",
        "schema_version": 1,
        "alert_id": "4133728a-c4e6-41d5-9edd-3735da1a2174",
        "site": "dc-berlin",
        "device": "jetson-07",
        "camera": "cam0",
        "bin_id": "00121",
        "event_id": "evt-9",
        "decision": "confirmed",
        "actual_qty": 2,
        "reviewer": "ana",
        "note": "one item under the divider",
        "ts": TS,
    },
    ManifestEntry: {
        "schema": "binwatch.manifest_entry",
        "schema_version": 1,
        "bin_id": "P-1-A123",
        "expected_qty": 3,
        "items": _ITEMS,
    },
    CommandRequest: {
        "schema": "binwatch.cmd",
        "schema_version": 1,
        "request_id": "req-1",
        "args": {"camera": "cam0", "frames": 3, "nested": {"ok": [1, 2.5, None, "x"]}},
    },
    CommandResult: {
        "schema": "binwatch.cmd_result",
        "schema_version": 1,
        "request_id": "req-1",
        "ok": True,
        "detail": "captured 3 frames",
        "data": {"files": ["a.jpg", "b.jpg"]},
    },
    BundleManifest: {
        "schema": "binwatch.bundle_manifest",
        "schema_version": 1,
        "created": TS,
        "model_name": "bins-r18",
        "model_version": 8,
        "files": {
            "card.json": {"sha256": SHA_A, "size": 1200},
            "golden/expected.json": {"sha256": SHA_B, "size": 77},
        },
    },
    ModelCard: {
        "schema": "binwatch.card",
        "schema_version": 2,
        "name": "bins-r18",
        "version": 8,
        "created": TS,
        "trained_from": {
            "run_id": "run-1",
            "git_sha": "abc123",
            "data": "synth",
            "split": "val",
            "epochs": 3,
            "parent": {"run_id": "run-0", "name": "bins-r18", "version": 7, "weights_sha256": SHA_B},
        },
        "model": {"arch": "resnet18", "num_classes": 6, "pretrained": "IMAGENET1K_V1"},
        "input": {"name": "input", "height": 224, "width": 224},
        "output": {"name": "logits", "counts": [0, 1, 2, 3, 4, 5], "overflow": True, "temperature": 1.5},
        "metrics": [{"dataset": "abid", "split": "val", "n": 100, "accuracy": 0.5, "rmse": 1.0}],
        "decision": {"mismatch_threshold": 0.1, "match_threshold": 0.6},
        "artifacts": [
            {"kind": "onnx", "file": "model.fp32.onnx", "sha256": SHA_A, "precision": "fp32", "target": "any"}
        ],
    },
}

# JSON containers whose members are free-form (any JSON, or any flat scalar): a member of another type
# is not wrong there.
FREE_FORM = {("args",), ("data",), ("custom",)}


def example(model: type[Versioned]) -> dict[str, Any]:
    """A fresh deep copy of the model's example."""
    return copy.deepcopy(EXAMPLES[model])
