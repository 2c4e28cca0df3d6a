"""Tests for lit_hpcm.evaluation: BD metrics, reference data, results files, plots, sweep report, commands."""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil

import bjontegaard
import pytest
import yaml

from lit_hpcm.cli.evaluation_commands import register_rd_plot, register_sweep_report
from lit_hpcm.evaluation import (
    RDCurve,
    bd_psnr,
    bd_rate,
    bd_table,
    get_reference,
    list_references,
    overlap,
    rd_plot,
    read_curve,
    write_results,
)
from lit_hpcm.sweeps.report import sweep_report
from lit_hpcm.sweeps.runs import find_runs, lookup

ANCHOR_BPP = [0.12, 0.18, 0.27, 0.41, 0.59, 0.82]
ANCHOR_PSNR = [29.4, 30.8, 32.4, 34.2, 36.0, 37.8]


# --- BD metrics -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["pchip", "cubic"])
@pytest.mark.parametrize("saving", [5.0, 20.0, 37.5])
def test_bd_rate_of_uniform_saving_is_exact(method, saving):
    test_bpp = [b * (1 - saving / 100) for b in ANCHOR_BPP]
    assert bd_rate(ANCHOR_BPP, ANCHOR_PSNR, test_bpp, ANCHOR_PSNR, method=method) == pytest.approx(-saving, abs=1e-9)


def test_bd_psnr_of_uniform_gain_is_exact():
    assert bd_psnr(ANCHOR_BPP, ANCHOR_PSNR, ANCHOR_BPP, [p + 0.5 for p in ANCHOR_PSNR]) == pytest.approx(0.5)


def test_points_are_sorted_before_the_package_sees_them():
    shuffled = [3, 0, 5, 1, 4, 2]
    bpp = [ANCHOR_BPP[i] * 0.9 for i in shuffled]
    psnr = [ANCHOR_PSNR[i] for i in shuffled]
    assert bd_rate(ANCHOR_BPP, ANCHOR_PSNR, bpp, psnr) == pytest.approx(-10.0)


@pytest.mark.parametrize("method", ["pchip", "cubic"])
def test_vtm_vs_elic_matches_bjontegaard_package(method):
    vtm, elic = get_reference("vtm-kodak"), get_reference("elic-kodak")
    expected = bjontegaard.bd_rate(
        vtm.bpp, vtm.values, elic.bpp, elic.values, method, require_matching_points=False, min_overlap=0
    )
    assert bd_rate(vtm.bpp, vtm.values, elic.bpp, elic.values, method=method) == pytest.approx(expected, rel=1e-12)
    assert -15 < expected < 0  # ELIC saves bits over VTM on Kodak


@pytest.mark.parametrize(
    ("test_bpp", "test_psnr", "message"),
    [
        (ANCHOR_BPP[:3], ANCHOR_PSNR[:3], "at least 4"),
        ([b * 10 for b in ANCHOR_BPP], [p + 20 for p in ANCHOR_PSNR], "do not overlap in distortion"),
        (ANCHOR_BPP, [math.nan, *ANCHOR_PSNR[1:]], "must be finite"),
        ([0.0, *ANCHOR_BPP[1:]], ANCHOR_PSNR, "finite and positive"),
        (ANCHOR_BPP, [29.4, 30.8, 30.5, 34.2, 36.0, 37.8], "not strictly monotone"),
        (ANCHOR_BPP, ANCHOR_PSNR[:5], "6 rates but 5"),
    ],
)
def test_bd_refuses_unusable_curves(test_bpp, test_psnr, message):
    with pytest.raises(ValueError, match=message):
        bd_rate(ANCHOR_BPP, ANCHOR_PSNR, test_bpp, test_psnr)


def test_bd_refuses_unknown_method_and_disjoint_rates():
    with pytest.raises(ValueError, match="pchip, cubic"):
        bd_rate(ANCHOR_BPP, ANCHOR_PSNR, ANCHOR_BPP, ANCHOR_PSNR, method="linear")
    with pytest.raises(ValueError, match="do not overlap in rate"):
        bd_psnr(ANCHOR_BPP, ANCHOR_PSNR, [b * 10 for b in ANCHOR_BPP], ANCHOR_PSNR)


def test_overlap_reports_shared_interval():
    shared = overlap([0.0, 2.0], [1.0, 3.0])
    assert (shared.low, shared.high) == (1.0, 2.0)
    assert shared.fraction == pytest.approx(1 / 3)
    assert overlap([0, 1], [2, 3]).fraction == 0.0


