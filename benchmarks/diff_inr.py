"""Diff-INR against the classical methods and INR+TV on a fair, independent protocol (benchmarks/_protocol.py).

Stages (each resumable: every reconstruction's scores are appended to ``--records``, by default
benchmarks/results/diff_inr_records.jsonl, which is kept with the results so that the report can be
rendered again and a run stopped by ``--max-minutes``, Ctrl-C or a kill continues where it stopped; the
records are keyed by stage, method, weight, case, SNR and INR iterations, not by code version: delete a
method's rows after changing that method):

1. ``sweep`` — every method's main weight (one-step α, GN α, TV α, INR+TV weight, λ_sds) over the same
   five multiples of its default (extended by one step past an optimum at an edge, up to twice), on the
   validation split only (``--n-val`` cases per family, 50 and 40 dB); the chosen weight maximises the mean of (SSIM + CC)/2, with diverged cases scored 0.
2. ``test`` — every method at its chosen weight on the test split (``--n-test`` cases per family) at 60,
   50 and 40 dB, plus the constant-background floor.
3. ``report`` — ``benchmarks/results/diff_inr.md``: the sweep, the test means with 95 % CIs per SNR and
   family, divergence counts, the paired difference to TV with its 95 % CI, the thorax order and the
   acceptance at 50 and 40 dB.
4. ``figure`` — ``benchmarks/results/diff_inr_validation_cases.png``: validation case 0 of each family at
   50 dB, every method at its chosen weight (validation only: a picture, not a score).

    python benchmarks/diff_inr.py all --n-val 5 --n-test 30          # the full protocol (hours on a CPU)
    python benchmarks/diff_inr.py sweep --methods TV,GN --max-minutes 60
    python benchmarks/diff_inr.py all --quick                          # a smoke run (2 cases, 100 iterations)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _protocol as P  # noqa: E402
from _common import RESULTS, machine_header, markdown_table  # noqa: E402

from jaxeit.io_utils import atomic_write_text  # noqa: E402
from jaxeit.recon import fit_homogeneous, reconstruct  # noqa: E402

#: name -> (registry method, main-weight option, its default, fixed options)
METHODS = {
    "one-step": ("one-step", "alpha", 1.0, {}),
    "GN": ("gn", "alpha", 10.0, {}),
    "TV": ("tv", "alpha", 1e-4, {}),
    "INR+TV": ("inr+tv", "tv_weight", 1e-4, {}),
    "Diff-INR": ("diff-inr", "sds_weight", 3e-3, {}),
}
MULTIPLIERS = (0.1, 0.3, 1.0, 3.0, 10.0)   # the same tuning budget for every method
#: the grid beyond MULTIPLIERS: an optimum at an edge extends the sweep by one step, at most MAX_EXTENSIONS times,
#: by the same rule for every method (an optimum at the edge of a fixed grid is not a tuned weight)
LADDER = (0.003, 0.01, 0.03) + MULTIPLIERS + (30.0, 100.0, 300.0)
MAX_EXTENSIONS = 2
SWEEP_SNRS = (50.0, 40.0)
TEST_SNRS = (60.0, 50.0, 40.0)


class Cache:
    """Scores of finished reconstructions, one JSON line each, keyed by (stage, method, weight, case, SNR)."""

    def __init__(self, path: Path):
        self.path = path
        self.rows = {}
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:   # a line torn by a kill: ignored, recomputed
                    continue
                self.rows[row["key"]] = row

    def get(self, key):
        return self.rows.get(key)

    def put(self, key, row):
        row = dict(row, key=key)
        self.rows[key] = row
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())


def run_method(name: str, weight: float | None, problem: P.Problem, v, *, iterations: int, key) -> tuple:
    """(image (128, 128) S/m, seconds, stop status) of method ``name`` at main weight ``weight``."""
    t0 = time.perf_counter()
    if name == "background":
        bg = fit_homogeneous(problem.inv, v)
        return np.full(problem.grid.shape, bg), time.perf_counter() - t0, "closed form"
    method, option, _, fixed = METHODS[name]
    opts = dict(fixed, **{option: weight})
    if "inr" in method:
        opts.update(max_iter=iterations, key=key)
    res = reconstruct(problem.inv, v, method, grid=problem.grid, **opts)
    return np.asarray(res.image), time.perf_counter() - t0, str(getattr(res, "status", ""))


def evaluate(stage, names_weights, cases, snrs, split, problem, cache, *, iterations, deadline, log):
    """Run every (method, weight) on every case and SNR not yet in ``cache``; False if the deadline hit."""
    todo = [(n, w, c, s) for n, w in names_weights for c in cases for s in snrs
            if cache.get(_key(stage, n, w, c, s, iterations)) is None]
    log(f"[{stage}] {len(todo)} reconstructions to do")
    t_start = time.perf_counter()
    for i, (name, weight, case, snr) in enumerate(todo):
        if time.time() > deadline:
            log(f"[{stage}] time budget reached; {len(todo) - i} left (run again to continue)")
            return False
        v = P.noisy(case, snr, split)
        image, secs, status = run_method(name, weight, problem, v, iterations=iterations,
                                         key=jax.random.PRNGKey(case.index))
        sc = P.score(image, case.truth, problem.mask)
        cache.put(_key(stage, name, weight, case, snr, iterations),
                  dict(sc, stage=stage, method=name, weight=weight, family=case.family, index=case.index, snr=snr,
                       seconds=secs, status=status))
        done = i + 1
        eta = (time.perf_counter() - t_start) / done * (len(todo) - done)
        w_txt = "" if weight is None else f" w={weight:.3g}"
        log(f"[{stage}] {done}/{len(todo)} {name}{w_txt} {case.family}#{case.index} {snr:g} dB: "
            f"SSIM {sc['SSIM']:.3f} CC {sc['CC']:.3f} RE {sc['RE']:.3f} ({secs:.1f} s, ETA {eta / 60:.0f} min)")
    return True


def _key(stage, name, weight, case, snr, iterations):
    w = "none" if weight is None else f"{weight:.6g}"
    it = iterations if name in INR_METHODS else 0
    return f"{stage}|{name}|{w}|{case.family}|{case.index}|{snr:g}|{it}"


INR_METHODS = ("INR+TV", "Diff-INR")


def iterations_of(record) -> int:
    """The INR iteration count a record was made with (0 for the other methods): the key's last field."""
    return int(record["key"].rsplit("|", 1)[1])


