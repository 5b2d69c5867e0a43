#!/usr/bin/env bash
# The end-to-end path on a CPU, as one command: `binwatch demo` (docs/demo.md). Synthetic training
# bins -> training -> evaluation (in-sample split and held-out bins) -> ONNX + INT8 export (accuracy
# gate on) -> broker -> agent shown held-out bins, several views each, whose manifests carry injected
# errors -> alerts scored: injected errors caught and missed, false alarms, frames/s, latency.
# Synthetic-bin accuracy is a pipeline check, not an ABID result.
#
#   bash scripts/pipeline.sh [OUT_DIR]        (default: ./pipeline-out; about 10 minutes on 2 cores)
#
# Environment knobs: COUNT (training bins, default 2400), EPOCHS (default 12), IMG (input size, 64),
# EVAL_COUNT (held-out bins, 300), VIEWS (pictures per held-out bin, 3), FRESH=1 (start over instead
# of reusing what an earlier run with the same options made). Extra arguments after OUT_DIR go to
# `binwatch demo` as they are (e.g. --broker mqtt://host:1883).
set -euo pipefail

OUT="${1:-pipeline-out}"
shift || true
REUSE="--reuse"
[ "${FRESH:-0}" = 1 ] && REUSE="--fresh"
exec binwatch demo --out "$OUT" "$REUSE" --no-console \
  --count "${COUNT:-2400}" --epochs "${EPOCHS:-12}" --img "${IMG:-64}" \
  --eval-count "${EVAL_COUNT:-300}" --views "${VIEWS:-3}" "$@"