# --- reference curves -------------------------------------------------------------------------


def test_reference_curves_include_official_hpcm_numbers():
    names = list_references()
    required = ["hpcm-base-kodak", "hpcm-large-kodak", "hpcm-base-clic", "hpcm-base-tecnick", "vtm-kodak", "elic-kodak"]
    for name in required:
        assert name in names
        assert name + "-msssim" in names
    base = get_reference("hpcm-base-kodak")
    assert base.bpp == (0.1211, 0.1757, 0.2729, 0.4125, 0.5898, 0.8209)
    assert base.values == (29.4022, 30.7547, 32.4012, 34.2063, 36.0145, 37.7525)
    assert (base.metric, base.dataset) == ("psnr", "kodak")
    for name in names:
        curve = get_reference(name)
        assert curve.source.startswith("https://github.com/")
        assert curve.metric == ("ms-ssim-db" if name.endswith("-msssim") else "psnr")
        bd_rate(curve.bpp, curve.values, curve.bpp, curve.values)  # every curve is usable as a BD anchor


def test_unknown_reference_lists_valid_names():
    with pytest.raises(ValueError, match="hpcm-base-kodak"):
        get_reference("hpcm-kodak")


# --- results files ----------------------------------------------------------------------------


def test_results_round_trip(tmp_path):
    curve = RDCurve("ours", "psnr", ANCHOR_BPP, ANCHOR_PSNR, dataset="kodak")
    path = write_results(tmp_path / "sub" / "ours.json", curve)
    assert json.loads(path.read_text())["results"]["psnr-rgb"] == ANCHOR_PSNR
    assert read_curve(path, "psnr") == RDCurve("ours", "psnr", ANCHOR_BPP, ANCHOR_PSNR, "kodak", str(path))


def test_results_mapping_with_linear_msssim_and_per_image(tmp_path):
    document = {
        "name": "eval",
        "description": "Inference (ans)",
        "results": {"bpp": [0.1, 0.2], "psnr-rgb": [30.0, 32.0], "ms-ssim-rgb": [0.9, 0.99]},
        "per_image": [{"point": 0, "image": "a.png", "bpp": 0.1}],
    }
    path = write_results(tmp_path / "eval.json", document)
    curve = read_curve(path, "ms-ssim-db")
    assert curve.values == pytest.approx((10.0, 20.0))
    assert json.loads(path.read_text())["per_image"] == document["per_image"]


def test_read_curve_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a reference curve name"):
        read_curve(tmp_path / "missing.json", "psnr")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_curve(tmp_path / "bad.json", "psnr")
    (tmp_path / "nobpp.json").write_text(json.dumps({"name": "x", "results": {"psnr-rgb": [1.0]}}))
    with pytest.raises(ValueError, match="'bpp'"):
        read_curve(tmp_path / "nobpp.json", "psnr")
    write_results(tmp_path / "psnr.json", RDCurve("x", "psnr", [0.1], [30.0]))
    with pytest.raises(ValueError, match="no ms-ssim-db values"):
        read_curve(tmp_path / "psnr.json", "ms-ssim-db")
    with pytest.raises(ValueError, match="holds psnr"):
        read_curve("vtm-kodak", "ms-ssim-db")
    with pytest.raises(ValueError, match="entries"):
        write_results(tmp_path / "x.json", {"name": "x", "results": {"bpp": [0.1, 0.2], "psnr-rgb": [30.0]}})


# --- plots and BD table -----------------------------------------------------------------------


def test_rd_plot_writes_png(tmp_path):
    curves = [get_reference("vtm-kodak"), get_reference("hpcm-base-kodak")]
    out = rd_plot(curves, "psnr", tmp_path / "rd.png", title="Kodak")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 1000
    with pytest.raises(ValueError, match="not ms-ssim-db"):
        rd_plot(curves, "ms-ssim-db", tmp_path / "x.png")


