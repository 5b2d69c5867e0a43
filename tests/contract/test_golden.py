"""Golden-set comparison (pure; the agent runs it before switching models)."""

from __future__ import annotations

from contract.golden import GoldenItem, GoldenSet, compare_golden, softmax

SHA = "0" * 64


def _golden() -> GoldenSet:
    logits = [[4.0, 1.0, 0.0], [0.0, 0.5, 3.0]]
    return GoldenSet(
        model="model.fp32.onnx",
        model_sha256=SHA,
        temperature=2.0,
        counts=[0, 1, 2],
        items=[
            GoldenItem(file=f"golden/{i}.jpg", sha256=SHA, logits=lg, probs=softmax(lg, 2.0), count=[0, 2][i])
            for i, lg in enumerate(logits)
        ],
    )


def test_softmax_temperature() -> None:
    p1, p2 = softmax([2.0, 0.0]), softmax([2.0, 0.0], temperature=2.0)
    assert abs(sum(p2) - 1) < 1e-12 and p2[0] < p1[0]


def test_compare_golden() -> None:
    g = _golden()
    exact = {it.file: it.probs for it in g.items}
    assert compare_golden(g, exact, "fp32") == []
    nudged = {k: [v[0] - 0.01, v[1] + 0.01, v[2]] for k, v in exact.items()}
    assert compare_golden(g, nudged, "int8") == []
    assert any("differ by" in p for p in compare_golden(g, nudged, "fp32"))
    flipped = dict(exact)
    flipped["golden/0.jpg"] = [0.1, 0.1, 0.8]
    problems = compare_golden(g, flipped, "int8")
    assert problems == ["golden/0.jpg: predicts count 2, reference 0"]
    assert compare_golden(g, {}, "int8") == ["golden/0.jpg: no output", "golden/1.jpg: no output"]
