"""benchmarks/rd_study.py: the CI-sized smoke run (two runs at a time, resumable output) and its analysis on
curves whose answer is known."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "rd_study.py"


@pytest.fixture(scope="module")
def rd_study():
    sys.path.insert(0, str(SCRIPT.parent))  # its `_common` helper
    spec = importlib.util.spec_from_file_location("rd_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    sys.path.remove(str(SCRIPT.parent))


def _run(method: str, lmbda: float, seed: int, bpp: float, psnr: float) -> dict:
    row = {"bpp": bpp, "psnr-rgb": psnr}
    return {"method": method, "lmbda": lmbda, "seed": seed, "test": row, "per_image": [row]}


def test_the_analysis_finds_a_known_bd_rate_and_says_why_it_cannot(rd_study):
    """`cautious` needs 10 % fewer bits for every quality (BD-rate -10 %); `famo_rd` is one point four times."""
    runs = []
    for seed in (0, 1):
        for i, lmbda in enumerate((1e-3, 2e-3, 4e-3, 8e-3)):
            bpp, psnr = 0.05 * 2**i, 20.0 + 2 * i
            runs += [_run("adam", lmbda, seed, bpp, psnr), _run("cautious", lmbda, seed, 0.9 * bpp, psnr),
                     _run("famo_rd", lmbda, seed, 0.0007, 14.3)]
    table = rd_study.analyse(runs, ["adam", "cautious", "famo_rd"], [0, 1])
    assert table["cautious"]["bd_rate_percent"]["per_seed"] == pytest.approx([-10.0, -10.0], abs=1e-6)
    assert table["cautious"]["rd_cost_vs_adam_percent"]["pairs"] == 8
    assert table["famo_rd"]["bd_rate_percent"]["mean"] is None
    assert any("not strictly monotone" in note for note in table["famo_rd"]["notes"])
    assert [o["rate"] for o in table["famo_rd"]["overlap"]] == [0.0, 0.0]


def test_psnr_at_equal_rate_needs_no_curve_of_the_method(rd_study):
    """Points clustered at one rate (no monotone curve, no BD-rate) still compare with Adam's curve at their rate:
    0.5 dB above it where they sit on Adam's points shifted up; a run outside Adam's rate range is left out."""
    runs = [_run("adam", lmbda, 0, 0.05 * 2**i, 20.0 + 2 * i) for i, lmbda in enumerate((1e-3, 2e-3, 4e-3, 8e-3))]
    runs += [_run("famo_rd", 0.01, 0, 0.1, 22.5), _run("famo_rd", 0.02, 0, 0.2, 24.5), _run("famo_rd", 0.05, 0, 0.9, 30)]
    gain = rd_study.psnr_gain_at_equal_rate(runs, "famo_rd")
    assert gain["runs"] == 2 and gain["per_seed"] == pytest.approx([0.5])  # the seed's mean over its runs


def test_rate_at_equal_psnr_is_bd_rates_question_asked_of_single_points(rd_study):
    """Adam's log-rate is linear in PSNR here (rate doubles every 2 dB), which the interpolation reproduces: a run
    at 22 dB with 0.09 bpp needs 10 % fewer bits than Adam's 0.1; one at 21 dB with 0.8 × Adam's rate there,
    20 % fewer; the seed's value is their mean, −15 %. A seed whose Adam curve is not monotone gives none."""
    runs = [_run("adam", lmbda, 0, 0.05 * 2**i, 20.0 + 2 * i) for i, lmbda in enumerate((1e-3, 2e-3, 4e-3, 8e-3))]
    runs += [_run("famo_rd", 0.01, 0, 0.09, 22.0), _run("famo_rd", 0.02, 0, 0.8 * 0.05 * 2**0.5, 21.0),
             _run("famo_rd", 0.05, 0, 0.5, 40.0)]
    saving = rd_study.rate_at_equal_psnr(runs, "famo_rd")
    assert saving["runs"] == 2 and saving["per_seed"] == pytest.approx([-15.0])
    bumpy = [_run("adam", lmbda, 1, 0.05 * 2**i, (20.0, 23.0, 22.0, 26.0)[i]) for i, lmbda in enumerate((1e-3, 2e-3, 4e-3, 8e-3))]
    assert rd_study.rate_at_equal_psnr(bumpy + [_run("famo_rd", 0.01, 1, 0.09, 22.5)], "famo_rd") is None


def test_quick_study_two_jobs_then_resume(tmp_path):
    output = tmp_path / "quick.json"
    command = [sys.executable, str(SCRIPT), "--quick", "--methods", "adam", "famo_rd", "--jobs", "2",
               "--lambdas_adam", "0.001", "0.013", "--lambdas_famo_rd", "0.013", "-o", str(output),
               "--weights_dir", str(tmp_path / "weights")]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    payload = json.loads(output.read_text())
    assert sorted((r["method"], r["lmbda"]) for r in payload["runs"]) == [("adam", 0.001), ("adam", 0.013),
                                                                          ("famo_rd", 0.013)]
    assert all(r["test"]["bpp"] > 0 and r["per_image"] for r in payload["runs"])
    assert output.with_suffix(".md").is_file() and "famo_rd" in payload["analysis"]
    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "seed=" not in again.stdout  # nothing trained twice
    assert len(json.loads(output.read_text())["runs"]) == 3


def test_a_run_counts_as_collapsed_when_y_sheds_its_bits_or_the_codec_sinks_to_the_coder_floor(rd_study):
    """Both modes the studies met: y under half of the test bits (z carries them), and 0.0007 bpp at 14 dB with y
    still 94 % of those bits; a healthy run at Adam's lowest rate is neither."""
    healthy, shed, floor = (_run("famo_rd", lmbda, 0, bpp, psnr) for lmbda, bpp, psnr in
                            ((0.005, 0.045, 23.6), (0.013, 0.03, 20.0), (0.05, 0.0007, 14.4)))
    healthy["test_y_share"], shed["test_y_share"], floor["test_y_share"] = 0.99, 0.2, 0.94
    found = rd_study.collapses([healthy, shed, floor], "famo_rd")
    assert found["collapsed"] == 2 and found["runs"] == 3
    assert [w["lmbda"] for w in found["which"]] == [0.013, 0.05]


def test_the_plot_shows_every_seed_and_zooms_on_the_runs_that_trained(rd_study, tmp_path):
    """One line per method and seed, a colour per method; the right panel leaves the collapsed run out of its axes."""
    runs = [_run("adam", lmbda, seed, 0.05 * 2**i, 20.0 + 2 * i + seed)
            for seed in (0, 1) for i, lmbda in enumerate((1e-3, 2e-3, 4e-3))]
    runs += [_run("famo_rd", 0.01, 0, 0.08, 23.0), _run("famo_rd", 0.01, 1, 0.0007, 14.4)]
    fig = rd_study.plot_seed_curves(runs, ["adam", "famo_rd"], str(tmp_path / "rd.png"), "test")
    assert (tmp_path / "rd.png").stat().st_size > 0
    every, trained = fig.axes
    assert [line.get_label() for line in every.lines] == ["adam seed 0", "adam seed 1", "famo_rd seed 0", "famo_rd seed 1"]
    assert every.lines[0].get_color() == every.lines[1].get_color() != every.lines[2].get_color()
    assert trained.get_xlim()[0] > 0.04 and trained.get_ylim()[0] > 19.0  # 0.0007 bpp / 14.4 dB is off these axes