def test_rd_plot_axes_follow_the_users_curves(tmp_path, monkeypatch):
    """A small demo curve next to Kodak references: the axes span the demo curve (references clipped), unless
    --xlim/--ylim say otherwise; a plot without a title is titled by its metric."""
    from lit_hpcm.evaluation import plots

    mine = RDCurve("mine", "psnr", (0.02, 0.03, 0.04, 0.05), (17.0, 18.0, 19.0, 20.0))
    curves = [mine, get_reference("hpcm-base-kodak")]
    (x_low, x_high), (y_low, y_high) = plots.axis_limits([mine])
    assert x_low < 0.02 and 0.05 < x_high < 0.06 and y_low < 17 and 20 < y_high < 21
    seen = {}
    real_save = plots._save

    def spy(fig, out_png):
        (ax,) = fig.axes
        seen.update(x=ax.get_xlim(), y=ax.get_ylim(), title=ax.get_title())
        return real_save(fig, out_png)

    monkeypatch.setattr(plots, "_save", spy)
    plots.rd_plot(curves, "psnr", tmp_path / "a.png", focus=["mine"])
    assert seen["x"] == pytest.approx((x_low, x_high)) and seen["y"] == pytest.approx((y_low, y_high))
    assert "PSNR" in seen["title"]
    plots.rd_plot(curves, "psnr", tmp_path / "b.png", focus=["mine"], xlim=(0, 1), ylim=(10, 40), title="T")
    assert seen["x"] == (0, 1) and seen["y"] == (10, 40) and seen["title"] == "T"
    with pytest.raises(ValueError, match="not plotted"):
        plots.rd_plot(curves, "psnr", tmp_path / "c.png", focus=["nobody"])


def test_rd_plot_says_which_curves_are_outside_and_xlim_alone_brings_them_in(tmp_path, monkeypatch, capsys):
    """A demo curve far below the Kodak references: the legend marks the references not drawn and the command
    names them; --xlim alone spans the quality axis over every curve in that bpp range, so they show."""
    from lit_hpcm.evaluation import plots

    seen = {}
    real_save = plots._save

    def spy(fig, out_png):
        (ax,) = fig.axes
        seen.update(legend=[t.get_text() for t in ax.get_legend().get_texts()], y=ax.get_ylim())
        return real_save(fig, out_png)

    monkeypatch.setattr(plots, "_save", spy)
    mine = write_results(tmp_path / "mine.json", RDCurve("mine", "psnr", (0.02, 0.03, 0.04, 0.05), (17, 18, 19, 20)))
    argv = ["rd-plot", str(mine), "--ref", "vtm-kodak", "hpcm-base-kodak", "-o", str(tmp_path / "rd.png")]
    args = _parse(argv)
    assert args.func(args) == 0
    assert seen["legend"] == ["mine", "vtm-kodak (outside these axes)", "hpcm-base-kodak (outside these axes)"]
    assert capsys.readouterr().out.splitlines()[-1].endswith("--ylim): vtm-kodak, hpcm-base-kodak")

    args = _parse([*argv, "--xlim", "0", "0.3"])
    assert args.func(args) == 0
    assert seen["legend"] == ["mine", "vtm-kodak", "hpcm-base-kodak"]
    low, high = seen["y"]
    vtm = get_reference("vtm-kodak")
    at_0_3 = max(v for b, v in zip(vtm.bpp, vtm.values) if b <= 0.3)  # VTM's best PSNR within the range
    assert low < 17 and at_0_3 < high < 40 and "not drawn" not in capsys.readouterr().out
    with pytest.raises(ValueError, match="no curve has points within --xlim"):
        plots.plot_limits([get_reference("vtm-kodak")], xlim=(5, 6))


def test_points_within_a_box_include_a_line_crossing_it_without_a_point_inside():
    from lit_hpcm.evaluation.plots import curves_outside, points_within

    crossing = RDCurve("crossing", "psnr", (0.1, 0.9), (20, 40))
    # 25 dB per bpp: the line enters the box at 29 dB (0.46 bpp) and leaves it at 31 dB (0.54 bpp)
    assert points_within(crossing, (0.4, 0.6), (29, 31)).ravel().tolist() == pytest.approx([0.46, 29, 0.54, 31])
    assert curves_outside([crossing, RDCurve("dot", "psnr", (2.0,), (30,))], (0.4, 0.6), (29, 31)) == ["dot"]


def test_rd_plot_help_lists_the_reference_names_whole():
    from lit_hpcm.cli.evaluation_commands import register_rd_plot

    subparsers = argparse.ArgumentParser(prog="lit-hpcm").add_subparsers()
    text = register_rd_plot(subparsers).format_help()
    words = set(text.replace(",", " ").replace(";", " ").split())
    assert set(list_references()) <= words


