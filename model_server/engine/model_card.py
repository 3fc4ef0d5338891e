"""The model card for people (model_card.md in the artifact): what was trained on what, how, and how well.
Plain text from the card's JSON, so writing an artifact needs no plotting library."""

from __future__ import annotations

import json


def fmt(value: object, digits: int = 4) -> str:
    """A metric as shown in cards and reports: fixed decimals, "n/a" when there is none."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def model_card_markdown(card: dict) -> str:
    """The model card for people: what was trained on what, how, and how well."""
    data, training, threshold = card.get("data", {}), card.get("training", {}), card.get("threshold", {})
    lines = [
        f"# Model card: {card.get('class_name')} ({card.get('model')})",
        "",
        f"- Data: {data.get('source')}",
        f"- Data fingerprint (SHA-256 of the training images): `{data.get('fingerprint')}`",
        f"- Images: {data.get('n_fit')} in the memory bank, {data.get('n_holdout')} good images held out for "
        f"the threshold, {data.get('n_noise_in_train')} known-defective images in train (noise study)",
        f"- Memory bank: {training.get('bank_patches')} of {training.get('n_patches')} patches, "
        f"{training.get('bank_bytes')} bytes; trained in {training.get('total_seconds')} s",
        f"- Threshold: {fmt(threshold.get('threshold'))} (quantile {threshold.get('quantile')} of "
        f"{threshold.get('n_images')} held-out good scores; normalised score 0.5)",
        f"- Code: git {card.get('git_commit')}, trained {card.get('trained_at')}",
        "",
        "## Hyperparameters",
        "",
        "```json",
        json.dumps(card.get("hyperparameters", {}), indent=2, sort_keys=True),
        "```",
    ]
    if card.get("metrics"):
        lines += ["", "## Metrics (test split)", ""]
        lines += [f"- {k}: {fmt(v)}" for k, v in card["metrics"].items() if not isinstance(v, dict)]
    return "\n".join(lines) + "\n"