def sweep_table(cache, names, iterations: int = 600):
    """{name: [(weight, objective, SSIM, CC, diverged, n)]} over the validation records (the INR methods'
    at ``iterations``)."""
    out = {}
    for name in names:
        rows = []
        for m in LADDER:
            w = METHODS[name][2] * m
            recs = [r for r in cache.rows.values() if r["stage"] == "sweep" and r["method"] == name
                    and math.isclose(r["weight"], w, rel_tol=1e-6)
                    and iterations_of(r) == (iterations if name in INR_METHODS else 0)]
            if not recs:
                continue
            obj = float(np.mean([(r["SSIM"] + r["CC"]) / 2 for r in recs]))
            rows.append((w, obj, float(np.mean([r["SSIM"] for r in recs])), float(np.mean([r["CC"] for r in recs])),
                         sum(r["diverged"] for r in recs), len(recs)))
        out[name] = rows
    return out


def sweep(name, cases, problem, cache, *, iterations, deadline, log) -> bool:
    """Sweep one method's main weight over MULTIPLIERS, extended past an edge optimum; False on the deadline."""
    multipliers = list(MULTIPLIERS)
    for extension in range(MAX_EXTENSIONS + 1):
        weights = [(name, METHODS[name][2] * m) for m in multipliers]
        if not evaluate("sweep", weights, cases, SWEEP_SNRS, "val", problem, cache, iterations=iterations,
                        deadline=deadline, log=log):
            return False
        best = chosen_weights(cache, [name], iterations)[name] / METHODS[name][2]
        i = LADDER.index(min(LADDER, key=lambda m: abs(math.log(m / best))))
        lo, hi = LADDER.index(multipliers[0]), LADDER.index(multipliers[-1])
        if extension == MAX_EXTENSIONS or lo < i < hi:
            return True
        step = lo - 1 if i == lo else hi + 1
        if not 0 <= step < len(LADDER):
            return True
        log(f"[sweep] {name}: the best weight is at the grid's edge; extending to {METHODS[name][2] * LADDER[step]:.3g}")
        multipliers = sorted(multipliers + [LADDER[step]])
    return True


def chosen_weights(cache, names, iterations: int = 600):
    table = sweep_table(cache, names, iterations)
    return {n: max(rows, key=lambda r: r[1])[0] for n, rows in table.items() if rows}