def test_bd_table_rows_explain_incomparable_curves():
    short = RDCurve("short", "psnr", ANCHOR_BPP[:3], ANCHOR_PSNR[:3])
    curves = [get_reference("vtm-kodak"), get_reference("hpcm-base-kodak"), short]
    rows = bd_table(curves, "vtm-kodak")
    assert [row["curve"] for row in rows] == ["hpcm-base-kodak", "short"]
    good, bad = rows
    assert good["bd_rate_percent"] < -10 and good["bd_quality_db"] > 0 and good["note"] == ""
    assert 0 < good["quality_overlap"] <= 1 and 0 < good["rate_overlap"] <= 1
    assert bad["bd_rate_percent"] is None and "at least 4" in bad["note"]
    with pytest.raises(ValueError, match="not among"):
        bd_table(curves, "elic-kodak")


# --- sweep report -----------------------------------------------------------------------------


def _lightning_run(folder, hparams, losses):
    folder.mkdir(parents=True)
    (folder / "hparams.yaml").write_text(yaml.dump(hparams))
    with open(folder / "metrics.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", "step", "train/loss", "val/loss"])
        for epoch, loss in enumerate(losses):
            writer.writerow([epoch, epoch * 10, 2.0, ""])
            writer.writerow([epoch, epoch * 10, "", loss])


def _wandb_files_run(folder, config, summary):
    """The layout W&B writes for online/synced runs: files/config.yaml (wrapped values) + summary JSON."""
    (folder / "files").mkdir(parents=True)
    wrapped = {"wandb_version": 1, "_wandb": {"value": {"cli_version": "0.31.0"}}}
    wrapped.update({key: {"desc": None, "value": value} for key, value in config.items()})
    (folder / "files" / "config.yaml").write_text(yaml.dump(wrapped))
    (folder / "files" / "wandb-summary.json").write_text(json.dumps({**summary, "_runtime": 3.0, "_step": 9}))


@pytest.fixture(scope="module")
def offline_wandb_run(tmp_path_factory):
    """A real offline W&B run; its big config entry makes the transaction log span several 32 KiB blocks."""
    wandb = pytest.importorskip("wandb")
    root = tmp_path_factory.mktemp("wandb_runs")
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "offline")
    mp.setenv("WANDB_SILENT", "true")
    try:
        config = {"model": {"famo_gamma": 0.003, "note": "x" * 70000}, "w_lr": 0.05}
        run = wandb.init(dir=root, project="sweep", config=config, settings=wandb.Settings(console="off"))
        run.config.update({"extra": {"late": 1}})
        for loss in (1.4, 0.9, 0.95):
            run.log({"val/loss": loss})
        run.finish()
        # finish() can return before the W&B service has written the whole log (about 1 run in 8 on a loaded
        # machine, read back with nothing in it); teardown waits for the service to exit.
        wandb.teardown()
    finally:
        mp.undo()
    return root


def test_offline_wandb_transaction_log_is_read(offline_wandb_run):
    (run,) = find_runs(offline_wandb_run)
    assert run.kind == "wandb" and run.path.startswith("wandb/offline-run-")
    assert run.hparams["model.famo_gamma"] == 0.003 and run.hparams["extra.late"] == 1
    assert run.metrics["val/loss"] == 0.95


def test_truncated_transaction_log_keeps_what_was_written(tmp_path, offline_wandb_run):
    """A crashed run's log ends mid-record; the complete records before it still count."""
    shutil.copytree(offline_wandb_run, tmp_path / "runs")
    (log,) = (tmp_path / "runs").glob("wandb/offline-run-*/*.wandb")
    log.write_bytes(log.read_bytes()[:50000])  # inside the run record's second block
    (run,) = find_runs(tmp_path / "runs")
    assert run.hparams == {} and run.metrics == {}
    log.write_bytes((offline_wandb_run / log.relative_to(tmp_path / "runs")).read_bytes()[:-20])
    (run,) = find_runs(tmp_path / "runs")
    assert run.hparams["model.famo_gamma"] == 0.003


