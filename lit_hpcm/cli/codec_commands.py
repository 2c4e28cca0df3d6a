"""Codec and model subcommands: compress, decompress, eval, export, import-official."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .reporting import reporting_errors

if TYPE_CHECKING:
    import torch

    from ..data import ReadableImages

# The runners import torch and the codec when they run, so that building the parser (`lit-hpcm --help`) does not.


def _device(name: str) -> torch.device:
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but no CUDA device is available")
    return torch.device(name)


def _checked_output(output: Path, inputs: list[Path], force: bool) -> Path:
    """`output` if writing it loses nothing: never one of the `inputs` (not even with --force), and an existing
    file only with --force. Raises ValueError with the reason otherwise."""
    target = output.resolve()
    for source in inputs:
        if source.exists() and target == source.resolve():
            raise ValueError(f"{output} is also an input: choose another output file")
    if target.is_dir():
        raise ValueError(f"{output} is a folder, not a file")
    if target.exists() and not force:
        raise ValueError(f"{output} exists; pass --force to replace it")
    return output


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=["base", "large", "tiny"], help="needed only for official weight files")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")


@reporting_errors("compress")
def run_compress(args: argparse.Namespace) -> int:
    from .. import codec
    from ..data.images import open_image
    from ..files import write_atomically
    from ..models import load_model

    _checked_output(args.output, [args.image, args.ckpt], args.force)
    model = load_model(args.ckpt, args.preset, _device(args.device))
    data = codec.encode(model, open_image(args.image))
    write_atomically(args.output, lambda handle: handle.write(data))
    print(f"{args.image} -> {args.output}: {len(data)} bytes")
    return 0


@reporting_errors("decompress")
def run_decompress(args: argparse.Namespace) -> int:
    from .. import codec
    from ..data.images import save_image
    from ..models import load_model

    if not args.file.is_file():
        raise ValueError(f"{args.file}: no such file")
    _checked_output(args.output, [args.file, args.ckpt], args.force)
    data = args.file.read_bytes()
    header, _, _ = codec.read_header(data)
    max_pixels = args.max_pixels or codec.DEFAULT_MAX_PIXELS
    codec.check_size(header, max_pixels)  # before loading the model or allocating anything
    model = load_model(args.ckpt, args.preset or header.preset, _device(args.device))
    save_image(codec.decode(data, model, max_pixels), args.output)
    print(f"{args.file} -> {args.output}: {header.width}×{header.height}")
    return 0


def run_label(ckpt: Path) -> str:
    """How a progress bar names a checkpoint: its run folder and file name (`RUN/checkpoints/epoch=3.ckpt` ->
    `RUN/epoch=3.ckpt`; a file in another folder keeps that folder's name)."""
    folder = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    return f"{folder.name}/{ckpt.name}" if folder.name else ckpt.name


@reporting_errors("eval")
def run_eval(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..data import readable_eval_images
    from ..data.images import find_images
    from ..evaluation.measure import measure_images, summarize
    from ..evaluation.results import write_results
    from ..models import load_model

    if args.output is not None:
        _checked_output(args.output, [*args.ckpt, args.data], args.force)
    # the images and names `lit-hpcm test` uses, every file decoded first: an unreadable one is skipped and counted
    found = readable_eval_images("--data", find_images(args.data), args.data)
    if found.message:
        print(f"lit-hpcm eval: {found.message}", file=sys.stderr)
    images = found.images
    device = _device(args.device)
    for ckpt in args.ckpt:  # every file checked before any is measured: a bad last one costs no hours
        load_model(ckpt, args.preset, "cpu")
    points, rows, measured = [], [], []
    for ckpt in args.ckpt:
        model = load_model(ckpt, args.preset, device)
        shown = tqdm(images, desc=run_label(Path(ckpt)), unit="img")
        model_rows = [row | {"checkpoint": str(ckpt)}
                      for row in measure_images(model, ((item["image"].to(device), item["name"]) for item in shown))]
        points.append(summarize(model_rows, str(ckpt))["results"])
        rows += model_rows
        measured.append(ckpt)
        document = _eval_document(args, points, rows, measured, found, device)
        if args.output is not None:  # rewritten after every checkpoint: a later failure keeps these
            write_results(args.output, document)
    if args.output is not None:
        print(f"lit-hpcm eval: results -> {args.output}")
    print(json.dumps(document["results"]))
    return 0


def _eval_document(args: argparse.Namespace, points: list[dict], rows: list[dict], measured: list,
                   found: ReadableImages, device: torch.device) -> dict:
    """The results document of the checkpoints measured so far, points sorted by rate; `meta.skipped` names the
    unreadable files (relative to --data) that no point includes."""
    order = sorted(range(len(points)), key=lambda i: points[i]["bpp"][0])
    keys = [k for k in points[0] if all(k in p for p in points)]
    return {
        "name": args.name,
        "description": f"lit-hpcm eval on {args.data} ({len(found.images)} images), real bitstreams, 8-bit PSNR; "
                       "bpp counts the entropy-coded strings, bpp-file the whole .hpcm file",
        "meta": {"checkpoints": [str(measured[i]) for i in order], "device": str(device),
                 "skipped": [path.relative_to(args.data).as_posix() for path in found.skipped]},
        "results": {k: [points[i][k][0] for i in order] for k in keys},
        "per_image": rows,
    }


@reporting_errors("import-official")
def run_import_official(args: argparse.Namespace) -> int:
    from ..files import read_checkpoint
    from ..models import import_official, save_weights
    from ..models.weights import WEIGHTS_FORMAT

    _checked_output(args.destination, [args.source], args.force)
    source = read_checkpoint(args.source)
    if isinstance(source, dict) and (source.get("format") == WEIGHTS_FORMAT or "pytorch-lightning_version" in source):
        raise ValueError(f"{args.source} is already a lit-hpcm file: use it as it is (--ckpt, model.init_weights, "
                         "or --ckpt_path for a training checkpoint)")
    state = import_official(source, args.preset)
    save_weights(state, args.preset, args.destination)
    print(f"{args.source} -> {args.destination} (preset {args.preset}, {len(state)} tensors)")
    return 0


@reporting_errors("export")
def run_export(args: argparse.Namespace) -> int:
    from ..models.weights import SAFETENSORS_SUFFIX, read_weights, save_weights

    _checked_output(args.output, [args.source], args.force)
    state, preset = read_weights(args.source, args.preset)
    save_weights(state, preset, args.output)
    kind = "safetensors" if args.output.suffix == SAFETENSORS_SUFFIX else "torch weights file"
    print(f"{args.source} -> {args.output} ({kind}, preset {preset}, {len(state)} tensors)")
    return 0


def _register_file_to_file(subparsers: argparse._SubParsersAction, name: str, help: str, source: str,
                           ckpt_help: str | None, run) -> argparse.ArgumentParser:
    """compress and decompress: one input file, `-o OUTPUT`, the weights, `--force`, the model options."""
    p = subparsers.add_parser(name, help=help)
    p.add_argument(source, type=Path)
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--ckpt", type=Path, required=True, help=ckpt_help)
    p.add_argument("--force", action="store_true", help="replace an existing output file (never an input)")
    _add_model_args(p)
    p.set_defaults(func=run)
    return p


def register_compress(subparsers: argparse._SubParsersAction) -> None:
    _register_file_to_file(subparsers, "compress", "image -> .hpcm file", "image",
                           "lit-hpcm checkpoint, weights file or official file", run_compress)


def _positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def register_decompress(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = _register_file_to_file(subparsers, "decompress", ".hpcm file -> image", "file", None, run_decompress)
    p.add_argument("--max_pixels", type=_positive_int, metavar="N",
                   help="refuse a file declaring an image of more pixels, before allocating (default: 2^26 = "
                   "67108864, 8192×8192: lit_hpcm.codec.DEFAULT_MAX_PIXELS); decoding needs memory in proportion")
    return p


def register_eval(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help="real-bitstream R-D evaluation of checkpoints on a folder")
    p.add_argument("--ckpt", type=Path, nargs="+", required=True, help="one checkpoint per R-D point (e.g. per λ)")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--name", default="lit-hpcm", help="curve name in the results file")
    p.add_argument("-o", "--output", type=Path, default=None, help="results JSON (default: print only)")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    _add_model_args(p)
    p.set_defaults(func=run_eval)


def register_export(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help="a checkpoint's HPCM weights -> weights file (.safetensors: loadable without pickle)",
        description="Write the HPCM weights of a Lightning checkpoint, weights file or official file as a lit-hpcm "
        "weights file: safetensors when OUTPUT ends in .safetensors (metadata: format, preset; loads with "
        "safetensors.torch.load_file, no pickle), else a torch file. Every --ckpt option accepts both.",
    )
    p.add_argument("source", type=Path, metavar="CKPT")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUTPUT")
    p.add_argument("--preset", choices=["base", "large", "tiny"], help="needed only for official weight files")
    p.add_argument("--force", action="store_true", help="replace an existing output file (never the input)")
    p.set_defaults(func=run_export)


def register_import_official(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("import-official", help="official HPCM .pth.tar -> lit-hpcm weights file")
    p.add_argument("source", type=Path)
    p.add_argument("destination", type=Path)
    p.add_argument("--preset", choices=["base", "large", "tiny"], default="base")
    p.add_argument("--force", action="store_true", help="replace an existing destination file")
    p.set_defaults(func=run_import_official)