def report(cache, names, args, problem) -> str:
    every_test = [r for r in cache.rows.values() if r["stage"] == "test"]
    test = [r for r in every_test if r["method"] not in INR_METHODS or iterations_of(r) == args.iterations]
    chosen = chosen_weights(cache, names, args.sweep_iterations)
    lines = [machine_header("Diff-INR on a fair, independent test protocol"), P.__doc__.split("\n\n", 1)[1], ""]
    lines += [f"Inverse mesh: {problem.coarse.n_elements} elements (h = {P.H_INVERSE} R); data mesh: "
              f"{problem.fine.n_nodes} nodes (h = {P.H_FINE} R). INR methods: {args.iterations} iterations.", ""]
    lines += ["## 1. Main-weight sweep on the validation split (50 and 40 dB)", "",
              "Objective: mean of (SSIM + CC)/2 over the validation cases; five multiples of each default, "
              f"extended by one step past an edge optimum (at most {MAX_EXTENSIONS} times, the same rule for every "
              "method).", ""]
    rows = []
    for name, recs in sweep_table(cache, names, args.sweep_iterations).items():
        for w, obj, ssim, cc, div, n in recs:
            rows.append([name, f"{w:.3g}" + (" **chosen**" if math.isclose(w, chosen.get(name, -1)) else ""),
                         f"{obj:.3f}", f"{ssim:.3f}", f"{cc:.3f}", div, n])
    lines += [markdown_table(["method", "weight", "objective", "SSIM", "CC", "diverged", "cases"], rows), ""]
    table = sweep_table(cache, names, args.sweep_iterations)
    edge = [n for n, w in chosen.items() if table[n] and (math.isclose(w, table[n][0][0]) or math.isclose(w, table[n][-1][0]))]
    if edge:
        lines += [f"At the edge of the sweep grid (the optimum may lie beyond it): {', '.join(edge)}.", ""]
    order = ["background"] + [n for n in names]
    lines += ["## 2. Test split: means with 95 % CIs", "",
              "\"diverged\": a non-finite image or RE > 1. \"stopped by the guard\": an INR run whose data misfit "
              "rose to 10× its post-warm-up minimum; it stops and returns its last good image, with status "
              "\"diverged\" in the result.", ""]
    for snr in TEST_SNRS:
        rows = []
        for name in order:
            recs = [r for r in test if r["method"] == name and r["snr"] == snr]
            if not recs:
                continue
            rows.append([name, len(recs), P.fmt_ci([r["SSIM"] for r in recs]), P.fmt_ci([r["CC"] for r in recs]),
                         P.fmt_ci([r["RE"] for r in recs]), P.fmt_ci([r["PSNR"] for r in recs], 2),
                         sum(r["diverged"] for r in recs), sum(r.get("status") == "diverged" for r in recs),
                         f"{np.median([r['seconds'] for r in recs]):.1f}"])
        if rows:
            lines += [f"### {snr:g} dB, all families", "",
                      markdown_table(["method", "cases", "SSIM", "CC", "RE", "PSNR", "diverged",
                                      "stopped by the guard", "median s"], rows), ""]
    lines += ["## 3. Paired difference to TV (same cases), 95 % CI", ""]
    rows = []
    for snr in TEST_SNRS:
        tv = {(r["family"], r["index"]): r for r in test if r["method"] == "TV" and r["snr"] == snr}
        for name in order:
            if name == "TV":
                continue
            pairs = [(r, tv[(r["family"], r["index"])]) for r in test
                     if r["method"] == name and r["snr"] == snr and (r["family"], r["index"]) in tv]
            if not pairs:
                continue
            d_ssim = [a["SSIM"] - b["SSIM"] for a, b in pairs]
            d_cc = [a["CC"] - b["CC"] for a, b in pairs]
            m_cc, h_cc = P.mean_ci(d_cc)
            rows.append([f"{snr:g}", name, len(pairs), P.fmt_ci(d_ssim), P.fmt_ci(d_cc),
                         "yes" if np.isfinite(h_cc) and abs(m_cc) > h_cc else "no"])
    lines += [markdown_table(["SNR", "method − TV", "pairs", "ΔSSIM", "ΔCC", "CI of ΔCC excludes 0"], rows), ""]
    lines += ["## 4. Per family (50 dB): mean SSIM / CC", ""]
    rows = []
    for fam in P.FAMILIES:
        row = [fam]
        for name in order:
            recs = [r for r in test if r["method"] == name and r["snr"] == 50.0 and r["family"] == fam]
            row.append(f"{np.mean([r['SSIM'] for r in recs]):.3f} / {np.mean([r['CC'] for r in recs]):.3f}"
                       if recs else "–")
        rows.append(row)
    lines += [markdown_table(["family"] + order, rows), ""]
    thorax = {name: np.mean([r["SSIM"] for r in test if r["method"] == name and r["family"] == "thorax"])
              for name in ("TV", "INR+TV", "Diff-INR") if any(r["method"] == name and r["family"] == "thorax"
                                                             for r in test)}
    if len(thorax) == 3:
        ok = thorax["Diff-INR"] > thorax["INR+TV"] > thorax["TV"]
        lines += [f"Thorax, all SNRs, mean SSIM: Diff-INR {thorax['Diff-INR']:.3f}, INR+TV {thorax['INR+TV']:.3f}, "
                  f"TV {thorax['TV']:.3f}: the paper's order Diff-INR > INR+TV > TV "
                  f"{'holds' if ok else 'does not hold'}.", ""]
    if args.out.with_name("diff_inr_validation_cases.png").exists():
        lines += ["Validation case 0 of each family at 50 dB, every method at its chosen weight "
                  "(`python benchmarks/diff_inr.py figure`; validation data, a picture of what the scores measure):",
                  "", "![validation cases](diff_inr_validation_cases.png)", ""]
    lines += acceptance_lines(test)
    lines += ["## 5. Speed on this machine, as the runs above went", "",
              "Median seconds per reconstruction over the test runs (else the validation runs at the chosen "
              "weight), and for the INR methods the ms per iteration (that time / iterations, set-up included). "
              "The runs shared the CPU with other jobs; `benchmarks/recon_speed.py` times them alone.", ""]
    rows = []
    for name in order[1:]:
        recs = [r for r in test if r["method"] == name] or [
            r for r in cache.rows.values() if r["stage"] == "sweep" and r["method"] == name
            and name in chosen and math.isclose(r["weight"], chosen[name], rel_tol=1e-6)]
        if recs:
            med = float(np.median([r["seconds"] for r in recs]))
            per_it = f"{1e3 * med / args.iterations:.1f}" if name in INR_METHODS else "–"
            rows.append([name, len(recs), f"{med:.2f}", per_it])
    lines += [markdown_table(["method", "runs", "s / reconstruction", "ms / iteration"], rows), ""]
    for its in sorted({iterations_of(r) for r in every_test if r["method"] in INR_METHODS} - {args.iterations}):
        lines += other_iterations_lines(every_test, its, args)
    return "\n".join(lines)


