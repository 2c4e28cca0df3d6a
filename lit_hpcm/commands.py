"""Codec and model subcommands: compress, decompress, eval, import-official."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from tqdm import tqdm

from . import codec
from .checkpoint_io import write_atomically
from .checkpoints import import_official, load_model, read_checkpoint, save_weights
from .cli_support import reporting_errors
from .data import EvalImages
from .evaluation.measure import summarize, measure_image
from .evaluation.results import write_results
from .images import find_images, open_image, save_image


def _device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but no CUDA device is available")
    return torch.device(name)


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=["base", "large", "tiny"], help="needed only for official weight files")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")


@reporting_errors("compress")
def run_compress(args: argparse.Namespace) -> int:
    model = load_model(args.ckpt, args.preset, _device(args.device))
    data = codec.encode(model, open_image(args.image))
    write_atomically(args.output, lambda handle: handle.write(data))
    print(f"{args.image} -> {args.output}: {len(data)} bytes")
    return 0


@reporting_errors("decompress")
def run_decompress(args: argparse.Namespace) -> int:
    if not args.file.is_file():
        raise ValueError(f"{args.file}: no such file")
    data = args.file.read_bytes()
    header, _, _ = codec.read_header(data)
    model = load_model(args.ckpt, args.preset or header.preset, _device(args.device))
    save_image(codec.decode(data, model), args.output)
    print(f"{args.file} -> {args.output}: {header.width}×{header.height}")
    return 0


@reporting_errors("eval")
def run_eval(args: argparse.Namespace) -> int:
    images = EvalImages(find_images(args.data), args.data)  # the images and names `lit-hpcm test` uses
    device = _device(args.device)
    points, rows = [], []
    for ckpt in args.ckpt:
        model = load_model(ckpt, args.preset, device)
        model_rows = []
        for item in tqdm(images, desc=Path(ckpt).name, unit="img"):
            model_rows.append(measure_image(model, item["image"].to(device), item["name"]) | {"checkpoint": str(ckpt)})
        points.append(summarize(model_rows, str(ckpt))["results"])
        rows += model_rows
    order = sorted(range(len(points)), key=lambda i: points[i]["bpp"][0])
    keys = [k for k in points[0] if all(k in p for p in points)]
    document = {
        "name": args.name,
        "description": f"lit-hpcm eval on {args.data} ({len(images)} images), real bitstreams, 8-bit PSNR",
        "meta": {"checkpoints": [str(args.ckpt[i]) for i in order], "device": str(device)},
        "results": {k: [points[i][k][0] for i in order] for k in keys},
        "per_image": rows,
    }
    write_results(args.output, document)
    print(json.dumps(document["results"]))
    return 0


@reporting_errors("import-official")
def run_import_official(args: argparse.Namespace) -> int:
    state = import_official(read_checkpoint(args.source), args.preset)
    save_weights(state, args.preset, args.destination)
    print(f"{args.source} -> {args.destination} (preset {args.preset}, {len(state)} tensors)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add compress, decompress, eval and import-official to the main CLI."""
    p = subparsers.add_parser("compress", help="image -> .hpcm file")
    p.add_argument("image", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--ckpt", type=Path, required=True, help="lit-hpcm checkpoint, weights file or official file")
    _add_model_args(p)
    p.set_defaults(func=run_compress)

    p = subparsers.add_parser("decompress", help=".hpcm file -> image")
    p.add_argument("file", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--ckpt", type=Path, required=True)
    _add_model_args(p)
    p.set_defaults(func=run_decompress)

    p = subparsers.add_parser("eval", help="real-bitstream R-D evaluation of checkpoints on a folder")
    p.add_argument("--ckpt", type=Path, nargs="+", required=True, help="one checkpoint per R-D point (e.g. per λ)")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--name", default="lit-hpcm", help="curve name in the results file")
    p.add_argument("-o", "--output", type=Path, default=Path("results.json"))
    _add_model_args(p)
    p.set_defaults(func=run_eval)

    p = subparsers.add_parser("import-official", help="official HPCM .pth.tar -> lit-hpcm weights file")
    p.add_argument("source", type=Path)
    p.add_argument("destination", type=Path)
    p.add_argument("--preset", choices=["base", "large", "tiny"], default="base")
    p.set_defaults(func=run_import_official)