def test_sweep_report_over_both_run_kinds(tmp_path, offline_wandb_run):
    runs = tmp_path / "runs"
    shutil.copytree(offline_wandb_run, runs / "wb")
    _lightning_run(runs / "csv" / "version_0", {"famo_gamma": 0.001, "w_lr": 0.025}, [1.5, 1.1])
    _lightning_run(runs / "csv" / "version_1", {"famo_gamma": 0.001, "w_lr": 0.025}, [1.5, 0.7])
    _lightning_run(runs / "csv" / "version_2", {"famo_gamma": 0.003, "w_lr": 0.025}, [1.0, 0.6])
    _lightning_run(runs / "csv" / "version_3", {"famo_gamma": 0.001, "w_lr": 0.05}, [])
    online = runs / "wb2" / "wandb" / "run-20250101_000000-abc"
    _wandb_files_run(online, {"model": {"famo_gamma": 0.002}, "w_lr": 0.05}, {"val/loss": 0.8})

    report = sweep_report(runs, tmp_path / "out", y="w_lr", top_k=2)
    for name in ("table.csv", "table.md", "heatmap.png", "top_k.md"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    ranked = [(row["run"], row["val/loss"]) for row in report.rows]
    assert ranked[0] == ("csv/version_2", 0.6)
    assert ranked[-1] == ("csv/version_3", None)
    assert len(ranked) == 6
    top = (tmp_path / "out" / "top_k.md").read_text()
    assert "csv/version_2" in top and "csv/version_1" in top and "wb2" not in top
    with open(tmp_path / "out" / "table.csv") as handle:
        assert next(csv.DictReader(handle))["run"] == "csv/version_2"

    assert any(run.startswith("wb/wandb/offline-run-") and loss == 0.95 for run, loss in ranked)

    worst = sweep_report(runs, tmp_path / "out_max", y="w_lr", mode="max")
    assert worst.rows[0]["run"] == "csv/version_0"


def test_sweep_report_errors(tmp_path):
    with pytest.raises(ValueError, match="no runs found"):
        sweep_report(tmp_path, tmp_path / "out")
    _lightning_run(tmp_path / "version_0", {"lr": 1e-4}, [1.0])
    (tmp_path / "version_0" / "hparams.yaml").write_text("lr: [1e-4\n")
    with pytest.raises(ValueError, match="invalid YAML"):
        sweep_report(tmp_path, tmp_path / "out")
    (tmp_path / "version_0" / "hparams.yaml").write_text("lr: 1.0e-4\n")
    with pytest.raises(ValueError, match="no hyperparameter 'famo_gamma'.*lr"):
        sweep_report(tmp_path, tmp_path / "out")
    with pytest.raises(ValueError, match="no run logged metric 'val/psnr'"):
        sweep_report(tmp_path, tmp_path / "out", x="lr", y="lr", metric="val/psnr")


def test_lightning_run_reads_cli_config_and_python_tags(tmp_path):
    _lightning_run(tmp_path / "version_0", {"w_lr": 0.025, "betas": (0.9, 0.999)}, [1.0])
    (tmp_path / "version_0" / "config.yaml").write_text(yaml.safe_dump({"model": {"famo_gamma": 0.002, "w_lr": 9.0}}))
    (run,) = find_runs(tmp_path)
    assert run.hparams["betas"] == [0.9, 0.999]  # hparams.yaml as Lightning writes it: !!python/tuple
    assert lookup(run.hparams, "famo_gamma") == 0.002  # from LightningCLI's config.yaml
    assert lookup(run.hparams, "w_lr") == 0.025  # the exact key wins over model.w_lr
    assert run.metrics == {"epoch": 0.0, "step": 0.0, "train/loss": 2.0, "val/loss": 1.0}


def test_lookup_by_suffix():
    hparams = {"model.famo_gamma": 0.1, "a.lr": 1, "b.lr": 2, "lr": 3, "x.w": 5, "y.w": 5}
    assert lookup(hparams, "famo_gamma") == 0.1
    assert lookup(hparams, "lr") == 3
    assert lookup(hparams, "w") == 5
    with pytest.raises(ValueError, match="ambiguous"):
        lookup({"a.lr": 1, "b.lr": 2}, "lr")


# --- commands ---------------------------------------------------------------------------------


def _parse(argv):
    parser = argparse.ArgumentParser(prog="lit-hpcm")
    subparsers = parser.add_subparsers()
    register_rd_plot(subparsers)
    register_sweep_report(subparsers)
    return parser.parse_args(argv)


def test_rd_plot_command(tmp_path, capsys):
    results = write_results(tmp_path / "ours.json", RDCurve("ours", "psnr", ANCHOR_BPP, ANCHOR_PSNR))
    out = tmp_path / "rd.png"
    args = _parse(["rd-plot", str(results), "--ref", "vtm-kodak", "--ref", "hpcm-base-kodak", "-o", str(out)])
    assert args.func(args) == 0
    assert (tmp_path / "rd.png").stat().st_size > 0
    table = (tmp_path / "rd_bd.md").read_text()
    assert "vs vtm-kodak" in table and "hpcm-base-kodak" in table and "ours" in table
    with open(tmp_path / "rd_bd.csv") as handle:
        assert [row["curve"] for row in csv.DictReader(handle)] == ["ours", "hpcm-base-kodak"]

    args = _parse(["rd-plot", str(tmp_path / "missing.json"), "-o", str(tmp_path / "x.png")])
    assert args.func(args) == 2
    assert "lit-hpcm rd-plot: error:" in capsys.readouterr().err


def test_sweep_report_command(tmp_path, capsys):
    _lightning_run(tmp_path / "runs" / "version_0", {"model": {"famo_gamma": 0.001, "famo_w_lr": 0.025}}, [0.5])
    args = _parse(["sweep-report", str(tmp_path / "runs"), "-o", str(tmp_path / "out"), "--top-k", "1"])
    assert args.func(args) == 0
    assert "version_0" in capsys.readouterr().out
    args = _parse(["sweep-report", str(tmp_path / "runs"), "-o", str(tmp_path / "out"), "--x", "nope"])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert "no hyperparameter 'nope'" in err and "Traceback" not in err


def test_sweep_report_reads_callbacks_by_class_and_filters(tmp_path):
    """LightningCLI's callback list is keyed by class name; --where / --kind / columns shape the report."""
    for index, (optimizer, frozen, loss) in enumerate(
        [("adam", [], 0.9), ("adam", ["entropy"], 0.7), ("cautious_adam", [], 0.8), ("cautious_adam", ["entropy"], 0.6)]
    ):
        folder = tmp_path / "runs" / f"version_{index}"
        _lightning_run(folder, {"optimizer": optimizer}, [loss])
        callbacks = [
            {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"monitor": "val/loss"}},
            {"class_path": "lit_hpcm.callbacks.ProgressiveUnfreezing", "init_args": {"frozen_at_start": frozen, "schedule": {}}},
        ]
        (folder / "config.yaml").write_text(yaml.safe_dump({"trainer": {"callbacks": callbacks}}))
    report = sweep_report(
        tmp_path / "runs", tmp_path / "out", x="frozen_at_start", y="schedule", columns=["optimizer"],
        where={"optimizer": "cautious_adam"}, kind="csv",
    )
    assert [(row["run"], row["frozen_at_start"], row["schedule"]) for row in report.rows] == [
        ("version_3", ["entropy"], {}), ("version_2", [], {})
    ]
    assert report.rows[0]["optimizer"] == "cautious_adam"
    assert '["entropy"]' in (tmp_path / "out" / "table.md").read_text()  # lists read as compact JSON
    both = sweep_report(tmp_path / "runs", tmp_path / "out2", x="frozen_at_start", y="schedule",
                        where={"frozen_at_start": "[entropy]"})
    assert [row["run"] for row in both.rows] == ["version_3", "version_1"]
    with pytest.raises(ValueError, match="no run has optimizer = sgd; its values are adam, cautious_adam$"):
        sweep_report(tmp_path / "runs", tmp_path / "x", x="frozen_at_start", y="schedule",
                     where={"frozen_at_start": "[]", "optimizer": "sgd"})
    with pytest.raises(ValueError, match="no wandb runs found"):
        sweep_report(tmp_path / "runs", tmp_path / "x", x="frozen_at_start", y="schedule", kind="wandb")


