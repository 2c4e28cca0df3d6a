"""R-D study: does Balanced R-D beat Adam here? Same seeds, data and steps for every method; real bitstreams.

From scratch, each method trains one model per λ and seed, then codes every test image (never used for
training) to real file bytes and back (`lit_hpcm.evaluation.measure_image`: bpp of the entropy-coded
strings, PSNR of the 8-bit images). Per method and seed the λ points form an R-D curve; BD-rate and BD-PSNR
of each method against Adam of the same seed are averaged over seeds (mean, sample std, each seed's value).

Methods (only the optimizer and the balancing differ; λ grids are per method because FAMO moves the
operating point, chosen so the curves overlap in rate; the overlap is reported):

    adam         Adam                           the official HPCM recipe's optimizer
    cautious     cautious Adam, no balancing    one ingredient of Balanced R-D alone
    famo_rd        cautious Adam + FAMO over rd   Balanced R-D as the authors run it (offsets -1, no priors)
    famo_anchored  famo_rd with loss-scale priors (`task_priors: loss_scale`): the R-D-anchored start, ours
    famo_scales    cautious Adam + FAMO over the per-scale rates, bit-share priors (not in the default list)

A run "collapsed" when y carries less than half of its test images' bits (per-scale bits of the eval forward on
the test images): the codec then sends mostly side information.

    python benchmarks/rd_study.py --jobs 2 -o benchmarks/results/rd_study.json --plot docs/rd_study.png \
        --curves docs/rd_study_curves.png
    python benchmarks/rd_study.py --quick -o /tmp/q.json                           # CI-sized smoke run
    python benchmarks/rd_study.py --preset base --patch 256 --batch 16 --steps 200000 \\
        --train_dir DIV2K/train --test_dir kodak -o base_study.json               # on a GPU, real scale

Fine-tuning study (``--finetune``, Balanced R-D's second strategy): start from the Adam models of the study
(``--weights_dir``: the from-scratch study saves them there; missing ones are trained first, same recipe), continue
``--finetune_steps`` with Adam, with cautious Adam alone, with FAMO (rd) and with the QP (rd), same data, seeds and
steps, each at its base
model's λ; BD-rate of each against continued Adam.

    python benchmarks/rd_study.py --finetune -o benchmarks/results/rd_finetune.json --plot docs/rd_finetune.png

The JSON is rewritten after every run; an interrupted study started again with the same output skips the
runs it already holds (same settings only: a mismatch is refused). Runs go seed by seed, every method of a seed
before the next seed, so a study cut short still compares the methods on its first seeds. Every trained model's
weights are saved under ``--weights_dir`` (default: next to the JSON), to re-test them on other images later.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import multiprocessing
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import lightning as L
import numpy as np
import torch
from scipy.interpolate import PchipInterpolator

from _common import provenance, write_json
from lit_hpcm.data import ImageDataModule
from lit_hpcm.evaluation import RDCurve, bd_psnr, bd_rate, overlap
from lit_hpcm.evaluation.measure import measure_image, summarize
from lit_hpcm.models.weights import save_weights
from lit_hpcm.training.module import LitHPCM

METHODS: dict[str, dict] = {
    "adam": {"optimizer": "adam", "balancing": "none"},
    "cautious": {"optimizer": "cautious_adam", "balancing": "none"},
    "famo_rd": {"optimizer": "cautious_adam", "balancing": "famo", "task_set": "rd"},
    "famo_anchored": {"optimizer": "cautious_adam", "balancing": "famo", "task_set": "rd",
                      "task_priors": "loss_scale"},
    "famo_scales": {"optimizer": "cautious_adam", "balancing": "famo", "task_set": "scales"},
}
DEFAULT_METHODS = ["adam", "famo_rd", "famo_anchored", "cautious"]
FINETUNE_METHODS: dict[str, dict] = {
    "adam": {"optimizer": "adam", "balancing": "none"},
    "cautious": {"optimizer": "cautious_adam", "balancing": "none"},
    "famo_rd": {"optimizer": "cautious_adam", "balancing": "famo", "task_set": "rd"},
    "qp_rd": {"optimizer": "cautious_adam", "balancing": "qp", "task_set": "rd"},
}
ANCHOR = "adam"

# λ per method for the default (tiny, CPU) size. FAMO balances log(L + 1): while λ·255²·MSE >> 1 (low PSNR, as
# in a short run of a small model) its operating point moves little with λ and sits at a far lower rate than
# Adam's at the same λ (640 steps, λ 0.013: Adam 0.19 bpp, famo_rd 0.04, famo_anchored 0.09-0.11; Adam at λ 3e-4
# 0.05 bpp). So Adam's grid reaches down and FAMO's up, to give the curves a shared rate range.
DEFAULT_LAMBDAS = {
    "adam": [0.0003, 0.0006, 0.0012, 0.0035],
    "cautious": [0.0003, 0.0006, 0.0012, 0.0035],
    "famo_rd": [0.005, 0.013, 0.05, 0.15],
    "famo_anchored": [0.002, 0.005, 0.013, 0.035],
    "famo_scales": [0.005, 0.013, 0.05, 0.15],
}
# A run counts as collapsed in either of the two ways seen in these studies: y sheds its bits to z (y's share of the
# test bits under COLLAPSE_SHARE), or the whole codec sinks to the entropy coder's floor, every symbol at its most
# probable value (0.0007 bpp at 14 dB, with y still holding 94 % of those few bits): test bpp under COLLAPSE_BPP,
# a tenth of the lowest rate any Adam run of the study reached.
COLLAPSE_SHARE = 0.5
COLLAPSE_BPP = 0.005


class TrainingCurve(L.Callback):
    """Every `every` steps: the step's training loss terms and FAMO weights (for the training-curve figure)."""

    def __init__(self, every: int):
        self.every = every
        self.rows: list[dict] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.every and step != trainer.max_steps:
            return
        metrics = trainer.callback_metrics
        row = {"step": step}
        for key in ("train/bpp_step", "train/mse_step", "train/bpp_s1_step", "train/bpp_s2_step",
                    "train/bpp_s3_step", "train/bpp_z_step"):
            if key in metrics:
                row[key.removeprefix("train/").removesuffix("_step")] = float(metrics[key])
        if "mse" in row:
            row["psnr"] = -10 * math.log10(max(row["mse"], 1e-10))
        if pl_module.balancer.famo is not None:
            row["weights"] = dict(zip(pl_module.task_names, pl_module.balancer.famo.weights().tolist()))
        self.rows.append(row)


