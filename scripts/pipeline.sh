#!/usr/bin/env bash
# The end-to-end path on a CPU: synthetic bins -> training -> evaluation -> ONNX + INT8 export ->
# signed-less bundle -> agent replaying frames against a manifest with wrong quantities -> mismatch
# alerts read back from an MQTT broker. Synthetic-bin accuracy is a pipeline check, not an ABID result.
#
#   bash scripts/pipeline.sh [OUT_DIR]        (default: ./pipeline-out; about 10-15 minutes on 2 cores)
#
# Environment knobs: COUNT (synthetic bins, default 1500), EPOCHS (default 6), IMG (input size, 64).
set -euo pipefail

OUT="${1:-pipeline-out}"
COUNT="${COUNT:-1500}"
EPOCHS="${EPOCHS:-6}"
IMG="${IMG:-64}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1/7 synthetic bins ($COUNT, 20% of manifests wrong) -> $OUT/synth"
if [ ! -f "$OUT/synth/mismatch.json" ]; then
  binwatch data synth --out "$OUT/synth" --count "$COUNT" --max-items 5 --seed 0 --mismatch 0.2 \
    --min-size 160 --max-size 320 --workers 0 --overwrite
fi
binwatch data stats "$OUT/synth"

step "2/7 prepared cache ($((IMG * 2))px)"
binwatch data prepare "$OUT/synth" --out "$OUT/cache" --size $((IMG * 2))

step "3/7 train resnet18 from scratch ($EPOCHS epochs at ${IMG}px, CPU)"
binwatch train --data "$OUT/synth" --cache "$OUT/cache" --arch resnet18 --epochs "$EPOCHS" \
  --img-size "$IMG" --out "$OUT/run" --exist-ok

step "4/7 evaluate, calibrate, choose mismatch thresholds"
binwatch eval "$OUT/run" --data "$OUT/synth"

step "5/7 export: ONNX (parity-checked), INT8 for CPU and TensorRT, bundle"
binwatch export bundle "$OUT/run" --out "$OUT/bundle" --calib "$OUT/synth" --n 128 \
  --eval "$OUT/synth" --overwrite --force
binwatch export verify "$OUT/bundle"

step "6/7 broker"
BROKER_PID=""
PORT="$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
MOSQ="$(command -v mosquitto || true)"; [ -z "$MOSQ" ] && [ -x /usr/sbin/mosquitto ] && MOSQ=/usr/sbin/mosquitto
if [ -n "$MOSQ" ]; then
  printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$PORT" > "$OUT/mosquitto.conf"
  [ "$(id -u)" = 0 ] && echo "user root" >> "$OUT/mosquitto.conf"
  "$MOSQ" -c "$OUT/mosquitto.conf" > "$OUT/mosquitto.log" 2>&1 &
else
  echo "mosquitto not found; using the embedded amqtt broker"
  printf 'listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:%s\nplugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: true\n' "$PORT" > "$OUT/amqtt.yaml"
  amqtt -c "$OUT/amqtt.yaml" > "$OUT/amqtt.log" 2>&1 &
fi
BROKER_PID=$!
trap '[ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null || true; [ -n "${WATCH_PID:-}" ] && kill "$WATCH_PID" 2>/dev/null || true' EXIT
sleep 1
URL="mqtt://127.0.0.1:$PORT"

step "7/7 agent replays $COUNT frames against the wrong-quantity manifest; alerts read back from $URL"
binwatch alerts watch --broker "$URL" --site demo --json > "$OUT/alerts.jsonl" 2> "$OUT/alerts-watch.log" &
WATCH_PID=$!
sleep 1
rm -rf "$OUT/state"
binwatch agent run --model "$OUT/bundle" --replay "$OUT/synth" --manifest "$OUT/synth/manifest-mismatch" \
  --broker "$URL" --site demo --device cam-01 --state-dir "$OUT/state" --no-http --exit-when-done
sleep 2
kill "$WATCH_PID" 2>/dev/null || true
wait "$WATCH_PID" 2>/dev/null || true
WATCH_PID=""

python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
truth = json.loads((out / "synth" / "mismatch.json").read_text())["mismatched"]
alerts = [json.loads(l) for l in (out / "alerts.jsonl").read_text().splitlines() if l.strip()]
flagged = {a["bin_id"] for a in alerts}
wrong = set(truth)
verdicts = [json.loads(l) for l in (out / "state" / "verdicts.jsonl").read_text().splitlines() if l.strip()]
hit = len(flagged & wrong)
print(f"frames decided: {len(verdicts)}; alerts received: {len(alerts)} (unique ids: {len({a['alert_id'] for a in alerts})})")
print(f"bins with a wrong manifest: {len(wrong)}; flagged: {hit} (recall {hit / max(1, len(wrong)):.1%}); "
      f"false alarms: {len(flagged - wrong)} of {len(verdicts) - len(wrong)} correct manifests")
print("synthetic bins: a pipeline check, not an ABID accuracy figure")
PY
echo "outputs in $OUT (run report: $OUT/run/eval-*/report.md, alerts: $OUT/alerts.jsonl)"
