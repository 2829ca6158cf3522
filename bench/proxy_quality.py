"""Proxy-mask quality and cost per propagation backend, on hippocampus scans with random target slices.

For each case, seed and k, the simulated user draws k random target slices (slices holding foreground) on each
of two planes (array axes 0 and 1, ``dil_core.simulate.random_target_slices``); every backend builds the proxy
mask (Algorithm 2 per plane, planes fused and cut at 0.5 by the backend's rule) and it is scored by Dice against
the full ground truth. Two protocols: ``raw`` (the fused planes as they are: the protocol of DESIGN's measured
anchors) and ``kept`` (drawn slices then set to what was drawn: ``proxy_mask``'s default). Seconds per proxy
are for a full build (no cache) on one ITK thread. A second part measures the incremental update: one slice
per plane per round on a nested random order, with a ``PlaneCache``, against a full rebuild.

    .venv/bin/python bench/proxy_quality.py [--cases 40] [--seeds 3] [--k 1 2 3 4 5 6] [--ants-cases 20]
        [--backends mci sdf nearest ants-affine ants-syn] [--incremental-cases 5] [--out PATH.json] [--smoke]

Writes the JSON (every record, the summary) and a markdown table beside it (same name, ``.md``), and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")  # before the first registration

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("DIL_SHARED_DATA", REPO.parent / "shared" / "data"))

from dil_core.io import read_label, read_scan  # noqa: E402
from dil_core.labor import labor_fraction, target_slice_counts  # noqa: E402
from dil_core.metrics import dice  # noqa: E402
from dil_core.propagation import PROPAGATION_BACKENDS, PlaneCache, proxy_mask  # noqa: E402
from dil_core.simulate import random_target_slices  # noqa: E402

AXES = (0, 1)
ANTS = ("ants-affine", "ants-syn")
#: DESIGN's measured anchors (raw protocol, 40 scans x 3 seeds), for the table.
ANCHORS = {
    2: {"mci": 0.58, "sdf": 0.56, "nearest": 0.49, "ants-affine": 0.45, "ants-syn": 0.50},
    4: {"mci": 0.80, "sdf": 0.83, "nearest": 0.68, "ants-affine": 0.62, "ants-syn": 0.71},
    6: {"mci": 0.87, "sdf": 0.89, "nearest": 0.78, "ants-affine": 0.71, "ants-syn": 0.80},
}


def _load(n_cases: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    folder = SHARED / "hippocampus"
    names = sorted(p.name for p in (folder / "images").glob("hippocampus_*.nii.gz"))[:n_cases]
    if len(names) < n_cases:
        raise SystemExit(f"only {len(names)} hippocampus cases under {folder}, asked for {n_cases}")
    out = []
    for name in names:
        image = read_scan(folder / "images" / name).array
        truth = (read_label(folder / "labels" / name)[0] > 0).astype(np.uint8)
        out.append((name.split(".")[0], image, truth))
    return out


def _warm_up(backends) -> None:
    """Load ITK's and ANTs' libraries before anything is timed (the first MCI call imports ITK: seconds)."""
    image = np.random.default_rng(0).random((6, 10, 10)).astype(np.float32)
    labels = np.zeros(image.shape, np.uint8)
    labels[1, 2:5, 2:5] = labels[4, 3:8, 2:7] = 1
    for backend in backends:
        proxy_mask(image, labels, {0: {1, 4}}, backend=backend)


def _quality(cases, seeds, ks, backends, ants_cases) -> list[dict]:
    records = []
    for ci, (case, image, truth) in enumerate(cases):
        targets = target_slice_counts(truth, axes=AXES)
        for seed in seeds:
            for k in ks:
                drawn = random_target_slices(truth, AXES, k, rng=[seed, ci, k])
                labor = labor_fraction(drawn, targets)
                for backend in backends:
                    if backend in ANTS and ci >= ants_cases:
                        continue
                    cache = PlaneCache()
                    t0 = time.perf_counter()
                    raw = proxy_mask(image, truth, drawn, backend=backend, cache=cache, keep_drawn=False)
                    seconds = time.perf_counter() - t0
                    kept = proxy_mask(image, truth, drawn, backend=backend, cache=cache)  # cached: fusion only
                    records.append(
                        {
                            "case": case,
                            "seed": seed,
                            "k": k,
                            "backend": backend,
                            "labor": labor,
                            "dice_raw": dice(raw.mask, truth),
                            "dice_kept": dice(kept.mask, truth),
                            "seconds": seconds,
                        }
                    )
            done = [r for r in records if r["case"] == case]
            print(f"{case}: " + ", ".join(f"{b} {np.mean([r['dice_raw'] for r in done if r['backend'] == b]):.3f}"
                                         for b in backends if any(r["backend"] == b for r in done)), flush=True)
    return records


def _incremental(cases, backends, rounds: int) -> list[dict]:
    """One slice per plane per round, nested random order; cached update vs full rebuild, per round."""
    records = []
    for ci, (case, image, truth) in enumerate(cases):
        rng = np.random.default_rng([1234, ci])
        order = {}
        for axis in AXES:
            other = tuple(a for a in range(3) if a != axis)
            fg = np.flatnonzero(truth.any(axis=other))
            order[axis] = [int(i) for i in rng.permutation(fg)[:rounds]]
        for backend in backends:
            cache = PlaneCache()
            for r in range(1, rounds + 1):
                drawn = {axis: frozenset(order[axis][:r]) for axis in AXES}
                t0 = time.perf_counter()
                inc = proxy_mask(image, truth, drawn, backend=backend, cache=cache)
                t_inc = time.perf_counter() - t0
                t0 = time.perf_counter()
                full = proxy_mask(image, truth, drawn, backend=backend)
                t_full = time.perf_counter() - t0
                records.append(
                    {
                        "case": case,
                        "backend": backend,
                        "round": r,
                        "recomputed": sum(inc.recomputed.values()),
                        "full_slices": sum(full.recomputed.values()),
                        "seconds_incremental": t_inc,
                        "seconds_full": t_full,
                        "identical": bool(np.array_equal(inc.prob, full.prob)),
                    }
                )
    return records


def _summary(records: list[dict], incremental: list[dict]) -> dict:
    out: dict = {"quality": {}, "incremental": {}}
    for r in records:
        out["quality"].setdefault(r["backend"], {}).setdefault(str(r["k"]), []).append(r)
    for backend, by_k in out["quality"].items():
        for k, rs in by_k.items():
            raw = [r["dice_raw"] for r in rs]
            kept = [r["dice_kept"] for r in rs]
            by_k[k] = {
                "n": len(rs),
                "cases": len({r["case"] for r in rs}),
                "labor_mean": float(np.mean([r["labor"] for r in rs])),
                "dice_raw_mean": float(np.mean(raw)),
                "dice_raw_min": float(np.min(raw)),
                "dice_raw_max": float(np.max(raw)),
                "dice_kept_mean": float(np.mean(kept)),
                "dice_kept_min": float(np.min(kept)),
                "dice_kept_max": float(np.max(kept)),
                "seconds_mean": float(np.mean([r["seconds"] for r in rs])),
            }
    for r in incremental:
        out["incremental"].setdefault(r["backend"], []).append(r)
    for backend, rs in out["incremental"].items():
        later = [r for r in rs if r["round"] > 1]
        out["incremental"][backend] = {
            "updates": len(later),
            "recomputed_mean": float(np.mean([r["recomputed"] for r in later])) if later else 0.0,
            "full_slices_mean": float(np.mean([r["full_slices"] for r in later])) if later else 0.0,
            "seconds_incremental_mean": float(np.mean([r["seconds_incremental"] for r in later])) if later else 0.0,
            "seconds_full_mean": float(np.mean([r["seconds_full"] for r in later])) if later else 0.0,
            "all_identical": all(r["identical"] for r in rs),
        }
    return out


def _subset_means(records: list[dict], cases: set[str]) -> dict:
    out: dict = {}
    for r in records:
        if r["case"] in cases:
            out.setdefault(r["backend"], {}).setdefault(r["k"], []).append(r["dice_raw"])
    return {b: {k: float(np.mean(v)) for k, v in by_k.items()} for b, by_k in out.items()}


def _markdown(summary: dict, meta: dict, subset: dict) -> str:
    q = summary["quality"]
    backends = [b for b in meta["backends"] if b in q]
    ks = sorted({int(k) for b in backends for k in q[b]})
    n_ants = meta["ants_cases_used"]
    lines = [
        "# Proxy quality, hippocampus, k random target slices on each of axes 0 and 1 (`bench/proxy_quality.py`)",
        "",
        f"{meta['cases']} cases x {len(meta['seeds'])} seeds (`{' '.join(map(str, meta['seeds']))}`); "
        f"**ANTs backends on the first {n_ants} cases only** (cost). One ITK thread, {meta['machine']}. "
        "Dice of the binary proxy against the full ground truth, mean [min-max]. Fusion: mean of the two planes, "
        "cut `>= 0.5` for mci/sdf (union), `> 0.5` for nearest/ants (intersection).",
        "",
        "## raw: the fused planes as they are (protocol of DESIGN's anchors; anchor in parentheses)",
        "",
        "| k+k | labor | " + " | ".join(backends) + " |",
        "|---|---|" + "---|" * len(backends),
    ]
    for k in ks:
        labor = q[backends[0]][str(k)]["labor_mean"]
        cells = []
        for b in backends:
            s = q[b].get(str(k))
            if s is None:
                cells.append("")
                continue
            anchor = ANCHORS.get(k, {}).get(b)
            a = f" ({anchor:.2f})" if anchor is not None else ""
            cells.append(f"{s['dice_raw_mean']:.3f} [{s['dice_raw_min']:.2f}-{s['dice_raw_max']:.2f}]{a}")
        lines.append(f"| {k} | {labor:.2f} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## kept: drawn slices set to what was drawn after fusion (`proxy_mask` default)",
        "",
        "| k+k | " + " | ".join(backends) + " |",
        "|---|" + "---|" * len(backends),
    ]
    for k in ks:
        cells = []
        for b in backends:
            s = q[b].get(str(k))
            cells.append("" if s is None else f"{s['dice_kept_mean']:.3f} [{s['dice_kept_min']:.2f}-{s['dice_kept_max']:.2f}]")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    if subset:
        lines += [
            "",
            f"## raw Dice on the ANTs subset (first {n_ants} cases, same slices for every backend)",
            "",
            "| k+k | " + " | ".join(b for b in backends if b in subset) + " |",
            "|---|" + "---|" * len([b for b in backends if b in subset]),
        ]
        for k in ks:
            cells = [f"{subset[b][k]:.3f}" if k in subset[b] else "" for b in backends if b in subset]
            lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## seconds per proxy (full build, both planes, no cache)",
        "",
        "| k+k | " + " | ".join(backends) + " |",
        "|---|" + "---|" * len(backends),
    ]
    for k in ks:
        cells = [f"{q[b][str(k)]['seconds_mean']:.4f}" if str(k) in q[b] else "" for b in backends]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    inc = summary["incremental"]
    if inc:
        lines += [
            "",
            f"## incremental update (PlaneCache), {meta['incremental_cases']} cases, +1 slice per plane per round, "
            f"rounds 2-{meta['incremental_rounds']}",
            "",
            "| backend | slices recomputed | slices in a full build | s incremental | s full | identical to full |",
            "|---|---|---|---|---|---|",
        ]
        for b in backends:
            if b in inc:
                s = inc[b]
                lines.append(
                    f"| {b} | {s['recomputed_mean']:.1f} | {s['full_slices_mean']:.1f} | "
                    f"{s['seconds_incremental_mean']:.4f} | {s['seconds_full_mean']:.4f} | {s['all_identical']} |"
                )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=40, help="first N hippocampus cases (default 40)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    p.add_argument("--k", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6], help="slices per plane (default 1-6)")
    p.add_argument("--backends", nargs="+", default=["mci", "sdf", "nearest", "ants-affine", "ants-syn"],
                   choices=sorted(PROPAGATION_BACKENDS))
    p.add_argument("--ants-cases", type=int, default=20, help="ANTs backends on the first N cases only (default 20)")
    p.add_argument("--incremental-cases", type=int, default=5, help="cases for the incremental part (default 5)")
    p.add_argument("--incremental-rounds", type=int, default=6, help="rounds of +1 slice per plane (default 6)")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/proxy_quality.json)")
    p.add_argument("--smoke", action="store_true", help="tiny run (2 cases, 1 seed, k 1 2); writes to a temp dir")
    a = p.parse_args(argv)
    if a.smoke:
        a.cases, a.seeds, a.k, a.ants_cases, a.incremental_cases, a.incremental_rounds = 2, 1, [1, 2], 1, 1, 3
    out = a.out or (Path(tempfile.mkdtemp()) / "proxy_quality.json" if a.smoke
                    else REPO / "bench" / "results" / "proxy_quality.json")
    t_start = time.perf_counter()
    cases = _load(max(a.cases, a.incremental_cases))
    seeds = list(range(a.seeds))
    _warm_up(a.backends)
    records = _quality(cases[: a.cases], seeds, a.k, a.backends, a.ants_cases)
    incremental = _incremental(cases[: a.incremental_cases], a.backends, a.incremental_rounds)
    summary = _summary(records, incremental)
    ants_used = min(a.ants_cases, a.cases) if any(b in ANTS for b in a.backends) else a.cases
    subset_cases = {c for c, _, _ in cases[:ants_used]}
    subset = _subset_means(records, subset_cases) if ants_used < a.cases else {}
    meta = {
        "cases": a.cases,
        "seeds": seeds,
        "k": a.k,
        "backends": a.backends,
        "ants_cases_used": ants_used,
        "incremental_cases": a.incremental_cases,
        "incremental_rounds": a.incremental_rounds,
        "axes": list(AXES),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "itk_threads": os.environ.get("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"),
        "wall_seconds": None,
    }
    meta["wall_seconds"] = round(time.perf_counter() - t_start, 1)
    table = _markdown(summary, meta, subset)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "summary": summary, "subset_raw_dice": subset,
                               "records": records, "incremental": incremental}, indent=1), encoding="utf-8")
    out.with_suffix(".md").write_text(table, encoding="utf-8")
    print(table)
    print(f"wrote {out} and {out.with_suffix('.md')} in {meta['wall_seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