def _quiet_single_thread() -> None:
    """Worker set-up for --jobs: one intra-op thread per run, so parallel runs do not oversubscribe the cores,
    and no per-run device banners."""
    torch.set_num_threads(1)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)


def _weights_path(args, lmbda: float, seed: int, method: str = "adam") -> Path:
    return Path(args.weights_dir) / f"{method}_lmbda{lmbda:g}_seed{seed}.pt"


def test_bit_shares(model, images: list) -> dict[str, float]:
    """Share of the test images' bits per part {z, s1, s2, s3} (eval forward, −log2 likelihoods summed over
    every image [3, H, W]): where the test bits go, to tell a collapsed y."""
    totals: dict[str, float] = {}
    with torch.no_grad():
        for x in images:
            for part, bits in model(x[None])["bits"].items():
                totals[part] = totals.get(part, 0.0) + float(bits.sum())
    whole = sum(totals.values())
    return {part: value / whole if whole > 0 else float("nan") for part, value in totals.items()}


def train_and_test(method: str, lmbda: float, seed: int, args, steps: int, settings: dict,
                   init_weights: str | None = None, data_seed: int | None = None) -> dict:
    """Train one model (from scratch, or from `init_weights`) and measure it on the test images with real
    bitstreams. `settings` are the LitHPCM arguments of the method; Adam models of a from-scratch study are
    saved under --weights_dir for the fine-tuning study."""
    L.seed_everything(seed, verbose=False)
    module = LitHPCM(preset=args.preset, lmbda=lmbda, lr=args.lr, clip_grad_norm=1.0, famo_gamma=args.gamma,
                     log_images=0, init_weights=init_weights, **settings)
    data = ImageDataModule(train_dir=args.train_dir, test_dir=args.test_dir, val_dir=None,
                           patch_size=args.patch, batch_size=args.batch, num_workers=args.workers,
                           train_length=args.batch * steps, seed=seed if data_seed is None else data_seed)
    curve = TrainingCurve(max(steps // 30, 1))
    trainer = L.Trainer(accelerator=args.accelerator, devices=1, max_steps=steps, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0, callbacks=[curve])
    started = time.perf_counter()
    trainer.fit(module, datamodule=data)
    train_s = time.perf_counter() - started
    if init_weights is None and args.weights_dir:
        save_weights(module.model.state_dict(), args.preset, _weights_path(args, lmbda, seed, method))
    model = module.model.eval()
    model.update()
    data.setup("test")
    images = [(item["image"].to(module.device), item["name"]) for item in data.test_set]
    with torch.no_grad():
        rows = [measure_image(model, x, name) for x, name in images]
    shares = test_bit_shares(model, [x for x, _ in images])
    summary = summarize(rows, name=f"{method} λ={lmbda} seed={seed}")
    results = {k: v[0] for k, v in summary["results"].items()}
    final = curve.rows[-1] if curve.rows else {}
    return {"method": method, "lmbda": lmbda, "seed": seed, "train_s": train_s, "test": results,
            "per_image": rows, "training_curve": curve.rows, "final_weights": final.get("weights"),
            "y_share": _y_share(final), "test_bit_shares": shares, "test_y_share": 1 - shares["z"]}


def collapses(runs: list[dict], method: str) -> dict:
    """The runs of `method` that collapsed (y under COLLAPSE_SHARE of the test bits, or test bpp under
    COLLAPSE_BPP): count, out of, and which."""
    mine = [r for r in runs if r["method"] == method and r.get("test_y_share") is not None]
    which = [{"lmbda": r["lmbda"], "seed": r["seed"], "test_y_share": r["test_y_share"], "bpp": r["test"]["bpp"]}
             for r in mine if collapsed(r)]
    return {"collapsed": len(which), "runs": len(mine), "which": which}


def collapsed(run: dict) -> bool:
    """Whether a run collapsed (see `collapses`); a run without test bit shares is judged by its rate alone."""
    share = run.get("test_y_share")
    return run["test"]["bpp"] < COLLAPSE_BPP or (share is not None and share < COLLAPSE_SHARE)


def _y_share(row: dict) -> float | None:
    """Fraction of the training bits carried by y (s1 + s2 + s3) at the last recorded step."""
    if "bpp" not in row or not row["bpp"]:
        return None
    return sum(row.get(f"bpp_{s}", 0.0) for s in ("s1", "s2", "s3")) / row["bpp"]


def _curve(runs: list[dict], method: str, seed: int) -> RDCurve | None:
    points = sorted((r["test"]["bpp"], r["test"]["psnr-rgb"]) for r in runs
                    if r["method"] == method and r["seed"] == seed)
    if not points:
        return None
    return RDCurve(name=f"{method} seed {seed}", metric="psnr", bpp=tuple(p[0] for p in points),
                   values=tuple(p[1] for p in points))


def _spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None, "per_seed": values}


def rd_cost(run: dict) -> float:
    """The run's R-D cost on the test images at its own λ: mean over images of λ·255²·MSE + bpp (real bitstreams,
    MSE of the 8-bit images recovered from each image's PSNR)."""
    return statistics.fmean(run["lmbda"] * 255**2 * 10 ** (-row["psnr-rgb"] / 10) + row["bpp"]
                            for row in run["per_image"])


def paired_cost(runs: list[dict], method: str) -> dict | None:
    """Relative R-D cost (%) of `method` against Adam trained at the same λ and seed, over every such pair:
    the comparison that needs no curve, for methods that minimise the same λ-weighted cost (not FAMO's)."""
    anchor = {(r["lmbda"], r["seed"]): r for r in runs if r["method"] == ANCHOR}
    pairs = [100 * (rd_cost(r) / rd_cost(anchor[(r["lmbda"], r["seed"])]) - 1)
             for r in runs if r["method"] == method and (r["lmbda"], r["seed"]) in anchor]
    return _spread(pairs) | {"pairs": len(pairs)} if pairs else None


def _adam_interpolant(runs: list[dict], seed: int, inverse: bool):
    """Adam's curve of `seed`, interpolated piecewise-cubically: PSNR of log-rate, or (inverse) log-rate of PSNR,
    with the domain it covers; None where the curve has under 2 points or is not strictly monotone on its axis."""
    anchor = _curve(runs, ANCHOR, seed)
    if anchor is None or len(anchor.bpp) < 2:
        return None
    x, y = np.log(anchor.bpp), np.asarray(anchor.values)
    if inverse:
        x, y = y, x
    if np.any(np.diff(x) <= 0):
        return None
    return PchipInterpolator(x, y), (x[0], x[-1])


def _gaps_to_adam(runs: list[dict], method: str, inverse: bool) -> dict | None:
    """Each `method` run against Adam's curve of its seed at one of the run's own coordinates: its PSNR above
    Adam's at its rate (dB), or (inverse) its rate relative to Adam's at its PSNR (%, negative: fewer bits). Runs
    outside Adam's range are left out. Spread over the per-seed means, as BD metrics are reported."""
    per_seed: dict[int, list[float]] = {}
    for run in (r for r in runs if r["method"] == method):
        adam = _adam_interpolant(runs, run["seed"], inverse)
        if adam is None:
            continue
        curve, (low, high) = adam
        rate, psnr = run["test"]["bpp"], run["test"]["psnr-rgb"]
        at = psnr if inverse else math.log(rate)
        if not low <= at <= high:
            continue
        gap = 100 * (rate / math.exp(float(curve(at))) - 1) if inverse else psnr - float(curve(at))
        per_seed.setdefault(run["seed"], []).append(gap)
    if not per_seed:
        return None
    means = [statistics.fmean(per_seed[seed]) for seed in sorted(per_seed)]
    return _spread(means) | {"runs": sum(map(len, per_seed.values())), "seeds": sorted(per_seed)}


def psnr_gain_at_equal_rate(runs: list[dict], method: str) -> dict | None:
    """PSNR (dB) of `method`'s runs above Adam's curve at each run's own rate (see `_gaps_to_adam`). It needs no
    curve of the method's own, so it also speaks where a method's points do not form a monotone curve."""
    return _gaps_to_adam(runs, method, inverse=False)


def rate_at_equal_psnr(runs: list[dict], method: str) -> dict | None:
    """Rate (%) of `method`'s runs relative to Adam's curve at each run's own PSNR: BD-rate's question asked of
    single points, for methods whose points BD-rate cannot use (see `_gaps_to_adam`)."""
    return _gaps_to_adam(runs, method, inverse=True)


def analyse(runs: list[dict], methods: list[str], seeds: list[int]) -> dict:
    """BD-rate / BD-PSNR of every method against Adam, per seed and over seeds, with the overlaps; and the
    paired R-D cost against Adam at the same λ where the λ grids meet."""
    table = {}
    for method in methods:
        if method == ANCHOR:
            table[method] = {"collapses": collapses(runs, method)}
            continue
        rates, psnrs, overlaps, notes = [], [], [], []
        for seed in seeds:
            anchor, test = _curve(runs, ANCHOR, seed), _curve(runs, method, seed)
            if anchor is None or test is None:
                continue
            overlaps.append({"seed": seed, "rate": overlap(anchor.bpp, test.bpp).fraction,
                             "psnr": overlap(anchor.values, test.values).fraction})
            try:
                rates.append(bd_rate(anchor.bpp, anchor.values, test.bpp, test.values, method="pchip"))
            except ValueError as err:
                notes.append(f"seed {seed} BD-rate: {err}")
            try:
                psnrs.append(bd_psnr(anchor.bpp, anchor.values, test.bpp, test.values, method="pchip"))
            except ValueError as err:
                notes.append(f"seed {seed} BD-PSNR: {err}")
        table[method] = {"bd_rate_percent": _spread(rates), "bd_psnr_db": _spread(psnrs), "overlap": overlaps,
                         "rd_cost_vs_adam_percent": paired_cost(runs, method), "collapses": collapses(runs, method),
                         "psnr_gain_at_equal_rate_db": psnr_gain_at_equal_rate(runs, method),
                         "rate_at_equal_psnr_percent": rate_at_equal_psnr(runs, method), "notes": notes}
    return table


def plot_seed_curves(runs: list[dict], methods: list[str], out_png: str, title: str):
    """Every method's test curve of every seed, a colour per method and a marker per seed (a mean over seeds would
    put a collapsed run and a healthy one of the same λ at a point neither reached): all points on the left, the
    runs that trained on the right, where the methods' differences are visible. Returns the matplotlib Figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    seeds = sorted({r["seed"] for r in runs})
    trained = [r for r in runs if r["method"] in methods and not collapsed(r)]
    fig = Figure(figsize=(13, 5), layout="constrained")
    axes = fig.subplots(1, 2)
    for colour, method in enumerate(methods):
        for marker, seed in zip(itertools.cycle("osD^v<>P*X"), seeds):
            curve = _curve(runs, method, seed)
            if curve is None:
                continue
            for ax in axes:
                ax.plot(curve.bpp, curve.values, marker=marker, color=f"C{colour}", alpha=0.8,
                        label=f"{method} seed {seed}")
    if trained:
        rates, psnrs = [r["test"]["bpp"] for r in trained], [r["test"]["psnr-rgb"] for r in trained]
        axes[1].set_xlim(0.95 * min(rates), 1.05 * max(rates))
        axes[1].set_ylim(min(psnrs) - 0.2, max(psnrs) + 0.2)
    for ax, what in zip(axes, ("every run", "the runs that did not collapse")):
        ax.set_title(f"{title}: {what}", fontsize=9)
        ax.set_xlabel("bpp (test images, real bitstreams)")
        ax.set_ylabel("PSNR (dB)")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=6, ncol=2)
    FigureCanvasAgg(fig)
    fig.savefig(out_png, dpi=120)
    return fig


def plot_training_curves(runs: list[dict], out_png: str, seed: int = 0) -> None:
    """Training bpp, PSNR and (for FAMO) the rate task's weight against the step, one line per method and λ of
    `seed`: how each method got where it ended."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 4), layout="constrained")
    axes = fig.subplots(1, 3)
    for run in (r for r in runs if r["seed"] == seed):
        rows = run["training_curve"]
        steps = [row["step"] for row in rows]
        label = f"{run['method']} λ={run['lmbda']:g}"
        style = "--" if run["method"].startswith("famo") or run["method"].startswith("qp") else "-"
        axes[0].plot(steps, [row.get("bpp", float("nan")) for row in rows], style, label=label)
        axes[1].plot(steps, [row.get("psnr", float("nan")) for row in rows], style, label=label)
        if rows and rows[-1].get("weights"):
            axes[2].plot(steps, [1 - row["weights"]["distortion"] for row in rows], style, label=label)
    for ax, title in zip(axes, ("training bpp", "training PSNR (dB)", "FAMO: weight of the rate task(s)")):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
    axes[1].legend(fontsize=6, ncol=2)
    FigureCanvasAgg(fig)
    fig.savefig(out_png, dpi=120)


def verdict_table(payload: dict) -> list[str]:
    """The headline table: per method, runs done, collapses, BD-rate and BD-PSNR against Adam (mean ± std over the
    seeds where both curves allow it, and each seed's value), at the study's steps."""
    settings, analysis = payload["settings"], payload.get("analysis", {})
    lines = ["| method | runs | collapsed (per seed) | BD-rate vs Adam, % (mean ± std) | per seed | BD-PSNR, dB | "
             "rate vs Adam at equal PSNR, % (mean ± std over seeds, runs) | "
             "PSNR vs Adam at equal rate, dB (mean ± std over seeds, runs) | steps | seeds |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for method in payload["methods"]:
        runs = [r for r in payload["runs"] if r["method"] == method]
        row = analysis.get(method, {})
        gone = row.get("collapses") or collapses(runs, method)
        seeds = sorted({r["seed"] for r in runs})
        rate, per_seed, psnr, saving, gain = "anchor", "—", "—", "—", "—"
        if "bd_rate_percent" in row:
            rate, per_seed = _spread_text(row["bd_rate_percent"], 1)
            psnr = _spread_text(row["bd_psnr_db"], 2)[0]
            saving = _gap_text(row.get("rate_at_equal_psnr_percent"), 1)
            gain = _gap_text(row.get("psnr_gain_at_equal_rate_db"), 2)
        by_seed = ", ".join(f"{sum(w['seed'] == seed for w in gone['which'])}/{sum(r['seed'] == seed for r in runs)}"
                            for seed in seeds)
        lines.append(f"| {method} | {len(runs)} | {gone['collapsed']} of {gone['runs']} ({by_seed}) | {rate} | {per_seed} | "
                     f"{psnr} | {saving} | {gain} | {settings['steps']} | {', '.join(map(str, seeds)) or '—'} |")
    return lines


def _gap_text(entry: dict | None, digits: int) -> str:
    """A `_gaps_to_adam` entry as "mean ± std (runs)", or why there is none."""
    return f"{_spread_text(entry, digits)[0]} ({entry['runs']})" if entry else "no run in Adam's range"


def _spread_text(entry: dict, digits: int) -> tuple[str, str]:
    """("mean ± std", "seed values") of a `_spread` entry, or why there is none."""
    if entry["mean"] is None:
        return "not computable", "—"
    std = f" ± {entry['std']:.{digits}f}" if entry["std"] is not None else ""
    return f"{entry['mean']:.{digits}f}{std}", ", ".join(f"{v:.{digits}f}" for v in entry["per_seed"])


def markdown_report(payload: dict) -> str:
    """The study's tables as Markdown: the headline table, every run's test point, then BD-rate / BD-PSNR against
    Adam with overlaps, paired costs and notes."""
    lines = [*verdict_table(payload), "",
             "| method | λ | seed | bpp | PSNR (dB) | y share (train) | y share (test) | final weights |",
             "|---|---|---|---|---|---|---|---|"]
    for r in sorted(payload["runs"], key=lambda r: (list(payload["methods"]).index(r["method"]), r["lmbda"], r["seed"])):
        weights = ", ".join(f"{v:.3f}" for v in r["final_weights"].values()) if r.get("final_weights") else "—"
        share = f"{r['y_share']:.0%}" if r.get("y_share") is not None else "—"
        test_share = f"{r['test_y_share']:.0%}" if r.get("test_y_share") is not None else "—"
        lines.append(f"| {r['method']} | {r['lmbda']:g} | {r['seed']} | {r['test']['bpp']:.4f} | "
                     f"{r['test']['psnr-rgb']:.2f} | {share} | {test_share} | {weights} |")
    lines += ["", "| method vs adam | BD-rate % (mean ± std) | per seed | BD-PSNR dB (mean ± std) | per seed | "
              "rate overlap per seed | R-D cost vs Adam at the same λ, % (mean ± std, pairs) | collapsed | notes |",
              "|---|---|---|---|---|---|---|---|---|"]

    for method, row in payload.get("analysis", {}).items():
        if "bd_rate_percent" not in row:
            continue
        rate, rate_seeds = _spread_text(row["bd_rate_percent"], 1)
        psnr, psnr_seeds = _spread_text(row["bd_psnr_db"], 2)
        overlaps = ", ".join(f"{o['rate']:.2f}" for o in row["overlap"])
        notes = "; ".join(dict.fromkeys(n.split(": ", 1)[1] for n in row["notes"])) or "—"
        cost = row.get("rd_cost_vs_adam_percent")
        cost_text = f"{_spread_text(cost, 1)[0]} ({cost['pairs']})" if cost else "no shared λ"
        gone = row.get("collapses") or {"collapsed": 0, "runs": 0}
        lines.append(f"| {method} | {rate} | {rate_seeds} | {psnr} | {psnr_seeds} | {overlaps} | {cost_text} | "
                     f"{gone['collapsed']}/{gone['runs']} | {notes} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", choices=["tiny", "base", "large"])
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3, help="one learning rate for every method")
    parser.add_argument("--gamma", type=float, default=0.003, help="FAMO γ (the authors' README value)")
    for method in METHODS:
        parser.add_argument(f"--lambdas_{method}", nargs="+", type=float, default=DEFAULT_LAMBDAS[method])
    parser.add_argument("--train_dir", default=None, help="training images (default: the bundled photos)")
    parser.add_argument("--test_dir", default=None, help="test images, none of them in train_dir "
                        "(default: the bundled held-out photos)")
    parser.add_argument("--workers", type=int, default=0, help="data-loader worker processes per run")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs trained at once, one CPU thread each (from-scratch study only); 2 on a 2-core "
                             "machine halves the wall time")
    parser.add_argument("--accelerator", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--weights_dir", default=None,
                        help="where every trained model is saved (default: <output>_weights next to the JSON), "
                             "and where --finetune finds the Adam models it starts from")
    parser.add_argument("--finetune", action="store_true", help="the fine-tuning study (see above)")
    parser.add_argument("--finetune_steps", type=int, default=150)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 3 steps, 64² crops, one seed")
    parser.add_argument("--report_only", action="store_true",
                        help="recompute the analysis, Markdown and plots of an existing --output; train nothing")
    parser.add_argument("-o", "--output", default="rd_study.json")
    parser.add_argument("--plot", default=None, help="R-D plot PNG: every seed's curve, all runs and those that trained")
    parser.add_argument("--curves", default=None, help="training-curve PNG (first seed)")
    args = parser.parse_args(argv)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no per-run device banners
    if (args.train_dir is None) != (args.test_dir is None):
        parser.error("give both --train_dir and --test_dir, or neither (the bundled photos)")
    if args.jobs < 1 or (args.jobs > 1 and args.finetune):
        parser.error("--jobs must be 1 or more, and 1 with --finetune (its runs start from the Adam models)")
    if args.weights_dir is None:
        args.weights_dir = str(Path(args.output).with_suffix("")) + "_weights"
    if args.quick:
        args.steps, args.finetune_steps, args.patch, args.batch, args.seeds = 3, 2, 64, 2, args.seeds[:1]

    settings = {k: getattr(args, k) for k in ("preset", "steps", "batch", "patch", "lr", "gamma", "train_dir",
                                              "test_dir")}
    if args.finetune:
        settings["finetune_steps"] = args.finetune_steps
        methods = FINETUNE_METHODS
        lambdas = {m: args.lambdas_adam for m in methods}
    else:
        methods = {m: METHODS[m] for m in args.methods}
        lambdas = {m: getattr(args, f"lambdas_{m}") for m in methods}
    output = Path(args.output)
    runs: list[dict] = []
    if output.exists():
        previous = json.loads(output.read_text())
        if previous.get("settings") != settings:
            raise SystemExit(f"{output} holds a study with other settings {previous.get('settings')}; "
                             "choose another --output")
        runs = previous.get("runs", [])
    done = {(r["method"], r["lmbda"], r["seed"]) for r in runs}
    if args.report_only:
        if not runs:
            raise SystemExit(f"{output}: no runs to report")
        args.seeds = sorted({r["seed"] for r in runs})  # every seed the JSON holds, whatever --seeds says
        done = {(m, lmbda, seed) for m in methods for lmbda in lambdas[m] for seed in args.seeds}
    payload = {"benchmark": "rd_finetune" if args.finetune else "rd_study", "provenance": provenance(),
               "settings": settings, "lambdas": lambdas, "methods": methods, "runs": runs}
    if output.exists() and previous.get("provenance"):  # where the runs were trained, not where they are reported
        payload["provenance"] = previous["provenance"] if args.report_only else payload["provenance"]
        payload["earlier_provenance"] = previous.get("earlier_provenance", []) + (
            [] if args.report_only else [previous["provenance"]])
    # seed by seed (a study cut short still compares every method), the anchor (Adam) first within a seed
    pending = [(method, lmbda, seed) for seed in args.seeds for method in methods
               for lmbda in lambdas[method] if (method, lmbda, seed) not in done]

    def record(run: dict) -> None:
        runs.append(run)
        payload["analysis"] = analyse(runs, list(methods), args.seeds)
        write_json(output, payload)
        t = run["test"]
        print(f"{run['method']:12s} λ={run['lmbda']:<7g} seed={run['seed']}: {t['bpp']:.4f} bpp "
              f"{t['psnr-rgb']:.2f} dB (y {run['y_share'] or 0:.0%} of train bits, {run['train_s']:.0f} s)", flush=True)

    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_quiet_single_thread) as pool:
            futures = [pool.submit(train_and_test, method, lmbda, seed, args, args.steps, methods[method])
                       for method, lmbda, seed in pending]
            for future in as_completed(futures):
                record(future.result())
    else:
        for method, lmbda, seed in pending:
            if args.finetune:
                base = _weights_path(args, lmbda, seed)
                if not base.exists():
                    print(f"training the Adam base model {base} first", flush=True)
                    train_and_test(ANCHOR, lmbda, seed, args, args.steps, METHODS[ANCHOR])
                # fresh crops (another data seed) for the continuation, the same for every method
                record(train_and_test(method, lmbda, seed, args, args.finetune_steps, methods[method],
                                      init_weights=str(base), data_seed=1000 + seed))
            else:
                record(train_and_test(method, lmbda, seed, args, args.steps, methods[method]))
    payload["analysis"] = analyse(runs, list(methods), args.seeds)
    write_json(output, payload)
    output.with_suffix(".md").write_text(markdown_report(payload))
    if args.plot:
        what = (f"fine-tuning {args.finetune_steps} steps from Adam ({args.steps})" if args.finetune
                else f"{args.steps} steps from scratch")
        plot_seed_curves(runs, list(methods), args.plot, title=f"{args.preset}, {what}")
    if args.curves:
        plot_training_curves(runs, args.curves, seed=args.seeds[0])
    print(json.dumps({m: {k: v["mean"] for k, v in row.items() if isinstance(v, dict) and "mean" in v}
                      for m, row in payload["analysis"].items()}, indent=1))


if __name__ == "__main__":
    main()