def other_iterations_lines(every_test, iterations: int, args) -> list[str]:
    """Section 6: the INR methods' test records at another iteration count, paired to TV on the same cases."""
    recs = [r for r in every_test if r["method"] == "TV"
            or (r["method"] in INR_METHODS and iterations_of(r) == iterations)]
    lines = [f"## 6. The INR methods at {iterations} iterations (test split)", "",
             f"The same test cases with INR+TV and Diff-INR run for {iterations} iterations instead of "
             f"{args.iterations}, at the weights the sweep chose at {args.sweep_iterations} (nothing re-chosen on "
             "the test split); the iteration count comes from the validation ablation "
             "(`sds_ablation.py`: 'iterations × 2'). TV as in section 2; Δ = paired difference to TV, 95 % CI.", ""]
    rows = []
    for snr in TEST_SNRS:
        tv = {(r["family"], r["index"]): r for r in recs if r["method"] == "TV" and r["snr"] == snr}
        for name in INR_METHODS:
            mine = [r for r in recs if r["method"] == name and r["snr"] == snr and (r["family"], r["index"]) in tv]
            if not mine:
                continue
            pairs = [(r, tv[(r["family"], r["index"])]) for r in mine]
            m_cc, h_cc = P.mean_ci([a["CC"] - b["CC"] for a, b in pairs])
            rows.append([f"{snr:g}", name, len(mine), P.fmt_ci([r["SSIM"] for r in mine]),
                         P.fmt_ci([r["CC"] for r in mine]), P.fmt_ci([r["RE"] for r in mine]),
                         P.fmt_ci([a["SSIM"] - b["SSIM"] for a, b in pairs]), f"{m_cc:+.3f} ± {h_cc:.3f}",
                         sum(r["diverged"] for r in mine), f"{np.median([r['seconds'] for r in mine]):.1f}"])
    if not rows:
        return []
    lines += [markdown_table(["SNR", "method", "cases", "SSIM", "CC", "RE", "ΔSSIM to TV", "ΔCC to TV", "diverged",
                              "median s"], rows), ""]
    snrs = {r["snr"] for r in recs if r["method"] in INR_METHODS}
    fam_rows = []
    for fam in P.FAMILIES:
        row = [fam]
        for name in ("TV",) + INR_METHODS:
            vals = [r["SSIM"] for r in recs if r["method"] == name and r["family"] == fam and r["snr"] in snrs]
            row.append(f"{np.mean(vals):.3f} ({len(vals)})" if vals else "–")
        fam_rows.append(row)
    lines += [f"Mean SSIM per family at {', '.join(f'{x:g}' for x in sorted(snrs, reverse=True))} dB (runs):", "",
              markdown_table(["family", "TV", f"INR+TV ({iterations} it.)", f"Diff-INR ({iterations} it.)"], fam_rows),
              ""]
    thorax = {name: [r["SSIM"] for r in recs if r["method"] == name and r["family"] == "thorax" and r["snr"] in snrs]
              for name in ("TV",) + INR_METHODS}
    if all(thorax.values()):
        m = {k: float(np.mean(v)) for k, v in thorax.items()}
        ok = m["Diff-INR"] > m["INR+TV"] > m["TV"]
        lines += [f"Thorax at {', '.join(f'{s:g}' for s in sorted(snrs, reverse=True))} dB, mean SSIM: Diff-INR "
                  f"{m['Diff-INR']:.3f}, INR+TV {m['INR+TV']:.3f}, TV {m['TV']:.3f}: the paper's order "
                  f"{'holds' if ok else 'does not hold'}.", ""]
    lines += acceptance_lines(recs, f"Acceptance with Diff-INR at {iterations} iterations (paired to TV):")
    return lines


