"""Evaluation outputs: metrics.json (the CLI contract), a Markdown report, ROC curves and heatmap overlays."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from model_server.engine.geometry import resize_to  # noqa: E402
from model_server.engine.model_card import fmt as _fmt  # noqa: E402
from model_server.training import metrics  # noqa: E402
from model_server.training.evaluation import ClassEvaluation  # noqa: E402
from model_server.training.samples import Sample  # noqa: E402

#: Test images shown per class in each of the "best" and "worst" heatmap rows.
EXAMPLES = 4


def metrics_document(model: str, model_version: str, results: dict[str, dict]) -> dict:
    """The metrics.json document: per class and the mean over classes."""
    return {
        "model": model,
        "model_version": model_version,
        "classes": results,
        "mean": metrics.summarise(results),
    }


def plot_roc(evaluations: Sequence[ClassEvaluation], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 5))
    for ev in evaluations:
        if len(set(ev.labels.tolist())) < 2:
            continue
        fpr, tpr = metrics.roc_curve_points(ev.labels, ev.scores)
        ax.plot(fpr, tpr, label=f"{ev.class_name} (AUROC {ev.metrics['image_auroc']:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="Image-level ROC", xlim=(0, 1))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _margins(ev: ClassEvaluation) -> np.ndarray:
    """How clearly each image is on the right side of the threshold (negative = misclassified)."""
    thr = ev.metrics["threshold"]
    return np.where(ev.labels == 1, ev.scores - thr, thr - ev.scores)


def plot_heatmaps(ev: ClassEvaluation, samples: Sequence[Sample], path: Path) -> None:
    """Best and worst test images (by margin to the threshold) with their anomaly maps overlaid."""
    order = np.argsort(_margins(ev))
    k = min(EXAMPLES, len(order))
    rows = [("worst", order[:k]), ("best", order[::-1][:k])]
    by_name = {s.name: s for s in samples}
    vmax = max(float(np.percentile(ev.maps, 99.9)), ev.metrics["threshold"] * 1.5)
    fig, axes = plt.subplots(2, k, figsize=(2.6 * k, 5.8), squeeze=False)
    for r, (title, idx) in enumerate(rows):
        for c, i in enumerate(idx):
            ax = axes[r][c]
            image = resize_to(by_name[ev.names[i]].load_rgb(), ev.maps.shape[1:])
            ax.imshow(image)
            ax.imshow(ev.maps[i], cmap="jet", alpha=0.45, vmin=0, vmax=vmax)
            if ev.masks is not None and ev.masks[i].any():
                ax.contour(ev.masks[i], levels=[0.5], colors="white", linewidths=0.8)
            verdict = "defect" if ev.labels[i] else "good"
            ax.set_title(f"{title}: {verdict}\nscore {ev.scores[i]:.2f}", fontsize=8)
            ax.axis("off")
    fig.suptitle(f"{ev.class_name}: threshold {ev.metrics['threshold']:.2f} (white: ground-truth defect)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _configuration(card: dict) -> str:
    hp = card.get("hyperparameters") or {}
    f = hp.get("features") or {}
    if not f:
        return "n/a"
    layers = ",".join(map(str, f.get("layers", [])))
    weighting = f.get("layer_weighting", "channels")
    box = f.get("source_size") or "square stretch"
    top = hp.get("score_top_fraction") or 0
    pooling = "max" if not top else f"mean of top {top:g}"
    return (
        f"{f.get('backbone')} stages {layers} at {f.get('input_size')} px ({weighting} layer weighting, "
        f"canvas for {box}), image score {pooling}"
    )


def _threshold_lines(m: dict, card: dict) -> list[str]:
    """Expected against measured false alarms, with counts and 95 % intervals: a plant sets its trust here."""
    at = m["at_threshold"]
    th = card.get("threshold", {})
    target = (card.get("hyperparameters") or {}).get("target_false_alarm_rate")
    fpr_ci, rec_ci = at.get("false_positive_rate_ci95"), at.get("recall_ci95")
    fitted = th.get("fitted_false_alarm_rate")
    return [
        f"Threshold {_fmt(m['threshold'], 4)} ({th.get('method', 'n/a')} fit on {th.get('n_images')} "
        f"leave-one-out good scores) for a target false-alarm rate of {_fmt(target, 3)}"
        + (f" (fitted: {_fmt(fitted, 4)})" if fitted is not None else "")
        + f". Measured on the test split: false alarms {at['false_positives']}/{m['n_good']} = "
        f"{_fmt(at['false_positive_rate'], 3)}"
        + (f" (95 % CI {fpr_ci[0]:.3f}-{fpr_ci[1]:.3f})" if fpr_ci else "")
        + f", recall {at['true_positives']}/{m['n_anomalous']} = {_fmt(at['recall'], 3)}"
        + (f" (95 % CI {rec_ci[0]:.3f}-{rec_ci[1]:.3f})" if rec_ci else "")
        + ".",
        "",
    ]


def _search_lines(search: dict | None, top: int = 8) -> list[str]:
    """The configuration search: what it tried, the proxy of each, the choice."""
    if not search:
        return []
    ranked = sorted(search["candidates"], key=lambda c: -c["proxy"])[:top]
    kinds = search.get("kinds", [])
    lines = [
        f"Configuration search ({search['seconds']} s; {search['n_fit']} fit, "
        f"{search['n_held_out']} held-out and {search['n_synthetic']} synthetic images; "
        f"proxy: {search['proxy']}): chose **{search['chosen']['label']}** "
        f"(proxy {search['chosen']['proxy']}). Best {len(ranked)} of {len(search['candidates'])} candidates:",
        "",
        "| candidate | proxy | spread | " + " | ".join(kinds) + " |",
        "|---|---|---|" + "---|" * len(kinds),
    ]
    for c in ranked:
        per = " | ".join(_fmt(c["per_kind"].get(k), 3) for k in kinds)
        lines.append(f"| {c['label']} | {c['proxy']:.4f} | {c['spread']:.3f} | {per} |")
    return [*lines, ""]


def write_report(
    report_dir: str | Path,
    model: str,
    model_version: str,
    evaluations: Sequence[ClassEvaluation],
    samples: dict[str, Sequence[Sample]],
    cards: dict[str, dict],
) -> dict:
    """Write metrics.json, report.md, roc.png and heatmaps_<class>.png; returns the metrics document."""
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = metrics_document(model, model_version, {ev.class_name: ev.metrics for ev in evaluations})
    (out / "metrics.json").write_text(json.dumps(doc, indent=2) + "\n")
    plot_roc(evaluations, out / "roc.png")
    for ev in evaluations:
        plot_heatmaps(ev, samples[ev.class_name], out / f"heatmaps_{ev.class_name}.png")
    lines = [
        f"# Evaluation: {model} ({model_version})",
        "",
        "| class | image AUROC | pixel AUROC | AUPRO | F1-max | threshold | recall@thr | FPR@thr | n test |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for ev in evaluations:
        m = ev.metrics
        at = m["at_threshold"]
        lines.append(
            f"| {ev.class_name} | {_fmt(m['image_auroc'])} | {_fmt(m['pixel_auroc'])} | {_fmt(m['aupro'])} | "
            f"{_fmt(m['f1_max'])} | {_fmt(m['threshold'], 3)} | {_fmt(at['recall'], 3)} | "
            f"{_fmt(at['false_positive_rate'], 3)} | {m['n_test']} |"
        )
    mean = doc["mean"]
    lines.append(
        f"| **mean** | {_fmt(mean.get('image_auroc'))} | {_fmt(mean.get('pixel_auroc'))} | "
        f"{_fmt(mean.get('aupro'))} | | | | | |"
    )
    lines += ["", "Pixel metrics are n/a for classes without ground-truth masks.", "", "![ROC](roc.png)", ""]
    for ev in evaluations:
        card = cards.get(ev.class_name, {})
        training = card.get("training", {})
        lines += [
            f"## {ev.class_name}",
            "",
            f"Data: {card.get('data', {}).get('source')}. Memory bank {training.get('bank_patches')} patches "
            f"({training.get('bank_bytes')} bytes), trained in {training.get('total_seconds')} s. "
            f"Configuration: {_configuration(card)}.",
            "",
            *_threshold_lines(ev.metrics, card),
            *_search_lines(card.get("search")),
            f"![{ev.class_name} heatmaps](heatmaps_{ev.class_name}.png)",
            "",
        ]
    (out / "report.md").write_text("\n".join(lines))
    return doc
