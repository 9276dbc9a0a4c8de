"""Signals at random moments of a tiny `jaxeit train-prior` run: is the last completed step saved and the
resumed run bit-identical to an uninterrupted one?

Each trial starts the real command line in a subprocess (a tiny U-Net on 8×8 images, a history row and a
log line per step, a checkpoint every 7 steps, so signals also land during saves), waits for its first
logged step plus a random delay, and sends SIGTERM or SIGINT. It checks

* the exit code (143 for SIGTERM, 130 for SIGINT);
* the checkpoint: at or past the last step the process logged, with one history row per step (none lost);
* the resumed run (`--resume`, in this process): history and every array of the final state equal to an
  uninterrupted run's.

Writes ``benchmarks/results/training_interrupts.md``.

    python benchmarks/training_interrupts.py            # 20 trials (about 5-10 min on 2 cores)
    python benchmarks/training_interrupts.py --trials 3
"""

from __future__ import annotations

import argparse
import contextlib
import io
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine_header, markdown_table  # noqa: E402

import jax  # noqa: E402

from jaxeit.io_utils import atomic_write_text  # noqa: E402
from jaxeit.priors import train as tr  # noqa: E402

TINY_ARGS = ["--image-size", "8", "--base-channels", "8", "--channel-mult", "1", "--num-res-blocks", "1",
             "--attention-resolutions", "",
             "--num-heads", "2", "--num-groups", "4", "--batch-size", "2", "--steps", "400", "--warmup-steps", "1",
             "--checkpoint-every", "7", "--log-every", "1", "--no-progress"]


def _step_of(line: str) -> int | None:
    return int(line.split()[2].split("/")[0]) if line.startswith("[train-prior] step ") else None


def trial(workdir: Path, signum: int, delay: float) -> dict:
    cmd = [sys.executable, "-m", "jaxeit.priors.train", "--workdir", str(workdir), *TINY_ARGS]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    logged = []
    for line in proc.stdout:
        if (s := _step_of(line)) is not None:
            logged.append(s)
            break
    time.sleep(delay)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=300)
    logged += [s for ln in out.splitlines() if (s := _step_of(ln)) is not None]
    ck = tr.load_checkpoint(workdir)
    saved = int(ck.state.step)
    rows_ok = [h["step"] for h in ck.history] == list(range(1, saved + 1))
    return {"signal": signal.Signals(signum).name, "delay_s": delay, "exit": proc.returncode,
            "last_logged": max(logged), "saved": saved, "rows_ok": rows_ok, "stderr": err.strip().splitlines()[-1:]}


def _quiet_main(argv) -> int:
    """`jaxeit train-prior` in this process, its per-step log lines swallowed."""
    with contextlib.redirect_stdout(io.StringIO()):
        return tr.main(argv)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS / "training_interrupts.md")
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        assert _quiet_main(["--workdir", str(tmp / "ref"), *TINY_ARGS]) == 0
        ref = tr.load_checkpoint(tmp / "ref")
        ref_leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(ref.state)]
        rows = []
        for i in range(args.trials):
            signum = signal.SIGTERM if i % 2 == 0 else signal.SIGINT
            r = trial(tmp / f"t{i}", signum, float(rng.uniform(0.0, 1.5)))
            assert _quiet_main(["--workdir", str(tmp / f"t{i}"), "--resume", *TINY_ARGS]) == 0
            res = tr.load_checkpoint(tmp / f"t{i}")
            r["identical"] = (res.history == ref.history and all(
                np.array_equal(a, np.asarray(b)) for a, b in zip(ref_leaves, jax.tree_util.tree_leaves(res.state))))
            r["ok"] = (r["exit"] == 128 + signal.Signals[r["signal"]].value and r["saved"] >= r["last_logged"]
                       and r["rows_ok"] and r["identical"])
            rows.append(r)
            print(f"trial {i + 1}/{args.trials}: {r['signal']} after {r['delay_s']:.2f} s -> exit {r['exit']}, "
                  f"last logged {r['last_logged']}, saved {r['saved']}, rows {r['rows_ok']}, "
                  f"identical {r['identical']}", flush=True)
    n_ok = sum(r["ok"] for r in rows)
    table = markdown_table(["trial", "signal", "delay (s)", "exit", "last logged step", "saved step",
                            "history rows complete", "resume bit-identical"],
                           [[i + 1, r["signal"], f"{r['delay_s']:.2f}", r["exit"], r["last_logged"], r["saved"],
                             r["rows_ok"], r["identical"]] for i, r in enumerate(rows)])
    text = "\n".join([machine_header("Signals during training: saved step and exact resume"),
                      f"**{n_ok} of {len(rows)} trials** saved the last completed step (at or past the last "
                      "logged step, every history row present) and resumed bit-identical to an uninterrupted "
                      "run (history and every array of the final state).", "",
                      "Each trial: `jaxeit train-prior` (tiny U-Net, 8×8, a row and a log line per step, a "
                      "checkpoint every 7 steps) is started, the signal sent a random delay after its first "
                      "logged step; `--resume` then finishes the 400 steps.", "", table, ""])
    atomic_write_text(args.out, text)
    print(text)
    return 0 if n_ok == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