def acceptance_lines(test, title: str = "## 4b. Acceptance at 50 and 40 dB (Diff-INR against TV, paired)"
                     ) -> list[str]:
    """The issue's acceptance at 50 and 40 dB, from the test records (paired to TV on the same cases)."""
    lines = [title, ""]
    rows = []
    for snr in (50.0, 40.0):
        tv = {(r["family"], r["index"]): r for r in test if r["method"] == "TV" and r["snr"] == snr}
        pairs = [(r, tv[(r["family"], r["index"])]) for r in test
                 if r["method"] == "Diff-INR" and r["snr"] == snr and (r["family"], r["index"]) in tv]
        if not pairs:
            continue
        m_cc, h_cc = P.mean_ci([a["CC"] - b["CC"] for a, b in pairs])
        m_ss, h_ss = P.mean_ci([a["SSIM"] - b["SSIM"] for a, b in pairs])
        div = sum(a["diverged"] for a, _ in pairs)
        rows.append([f"{snr:g}", len(pairs), f"{m_cc:+.3f} ± {h_cc:.3f}",
                     "met" if m_cc >= 0.03 and m_cc - h_cc > 0 else "missed",
                     f"{m_ss:+.3f} ± {h_ss:.3f}", "met" if m_ss >= 0 else "missed", div])
    lines += [markdown_table(["SNR", "pairs", "ΔCC", "ΔCC ≥ 0.03, CI excludes 0", "ΔSSIM", "ΔSSIM ≥ 0",
                              "Diff-INR diverged"], rows), ""]
    return lines