# --- lit-hpcm eval ----------------------------------------------------------------------------


def test_eval_command_on_two_tiny_checkpoints(tmp_path, capsys, single_thread):
    """Real bitstreams of two checkpoints -> one CompressAI-layout curve (sorted by rate) + per-image rows."""
    import torch
    from PIL import Image

    from lit_hpcm.cli import main
    from lit_hpcm.data import bundled_photos
    from lit_hpcm.models import HPCM
    from lit_hpcm.models.weights import save_weights

    checkpoints = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        checkpoints.append(str(save_weights(HPCM("tiny").state_dict(), "tiny", tmp_path / f"tiny_{seed}.pt")))
    photo = Image.open(bundled_photos(("chelsea.png",))[0]).convert("RGB")
    (tmp_path / "images" / "sub").mkdir(parents=True)
    photo.crop((0, 0, 48, 175)).save(tmp_path / "images" / "small.png")  # one pixel short of MS-SSIM's minimum
    photo.crop((150, 60, 326, 236)).save(tmp_path / "images" / "sub" / "large.png")  # 176 × 176: MS-SSIM's minimum
    out = tmp_path / "results.json"
    argv = ["eval", "--ckpt", *checkpoints, "--data", str(tmp_path / "images"), "--name", "tiny", "-o", str(out)]
    assert main(argv) == 0

    document = json.loads(out.read_text())
    assert {"name", "description", "meta", "results", "per_image"} <= set(document) and document["name"] == "tiny"
    results = document["results"]
    assert set(results) == {"bpp", "bpp-file", "psnr-rgb", "ms-ssim-rgb", "ms-ssim-db-rgb", "encoding_time",
                            "decoding_time"}
    assert all(len(values) == 2 for values in results.values())
    assert results["bpp"] == sorted(results["bpp"]) and sorted(document["meta"]["checkpoints"]) == checkpoints
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == results

    rows = document["per_image"]
    assert sorted((row["checkpoint"], row["name"]) for row in rows) == [
        (c, name) for c in checkpoints for name in ("small.png", "sub/large.png")
    ]
    for row in rows:
        assert (row["width"], row["height"]) == ((48, 175) if row["name"] == "small.png" else (176, 176))
        assert row["bytes"] > 0 and row["bpp-file"] == pytest.approx(8 * row["bytes"] / (row["width"] * row["height"]))
        # bpp: the entropy-coded strings only (the literature's count); the file adds its header, lengths and CRC
        assert 0 < row["bpp"] < row["bpp-file"]
        assert 3 < row["psnr-rgb"] < 60 and row["encoding_time"] > 0 and row["decoding_time"] > 0
        if row["name"] == "small.png":
            assert row["ms-ssim-rgb"] is None
        else:
            assert 0 < row["ms-ssim-rgb"] < 1
            assert row["ms-ssim-db-rgb"] == pytest.approx(-10 * math.log10(1 - row["ms-ssim-rgb"]))
    for point, checkpoint in enumerate(document["meta"]["checkpoints"]):
        mine = [row for row in rows if row["checkpoint"] == checkpoint]
        for key in ("bpp", "psnr-rgb", "encoding_time"):
            assert results[key][point] == pytest.approx(sum(row[key] for row in mine) / 2)
        assert results["ms-ssim-rgb"][point] == pytest.approx(mine[0]["ms-ssim-rgb"] or mine[1]["ms-ssim-rgb"])

    curve = read_curve(out, "ms-ssim-db")  # what rd-plot reads
    assert curve.name == "tiny" and curve.bpp == tuple(results["bpp"])


