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


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def model_card_markdown(card: dict) -> str:
    """The model card for people: what was trained on what, how, and how well."""
    data, training, threshold = card.get("data", {}), card.get("training", {}), card.get("threshold", {})
    lines = [
        f"# Model card: {card.get('class_name')} ({card.get('model')})",
        "",
        f"- Data: {data.get('source')}",
        f"- Data fingerprint (SHA-256 of the training images): `{data.get('fingerprint')}`",
        f"- Images: {data.get('n_train')} in the memory bank, {data.get('n_threshold')} of them scored "
        f"against the others for the threshold, {data.get('n_noise_in_train')} known-defective images in "
        "train (noise study)",
        f"- Memory bank: {training.get('bank_patches')} of {training.get('n_patches')} patches, "
        f"{training.get('bank_bytes')} bytes; trained in {training.get('total_seconds')} s",
        f"- Threshold: {fmt(threshold.get('threshold'))} for {_percent(1 - threshold.get('quantile', 1))} "
        f"false alarms ({threshold.get('method')} fit to {threshold.get('n_images')} leave-one-out good "
        f"scores, {_percent(threshold.get('fitted_false_alarm_rate'))} above it; normalised score 0.5)",
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
