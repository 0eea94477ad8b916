"""Benchmark 12: which influence estimator predicts retraining best? LDS of candidate estimators, side by side.

Uses the ground truth of ``bench/lds.py`` (the per-subset validation losses it keeps in
``bench/results/lds-truth-<rows>-<seed>-<model class>.npz``) and computes, from ONE run on all rows, the
influence matrix [N, V] of each candidate (positive = the training row lowers the validation row's loss):

- ``tod head``: tod-clean's exact head-scope turn-over-dropout influence (``score --matrix``);
- ``tod head xR``: the mean of R such matrices from R runs with different mask seeds;
- ``grad classifier``: the dot product of the classifier-layer gradients (TracIn at the last checkpoint);
- ``grad all``: the dot product of per-row gradients of every linear layer (encoder and head), each
  layer's gradient projected to k x k by two fixed random matrices (g = P_out^T (sum_t d_t x_t^T) P_in,
  the factored projection of LoGra, Choe et al. 2024), so memory stays [N, layers * k^2];
- ``gauss-newton``: tod-clean's ``score --influence gauss-newton`` (the estimator that ``if all`` prototyped);
- ``ekfac``: tod-clean's ``score --influence ekfac`` (EK-FAC influence functions through kronfluence);
- ``if all``: the same projected gradients preconditioned per layer by the inverse of their damped
  second moment over the training rows (a Gauss-Newton influence function in the projected space, as in
  TRAK, Park et al. 2023, with one model);
- ``... xR``: the same on R ordinary fine-tunes (seeds), averaged (an ensemble, as TRAK and Deng et al. 2024);
- ``random``.

    python bench/estimators.py --reuse                 # after: python bench/lds.py --truth-only --subsets 50
    python bench/estimators.py --reuse --methods "grad all" "if all" --base none
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    RESULTS,
    machine,
    timed,
    train_config,
    train_run,
)
from lds import add_setting_arguments, lds, setting_splits, tod_clean_matrix  # noqa: E402


def projected_gradients(
    run_path: Path, path: Path, *, k: int, modules: str, seed: int = 0, batch_size: int = 32
) -> np.ndarray:
    """Per-row loss gradients of a run's full network, each linear layer's projected to ``k x k``:
    float32 ``[rows, layers * k * k]`` (layers in module order). ``modules``: ``classifier`` (the last
    layer, unprojected when small), ``head`` (head layers), ``topK`` (those of the top K transformer
    blocks and the head), ``all`` (every nn.Linear)."""
    import torch

    from tod_clean.config import DataColumns
    from tod_clean.encoding import encode_texts, sorted_batches
    from tod_clean.instances import instances_from_table
    from tod_clean.io.inputs import read_table
    from tod_clean.run.rundir import RunDir

    run = RunDir(run_path)
    info = run.read_complete_info()
    model = run.load_model(info)
    model.eval()
    tokenizer = run.load_tokenizer()
    instances = instances_from_table(read_table(str(path)), DataColumns(id_col="id"), info.labels)
    encoded = encode_texts(tokenizer, instances.texts, None, info.train.max_length)

    if modules == "classifier":
        linears = [model.classifier]
    elif modules == "head":
        linears = [model.head_dense, model.classifier]
    elif modules.startswith("top"):
        # the top K transformer blocks' linear layers and the head's, as score's estimators choose them
        from tod_clean.influence.gradients import linear_layers

        linears = linear_layers(model, int(modules[3:]) / len(model.layers))
    else:
        # every linear layer on the path to the logits (a BERT pooler is computed but unused)
        linears = [
            m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "pooler" not in name
        ]
    generator = torch.Generator().manual_seed(seed)

    def projection(size: int) -> torch.Tensor | None:
        if size <= k:
            return None  # small enough to keep whole
        return torch.randn(size, k, generator=generator) / k**0.5

    projections = [(projection(m.in_features), projection(m.out_features)) for m in linears]
    widths = [
        (p_in.shape[1] if p_in is not None else m.in_features)
        * (p_out.shape[1] if p_out is not None else m.out_features)
        for m, (p_in, p_out) in zip(linears, projections, strict=True)
    ]
    inputs: dict[int, torch.Tensor] = {}
    outputs: dict[int, torch.Tensor] = {}

    def hook(index: int) -> Callable[..., None]:
        def capture(module: torch.nn.Module, args: Any, output: torch.Tensor) -> None:
            inputs[index] = args[0].detach()
            output.retain_grad()
            outputs[index] = output

        return capture

    handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(linears)]
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    out = np.zeros((len(encoded), sum(widths)), dtype=np.float32)
    try:
        for indices in sorted_batches(encoded.lengths, batch_size):
            batch = encoded.batch(indices)
            model.zero_grad(set_to_none=True)
            logits = model(batch)
            labels = torch.as_tensor(instances.labels[indices])
            torch.nn.functional.cross_entropy(logits, labels, reduction="sum").backward()
            columns = []
            for i, (p_in, p_out) in enumerate(projections):
                x, d = inputs[i].float(), outputs[i].grad.float()
                if x.dim() == 2:
                    x, d = x[:, None], d[:, None]
                if p_in is not None:
                    x = x @ p_in
                if p_out is not None:
                    d = d @ p_out
                columns.append(torch.einsum("bto,bti->boi", d, x).reshape(len(indices), -1))
            out[indices] = torch.cat(columns, 1).numpy()
    finally:
        for handle in handles:
            handle.remove()
    out_widths = np.cumsum([0, *widths])
    return out, out_widths


def preconditioned(train: np.ndarray, widths: np.ndarray, damping: float) -> np.ndarray:
    """``train`` with each layer's block multiplied by the inverse of (its second moment over the training
    rows + damping x its mean eigenvalue)."""
    result = np.empty_like(train, dtype=np.float64)
    for start, stop in zip(widths[:-1], widths[1:], strict=True):
        block = train[:, start:stop].astype(np.float64)
        moment = block.T @ block / len(block)
        lam = damping * np.trace(moment) / len(moment)
        result[:, start:stop] = np.linalg.solve(moment + lam * np.eye(len(moment)), block.T).T
    return result


def gradient_matrix(
    run_path: Path, train_path: Path, val_path: Path, *, modules: str, k: int, precondition: float | None
) -> np.ndarray:
    train, widths = projected_gradients(run_path, train_path, k=k, modules=modules)
    val, _ = projected_gradients(run_path, val_path, k=k, modules=modules)
    if precondition is not None:
        return preconditioned(train, widths, precondition) @ val.T.astype(np.float64)
    return train.astype(np.float64) @ val.T.astype(np.float64)


def paired_difference(
    a: np.ndarray,
    b: np.ndarray,
    subsets: np.ndarray,
    losses: np.ndarray,
    *,
    samples: int = 300,
    seed: int = 0,
) -> tuple[float, float, float]:
    """LDS(a) - LDS(b) and its 95% paired bootstrap interval over the retrained subsets (the same
    resampled subsets for both: ``tod_clean.lds.bootstrap_lds``, as ``tod-clean check`` computes it)."""
    from tod_clean.lds import bootstrap_lds, interval

    values = bootstrap_lds({"a": a, "b": b}, subsets, losses, samples=samples, seed=seed)
    low, high = interval(values["a"] - values["b"])
    return lds(a, subsets, losses)[0] - lds(b, subsets, losses)[0], low, high


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_setting_arguments(parser)
    parser.add_argument("--truth", default="none")
    parser.add_argument("--k", type=int, default=16, help="projection size per side of each linear layer")
    parser.add_argument("--damping", type=float, default=0.1)
    parser.add_argument("--ensemble", type=int, default=4, help="R of the xR methods")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["random", "tod head", "grad classifier", "grad all", "if all"],
    )
    parser.add_argument("--base", default="none", help="scope of the one run the gradient methods use")
    parser.add_argument("--reference", default="grad classifier", help="method the paired differences use")
    parser.add_argument("--reuse", action="store_true")
    parser.add_argument("--name", default="estimators")
    args = parser.parse_args()

    _, _, folder, train_path, val_path = setting_splits(args)
    recipe = {"epochs": args.epochs, "device": "auto", "max_length": args.max_length}
    truth = np.load(RESULTS / f"lds-truth-{args.rows}-{args.seed}-{args.truth}.npz")
    subsets, losses = truth["subsets"], truth["losses"]
    print(f"ground truth: {len(subsets)} retrained subsets", flush=True)

    def run_of(scope: str, seed: int, mask_seed: int | None = None) -> Path:
        suffix = "" if mask_seed is None else f"-mask{mask_seed}"
        run_path = folder / f"run-full-{scope}-seed{seed}{suffix}"
        options: dict[str, Any] = {"scope": scope, "seed": seed, **recipe}
        if mask_seed is not None:
            options["mask_seed"] = mask_seed
        train_run(train_path, run_path, train_config(**options), reuse=args.reuse)
        return run_path

    def method_matrix(method: str, run_path: Path) -> np.ndarray:
        if method.startswith("tod"):
            return tod_clean_matrix(run_path, train_path, val_path, None)
        if method in (
            "gauss-newton",
            "gradient",
            "ekfac",
        ):  # tod-clean's own estimators (score --influence ...)
            return tod_clean_matrix(run_path, train_path, val_path, method)
        modules = method.split()[1]
        precondition = args.damping if method.startswith("if") else None
        return gradient_matrix(
            run_path, train_path, val_path, modules=modules, k=args.k, precondition=precondition
        )

    matrices: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    for method in args.methods:
        # "NAME@SCOPE": the method on a run of that scope instead of --base (to compare across runs)
        name, _, base_scope = method.partition("@")
        base_scope = base_scope or args.base
        cache = folder / f"matrix-{name.replace(' ', '_')}-{base_scope}-k{args.k}-d{args.damping}.npy"
        timing = cache.with_suffix(".seconds")
        computed = False
        with timed() as timer:
            if name == "random":
                matrix = np.random.default_rng([args.seed, 17]).standard_normal((args.rows, args.val_rows))
            elif args.reuse and cache.exists():
                matrix = np.load(cache)
            else:
                timing.unlink(missing_ok=True)
                base, _, repeat = name.partition(" x")
                runs = int(repeat) if repeat else 1
                scope = "head" if base.startswith("tod") else base_scope
                parts = []
                for r in range(runs):
                    if base.startswith("tod"):
                        run_path = run_of(scope, args.seed, mask_seed=None if r == 0 else 1000 + r)
                    else:
                        run_path = run_of(scope, args.seed + 100 * r)
                    parts.append(method_matrix(base, run_path))
                    print(f"{method}: part {r + 1}/{runs}", flush=True)
                matrix = np.mean(parts, axis=0)
                np.save(cache, matrix)
                computed = True
        if computed:
            timing.write_text(f"{timer.wall}\n")  # the computing run's wall time (with training new runs)
        # a matrix computed before timings were kept: NaN (its time is in that run's log)
        timer.wall = (
            float(timing.read_text()) if timing.exists() else (0.0 if name == "random" else float("nan"))
        )
        matrices[method] = matrix
        seconds[method] = timer.wall
        value, error = lds(matrix, subsets, losses)
        print(f"{method}: LDS {value:.3f} ± {error:.3f} ({timer.wall:.0f} s)", flush=True)

    from lds import lds_interval

    reference = matrices.get(args.reference)
    table = {}
    for method, matrix in matrices.items():
        value, error = lds(matrix, subsets, losses)
        low, high = lds_interval(matrix, subsets, losses)
        row: dict[str, Any] = {
            "lds": value,
            "se": error,
            "low": low,
            "high": high,
            "seconds": seconds[method],
        }
        if reference is not None and method != args.reference:
            row["difference"] = paired_difference(matrix, reference, subsets, losses)
        table[method] = row
    result = {
        "config": {k: str(v) for k, v in vars(args).items()},
        "machine": machine(),
        "subsets": len(subsets),
        "lds": table,
    }
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        f"{args.rows} rt_polarity rows ({args.noise:.0%} flipped), {args.val_rows} validation rows, "
        f"M = {len(subsets)} retrained `{args.truth}` models on random halves; gradient methods on one "
        f"`{args.base}` run; k = {args.k}, damping {args.damping}.",
        "",
        f"| method | LDS ± s.e. [95% bootstrap] | difference to {args.reference} [95% paired bootstrap] | seconds |",
        "|---|---|---|---|",
    ]
    for method, row in table.items():
        difference = row.get("difference")
        shown = f"{difference[0]:+.3f} [{difference[1]:+.2f}, {difference[2]:+.2f}]" if difference else ""
        lines.append(
            f"| {method} | {row['lds']:.3f} ± {row['se']:.3f} [{row['low']:.2f}, {row['high']:.2f}] | {shown} | {row['seconds']:.0f} |"
        )
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