def test_eval_checks_every_checkpoint_first_and_writes_only_when_asked(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from lit_hpcm.cli import main
    from lit_hpcm.data import bundled_photos
    from lit_hpcm.models import HPCM
    from lit_hpcm.models.weights import save_weights

    good = str(save_weights(HPCM("tiny").state_dict(), "tiny", tmp_path / "good.pt"))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    (tmp_path / "images").mkdir()
    Image.open(bundled_photos(("chelsea.png",))[0]).convert("RGB").crop((0, 0, 64, 64)).save(tmp_path / "images" / "a.png")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "r.json"
    assert main(["eval", "--ckpt", good, str(bad), "--data", "images", "-o", str(out)]) == 2
    assert "bad.pt" in capsys.readouterr().err and not out.exists()  # refused before measuring the good one
    assert main(["eval", "--ckpt", good, "--data", "images"]) == 0
    assert not (tmp_path / "results.json").exists()  # printed, not written, unless -o is given
    assert main(["eval", "--ckpt", good, "--data", "images", "-o", str(out)]) == 0 and out.is_file()
    assert main(["eval", "--ckpt", good, "--data", "images", "-o", str(out)]) == 2  # exists: needs --force


def test_eval_skips_and_counts_unreadable_images_before_measuring(tmp_path, monkeypatch, capsys, single_thread):
    """A corrupt and a truncated file sorted after a good image: skipped and counted (one line), not an abort
    after the good one was measured; a folder with no readable image is one error line."""
    from PIL import Image

    from lit_hpcm.cli import main
    from lit_hpcm.data import bundled_photos
    from lit_hpcm.models import HPCM
    from lit_hpcm.models.weights import save_weights

    ckpt = str(save_weights(HPCM("tiny").state_dict(), "tiny", tmp_path / "tiny.pt"))
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    photo = Image.open(bundled_photos(("coffee.png",))[0]).convert("RGB")
    photo.crop((0, 0, 64, 48)).save(images / "a.png")
    (images / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    photo.crop((0, 0, 64, 48)).save(images / "sub" / "c.png")
    (images / "sub" / "c.png").write_bytes((images / "sub" / "c.png").read_bytes()[:200])  # truncated
    photo.crop((64, 0, 128, 48)).save(images / "d.png")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "r.json"
    assert main(["eval", "--ckpt", ckpt, "--data", "images", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "lit-hpcm eval: --data: skipped 2 unreadable of 4 image files: images/b.png, images/sub/c.png" in err
    document = json.loads(out.read_text())
    assert [row["name"] for row in document["per_image"]] == ["a.png", "d.png"]
    assert document["meta"]["skipped"] == ["b.png", "sub/c.png"] and "(2 images)" in document["description"]

    for name in ("a.png", "d.png"):
        (images / name).write_bytes(b"GIF89a")
    assert main(["eval", "--ckpt", ckpt, "--data", "images"]) == 2
    assert capsys.readouterr().err == "lit-hpcm eval: error: --data: no readable images among 4 files\n"


def test_eval_progress_names_the_run_not_only_the_file():
    from pathlib import Path

    from lit_hpcm.cli.codec_commands import run_label

    assert run_label(Path("runs/hpcm_base_balanced/checkpoints/epoch=3.ckpt")) == "hpcm_base_balanced/epoch=3.ckpt"
    assert run_label(Path("weights/hpcm_base_0.0067.pt")) == "weights/hpcm_base_0.0067.pt"
    assert run_label(Path("last.ckpt")) == "last.ckpt"


# --- MS-SSIM precision ------------------------------------------------------------------------


def _photo_and_jpeg(name: str, side: int = 176):
    """A centre crop [3, side, side] (uint8) of a scikit-image photo and its JPEG (quality 15) reconstruction."""
    import io

    import numpy as np
    import torch
    from PIL import Image
    from skimage import data as samples

    photo = Image.fromarray(getattr(samples, name)()).convert("RGB")
    left, top = (photo.width - side) // 2, (photo.height - side) // 2
    crop = photo.crop((left, top, left + side, top + side))
    buffer = io.BytesIO()
    crop.save(buffer, format="JPEG", quality=15)
    as_tensor = lambda image: torch.from_numpy(np.array(image)).permute(2, 0, 1)  # noqa: E731
    return as_tensor(crop), as_tensor(Image.open(buffer).convert("RGB"))


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee"])
def test_ms_ssim_in_float32_matches_float64_on_photos(name, single_thread):
    """The float32 MS-SSIM `test` and `eval` report is within 1e-4 of float64 on real, JPEG-distorted photos."""
    import torch

    from lit_hpcm.evaluation.measure import ms_ssim_8bit

    original, recon = _photo_and_jpeg(name)
    fast, exact = ms_ssim_8bit(original, recon), ms_ssim_8bit(original, recon, torch.float64)
    assert 0.5 < exact < 0.999 and abs(fast - exact) < 1e-4
    assert abs(-10 * math.log10(1 - fast) + 10 * math.log10(1 - exact)) < 1e-3  # the dB the curves plot


def test_measure_image_computes_ms_ssim_in_float32(monkeypatch, single_thread):
    """float64 MS-SSIM took 3.3 s of 3.5 s per 640×427 image on the CPU (issue 25): measurement uses float32."""
    import torch

    from lit_hpcm.evaluation import measure
    from lit_hpcm.models import HPCM

    dtypes = []
    real = measure.ms_ssim
    monkeypatch.setattr(measure, "ms_ssim", lambda a, b, **kw: dtypes.append((a.dtype, b.dtype)) or real(a, b, **kw))
    torch.manual_seed(0)
    model = HPCM("tiny").eval()
    model.update()
    original, _ = _photo_and_jpeg("chelsea")
    row = measure.measure_image(model, original.float() / 255, "chelsea")
    assert dtypes == [(torch.float32, torch.float32)] and 0 < row["ms-ssim-rgb"] < 1
