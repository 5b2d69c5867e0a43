"""The agent on a real bundle from the export pipeline (ResNet18 trained briefly on synthetic
bins -> ONNX -> INT8 for CPU and TensorRT -> bundle with golden set and MANIFEST)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from agent.delivery.records import read_verdicts
from tests.agent.conftest import agent_config
from tests.agent.mqtt_helpers import Collector, wait_until
from tests.hw import requires_mosquitto

pytestmark = [requires_mosquitto, pytest.mark.slow]

COUNTS = [0, 1, 2, 3]


def _train_run(run: Path, data: Path) -> Path:
    """One quick epoch of ResNet18 at 64x64 (what matters here is the export path, not accuracy)."""
    import torch

    from agent.inference.preprocess import preprocess
    from agent.intake.decode import decode_jpeg
    from contract.abid import iter_dataset
    from contract.card import InputSpec, ModelCard, ModelSpec, OutputSpec, TrainedFrom, save_card
    from training.model import build_model

    torch.manual_seed(0)
    card = ModelCard(
        name="agent-real",
        version=3,
        trained_from=TrainedFrom(run_id="agent-test", data=str(data)),
        model=ModelSpec(arch="resnet18", num_classes=len(COUNTS)),
        input=InputSpec(height=64, width=64),
        output=OutputSpec(counts=COUNTS, temperature=1.3),
    )
    items = list(iter_dataset(data))
    x = torch.from_numpy(np.stack([preprocess(decode_jpeg(i.image.read_bytes()), card.input) for i in items]))
    y = torch.tensor([card.output.class_of(i.count) for i in items])
    model = build_model("resnet18", len(COUNTS))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    for i in range(0, len(x), 16):
        loss = torch.nn.functional.cross_entropy(model(x[i : i + 16]), y[i : i + 16])
        opt.zero_grad()
        loss.backward()
        opt.step()
    run.mkdir(parents=True)
    torch.save(model.eval().state_dict(), run / "weights.pt")
    save_card(card, run / "card.json")
    return run


@pytest.fixture(scope="session")
def real_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    pytest.importorskip("torch")
    pytest.importorskip("export.bundle")
    from export.bundle import make_bundle
    from training.data.synth import synthesize

    root = tmp_path_factory.mktemp("real")
    data = root / "bins"
    synthesize(data, 48, max(COUNTS), seed=21, mismatch=0.3, size=(96, 96), progress=False)
    run = _train_run(root / "run", data)
    bundle = make_bundle(run, root / "bundle", calib=data, n_calib=16)
    return Path(bundle), data


def test_agent_runs_the_exported_int8_bundle(real_bundle, mosquitto, tmp_path: Path, make_runtime) -> None:
    from agent.inference.backends.onnxruntime_backend import OnnxRuntimeBackend
    from agent.inference.decision import calibrated_log_probs
    from agent.inference.preprocess import preprocess
    from agent.intake.decode import decode_jpeg
    from contract.card import load_card

    bundle, data = real_bundle
    card = load_card(bundle)
    int8 = card.artifact("onnx", "int8", "cpu")
    assert int8 is not None and (bundle / "MANIFEST.json").is_file()

    # the agent's preprocessing + calibration reproduce export's golden outputs (FP32 model)
    golden = json.loads((bundle / "golden" / "expected.json").read_text())
    fp32 = OnnxRuntimeBackend(precision="fp32", threads=1)
    fp32.load(bundle, card)
    for item in golden["items"]:
        x = preprocess(decode_jpeg((bundle / item["file"]).read_bytes()), card.input)[None]
        probs = np.exp(calibrated_log_probs(fp32.infer(x), card.output.temperature))[0]
        np.testing.assert_allclose(probs, item["probs"], atol=golden["tolerance"]["fp32"])

    col = Collector(mosquitto.url, "binwatch/#")
    state = tmp_path / "state"
    cfg = agent_config(
        bundle=bundle, state_dir=state, broker=mosquitto.url, replay=data, manifest=data / "manifest-mismatch"
    )
    cfg.model.precision = "auto"
    rt = make_runtime(cfg)
    model = rt.store.current
    assert (model.backend.precision, model.backend.model_file.name) == ("int8", int8.file)

    # /v1/count on the golden images agrees with export's expectations within the INT8 tolerance
    for item in golden["items"]:
        req = urllib.request.Request(
            rt.http.url + "/v1/count", data=(bundle / item["file"]).read_bytes(), method="POST"
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            out = json.loads(r.read())
        got = [out["distribution"][str(c)] for c in COUNTS]
        np.testing.assert_allclose(got, item["probs"], atol=golden["tolerance"]["int8"])

    assert wait_until(lambda: len(read_verdicts(state / "verdicts.jsonl")) == 48, timeout=60)
    rt.stop()
    decided = {v["alert_id"] for v in read_verdicts(state / "verdicts.jsonl") if v["verdict"] == "mismatch"}
    assert wait_until(lambda: col.alert_ids() >= decided)
    assert col.alert_ids() == decided
    for a in col.alerts():
        assert (a.model.name, a.model.version, a.model.precision, a.model.sha256) == (
            "agent-real",
            3,
            "int8",
            int8.sha256,
        )
        assert set(a.distribution) == {"0", "1", "2", "3"}
    col.close()