def figure(problem, cache, names, path, *, iterations: int, sweep_iterations: int, snr: float = 50.0,
           index: int = 0):
    """One validation case per family, every method at its chosen weight: ``path`` (PNG).

    Validation cases only (the test split is for the numbers): a picture of what the scores measure.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = chosen_weights(cache, names, sweep_iterations)
    cases = [P.make_cases(problem, "val", fam, index + 1)[index] for fam in P.FAMILIES]
    cols = ["truth"] + [n for n in names if n in chosen]
    fig, axes = plt.subplots(len(cases), len(cols), figsize=(2.2 * len(cols), 2.3 * len(cases)), squeeze=False)
    for i, case in enumerate(cases):
        v = P.noisy(case, snr, "val")
        lo, hi = float(np.min(case.truth[problem.mask])), float(np.max(case.truth[problem.mask]))
        for j, name in enumerate(cols):
            if name == "truth":
                img, title = case.truth, f"{case.family} (truth)"
            else:
                img, _, _ = run_method(name, chosen[name], problem, v, iterations=iterations,
                                       key=jax.random.PRNGKey(case.index))
                sc = P.score(img, case.truth, problem.mask)
                title = f"{name}\nSSIM {sc['SSIM']:.2f} CC {sc['CC']:.2f}"
            ax = axes[i, j]
            ax.imshow(np.where(problem.mask, img, np.nan), origin="lower", vmin=lo, vmax=hi, cmap="viridis")
            ax.set_title(title, fontsize=8)
            ax.set_axis_off()
    fig.suptitle(f"Validation case {index} of each family, {snr:g} dB, every method at its chosen weight "
                 "(common colour scale per row: the truth's range)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=["sweep", "test", "report", "figure", "all"])
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ", ".join(METHODS))
    ap.add_argument("--n-val", type=int, default=5, help="validation cases per family")
    ap.add_argument("--n-test", type=int, default=30, help="test cases per family")
    ap.add_argument("--iterations", type=int, default=600, help="INR / Diff-INR iterations")
    ap.add_argument("--sweep-iterations", type=int, default=None,
                    help="the INR iterations of the sweep whose chosen weights the test stage uses (default: "
                         "--iterations); e.g. --iterations 1200 --sweep-iterations 600 tests the INR methods "
                         "at 1200 iterations with the weights chosen at 600, reported in a section of its own")
    ap.add_argument("--max-minutes", type=float, default=None, help="stop (resumably) after this long")
    ap.add_argument("--snrs", default=",".join(f"{s:g}" for s in TEST_SNRS),
                    help="test-stage SNRs in dB, run in this order (a subset runs first; the report needs all)")
    ap.add_argument("--quick", action="store_true", help="2 cases per family, 100 iterations, own cache")
    ap.add_argument("--out", type=Path, default=RESULTS / "diff_inr.md")
    ap.add_argument("--records", type=Path, default=RESULTS / "diff_inr_records.jsonl",
                    help="per-reconstruction scores (resumable; --quick uses its own file under benchmarks/.cache)")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.methods.split(",") if n.strip()]
    unknown = set(names) - set(METHODS)
    if unknown:
        ap.error(f"unknown methods {sorted(unknown)}; choose from {sorted(METHODS)}")
    if args.quick:
        args.n_val, args.n_test, args.iterations = 2, 2, 100
    if args.sweep_iterations is None:
        args.sweep_iterations = args.iterations
    deadline = time.time() + 60 * args.max_minutes if args.max_minutes else math.inf
    cache = Cache(P.cache_dir() / "quick.jsonl" if args.quick else args.records)
    problem = P.tank_problem()
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    finished = True
    if args.stage in ("sweep", "all"):
        val = [c for fam in P.FAMILIES for c in P.make_cases(problem, "val", fam, args.n_val)]
        for name in names:
            finished = sweep(name, val, problem, cache, iterations=args.iterations, deadline=deadline, log=log)
            if not finished:
                break
    if finished and args.stage in ("test", "all"):
        chosen = chosen_weights(cache, names, args.sweep_iterations)
        missing = [n for n in names if n not in chosen]
        if missing:
            log(f"[test] no sweep results for {missing}: run the sweep stage first")
            return 2
        test = [c for fam in P.FAMILIES for c in P.make_cases(problem, "test", fam, args.n_test)]
        snrs = [float(s) for s in args.snrs.split(",")]
        if not set(snrs) <= set(TEST_SNRS):
            log(f"[test] --snrs must be a subset of {TEST_SNRS}, got {snrs}")
            return 2
        finished = evaluate("test", [("background", None)] + [(n, chosen[n]) for n in names], test, snrs,
                            "test", problem, cache, iterations=args.iterations, deadline=deadline, log=log)
    if args.stage == "figure":
        out = args.out.with_name("diff_inr_validation_cases.png")
        print(figure(problem, cache, names, out, iterations=args.iterations,
                     sweep_iterations=args.sweep_iterations))
        return 0
    if args.stage in ("report", "all"):
        text = report(cache, names, args, problem)
        out = args.out if not args.quick else args.out.with_name("diff_inr_quick.md")
        atomic_write_text(out, text)
        print(text)
    return 0 if finished else 3


if __name__ == "__main__":
    sys.exit(main())
