"""What ``binwatch eval --update-card`` writes into the run's card (training/evaluate.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

__all__ = ["card_metrics", "update_card"]


def update_card(
    run: Path, card, *, metrics_entry, temperature: Optional[float], decision: Optional[dict]
) -> None:
    """Replace the card's metrics entry for the same dataset/split/model; set T and the decision."""
    from contract.card import DecisionDefaults, save_card

    card.metrics = [
        m
        for m in card.metrics
        if not (
            m.dataset == metrics_entry.dataset
            and m.split == metrics_entry.split
            and m.model == metrics_entry.model
        )
    ] + [metrics_entry]
    if temperature is not None:
        card.output.temperature = float(temperature)
    if decision is not None:
        card.decision = DecisionDefaults(**decision)
    save_card(card, run / "card.json")


def card_metrics(argmax: dict[str, Any], calib: dict[str, Any], d: Any, in_sample: bool) -> Any:
    """The card's metrics entry of an evaluation (argmax decoding) of ``d`` (the evaluated data): it
    says when the scores are in-sample (T/thresholds fitted on scored images, training images scored)."""
    from contract.card import Metrics

    return Metrics(
        dataset=d.id,
        split=d.split,
        n=argmax["n"],
        accuracy=argmax["accuracy"],
        rmse=argmax["rmse"],
        mae=argmax["mae"],
        per_class_accuracy={
            k: v["accuracy"] for k, v in argmax["per_class"].items() if v["accuracy"] is not None
        },
        ece=calib["ece"],
        ece_uncalibrated=calib["ece_uncalibrated"],
        model="pytorch",
        is_synthetic=d.synthetic,
        calibrated_in_sample=in_sample,
        training_images=d.training_images,
    )
