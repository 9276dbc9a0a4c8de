"""The one trainer (jaxeit.training): exact resume at every step, budget, early stop, checkpoints, signals."""

import dataclasses
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxeit import training
from jaxeit.training import Checkpointer, EarlyStopping, OptimizerConfig, StopReason

OPT = OptimizerConfig(lr=3e-2, warmup_steps=2, decay_steps=12, grad_clip=1.0, ema_decay=0.9)
END = 9


def _loss(params, batch, key, extra):
    """A tiny regression whose batch is drawn from the step key (so a step depends only on its number)."""
    x = jax.random.normal(jax.random.fold_in(key, 0), (8, 3), jnp.float32)
    y = jnp.sin(x @ jnp.array([1.0, -2.0, 0.5], jnp.float32))
    pred = jnp.tanh(x @ params["w1"]) @ params["w2"]
    mse = jnp.mean((pred[:, 0] - y) ** 2)
    return mse, {"mse": mse}


def _params():
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    return {"w1": jax.random.normal(k1, (3, 4), jnp.float32), "w2": jax.random.normal(k2, (4, 1), jnp.float32)}


def _run(path, *, end=END, total=END, log_every=3, checkpoint_every=4, **kw):
    ckpt = Checkpointer(path, {"model": "tiny", "opt": OPT.to_dict()})
    state = training.init_state(_params(), OPT)
    loaded = ckpt.load(state)
    extra = {}
    if loaded is not None:
        state = loaded.state
        extra = dict(history=loaded.history, wall_time=loaded.wall_time, pending=loaded.pending,
                     early_stop_state=loaded.early_stop)
    step = training.make_train_step(_loss, OPT)
    key = jax.random.PRNGKey(1)
    return training.train_loop(lambda st, s: step(st, None, key, None), state, end=end, total=total, checkpointer=ckpt,
                               log_every=log_every, checkpoint_every=checkpoint_every, progress=False, log=None,
                               **extra, **kw)


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("full") / "ck.npz")


def test_stopped_at_any_step_and_resumed_equals_uninterrupted(full, tmp_path):
    assert full.stop_reason is StopReason.COMPLETED and int(full.state.step) == END
    assert [r["step"] for r in full.history] == [3, 6, 9] and {"loss", "mse", "grad_norm", "lr"} <= set(full.history[0])
    for stop in range(1, END):      # including stops inside a logging interval (pending sums are saved)
        path = tmp_path / f"run{stop}.npz"
        first = _run(path, end=stop)
        assert first.stop_reason is StopReason.COMPLETED and int(first.state.step) == stop
        resumed = _run(path)
        assert resumed.history == full.history, stop          # the same loss sequence
        for a, b in zip(_leaves(resumed.state), _leaves(full.state)):
            np.testing.assert_array_equal(a, b)                # bit for bit, EMA included


def test_ema_and_schedule_come_from_optax(full):
    state = full.state
    assert state.ema is not None
    assert not np.allclose(_leaves(state.ema)[0], _leaves(state.params)[0])
    sched = training.learning_rate_schedule(OPT)
    np.testing.assert_allclose(float(sched(2)), OPT.lr)
    np.testing.assert_allclose(float(sched(12)), OPT.lr * OPT.min_lr_fraction, rtol=1e-6)
    np.testing.assert_allclose(float(training.ema_decay_at(0, 0.999)), 0.1)


def test_time_budget_stops_at_a_step_boundary_with_a_checkpoint(tmp_path):
    path = tmp_path / "ck.npz"
    slow = training.make_train_step(_loss, OPT)
    key = jax.random.PRNGKey(1)

    def step(st, s):
        time.sleep(0.05)
        return slow(st, None, key, None)

    ckpt = Checkpointer(path, {"model": "tiny"})
    r = training.train_loop(step, training.init_state(_params(), OPT), end=10_000, checkpointer=ckpt,
                            max_seconds=0.3, log_every=1, progress=False, log=None)
    assert r.stop_reason is StopReason.TIME_BUDGET and 1 <= int(r.state.step) < 100
    saved = ckpt.load(training.init_state(_params(), OPT))
    assert int(saved.state.step) == int(r.state.step) and saved.stop_reason == "time_budget"


def test_early_stopping_on_a_validation_loss(tmp_path):
    vals = iter([3.0, 2.0, 2.5, 2.4, 2.2, 9.0])
    best = []
    es = EarlyStopping(lambda st: next(vals), every=2, patience=3, on_best=lambda st: best.append(int(st.step)))
    step = training.make_train_step(_loss, OPT)
    key = jax.random.PRNGKey(1)
    r = training.train_loop(lambda st, s: step(st, None, key, None), training.init_state(_params(), OPT),
                            end=100, early_stopping=es, progress=False, log=None)
    assert r.stop_reason is StopReason.EARLY_STOPPED and int(r.state.step) == 10
    assert best == [2, 4] and r.early_stop["best"] == 2.0 and r.early_stop["best_step"] == 4
    assert [h["val_loss"] for h in r.history if "val_loss" in h] == [3.0, 2.0, 2.5, 2.4, 2.2]
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(lambda st: 0.0, every=1, patience=0)


def test_config_mismatch_names_the_field(full, tmp_path):
    path = tmp_path / "ck.npz"
    _run(path, end=2)
    other = Checkpointer(path, {"model": "tiny", "opt": dataclasses.replace(OPT, lr=1e-3).to_dict()})
    with pytest.raises(ValueError, match=r"another config \(opt\.lr: 0\.03 -> 0\.001\)"):
        other.load(training.init_state(_params(), OPT))
    # a different structure is caught too
    with pytest.raises(ValueError, match="arrays"):
        Checkpointer(path, {"model": "tiny", "opt": OPT.to_dict()}).load(
            training.init_state({"w1": jnp.zeros((3, 4))}, OPT))


def test_a_run_resumes_with_a_longer_wall_clock_budget(tmp_path):
    """A budget bounds one call (chained GPU runs): a resume may change it at any depth, nothing else."""
    path = tmp_path / "ck.npz"
    state = training.init_state(_params(), OPT)
    config = {"model": "tiny", "fit": {"lr": 0.1, "max_seconds": 60.0, "nested": [{"max_seconds": 1.0}]}}
    Checkpointer(path, config).save(state, wall_time=60.0)
    longer = {"model": "tiny", "fit": {"lr": 0.1, "max_seconds": 120.0, "nested": [{"max_seconds": 9.0}]}}
    loaded = Checkpointer(path, longer).load(state)
    assert loaded is not None and loaded.wall_time == 60.0
    with pytest.raises(ValueError, match=r"another config \(fit\.lr: 0\.1 -> 0\.2\)"):
        Checkpointer(path, {"model": "tiny", "fit": {"lr": 0.2, "max_seconds": 60.0,
                                                     "nested": [{"max_seconds": 1.0}]}}).load(state)


def test_corrupt_checkpoint_is_an_error_and_the_previous_one_stays(tmp_path):
    path = tmp_path / "ck.npz"
    _run(path, end=4, checkpoint_every=2)          # saves at 2, then at 4 (the end): prev = step 2
    ckpt = Checkpointer(path, {"model": "tiny", "opt": OPT.to_dict()})
    assert ckpt.previous_path.exists()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])        # truncated
    template = training.init_state(_params(), OPT)
    with pytest.raises(ValueError, match=r"ck\.npz is unreadable.*previous checkpoint .*ck\.prev\.npz is intact"):
        ckpt.load(template)
    os.replace(ckpt.previous_path, path)
    assert int(ckpt.load(template).state.step) == 2
    path.write_bytes(b"garbage")
    ckpt.previous_path.unlink(missing_ok=True)
    with pytest.raises(ValueError, match="delete it to start afresh"):
        ckpt.load(template)


def test_bad_options_are_rejected():
    for kw, msg in [({"lr": 0.0}, "lr"), ({"lr": float("nan")}, "lr"), ({"ema_decay": 1.0}, "ema_decay"),
                    ({"warmup_steps": -1}, "warmup"), ({"decay_steps": 0}, "decay_steps")]:
        with pytest.raises(ValueError, match=msg):
            OptimizerConfig(**kw)
    with pytest.raises(ValueError, match="max_seconds"):
        training.train_loop(lambda st, s: (st, {}), None, end=1, max_seconds=0.0, progress=False)


# -----------------------------------------------------------------------------------
# SIGTERM / SIGINT on the real command line: the last completed step is saved and resumed bit for bit
# -----------------------------------------------------------------------------------

TINY_ARGS = ["--image-size", "8", "--base-channels", "8", "--channel-mult", "1", "--num-res-blocks", "1",
             "--attention-resolutions", "",
             "--num-heads", "2", "--num-groups", "4", "--batch-size", "2", "--steps", "60", "--warmup-steps", "1",
             "--checkpoint-every", "7", "--log-every", "1", "--no-progress"]


def _signal_trial(workdir, signum, delay):
    """Start `jaxeit train-prior`, wait for its first step and ``delay`` s more, send ``signum``."""
    cmd = [sys.executable, "-m", "jaxeit.priors.train", "--workdir", str(workdir), *TINY_ARGS]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    steps = []
    for line in proc.stdout:
        if line.startswith("[train-prior] step "):
            steps.append(int(line.split()[2].split("/")[0]))
            break
    time.sleep(delay)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    steps += [int(ln.split()[2].split("/")[0]) for ln in out.splitlines() if ln.startswith("[train-prior] step ")]
    return proc.returncode, max(steps), err


def test_sigterm_saves_the_last_completed_step_and_resume_is_exact(tmp_path):
    """One trial here; benchmarks/training_interrupts.py runs 20 at random moments (SIGTERM and SIGINT)."""
    from jaxeit.priors import train as tr

    rc, last_logged, err = _signal_trial(tmp_path / "run", signal.SIGTERM, 0.3)
    if rc == 0:
        pytest.skip("the tiny run finished before the signal arrived")
    assert rc == 143, err
    assert "saved" in err or "interrupted" in err
    ck = tr.load_checkpoint(tmp_path / "run")
    saved = int(ck.state.step)
    assert saved >= last_logged and ck.stop_reason == "interrupted"
    assert [h["step"] for h in ck.history] == list(range(1, saved + 1))   # no lost history row
    assert tr.main(["--workdir", str(tmp_path / "run"), "--resume", *TINY_ARGS]) == 0
    resumed = tr.load_checkpoint(tmp_path / "run")
    assert tr.main(["--workdir", str(tmp_path / "ref"), *TINY_ARGS]) == 0
    ref = tr.load_checkpoint(tmp_path / "ref")
    assert resumed.history == ref.history
    for a, b in zip(_leaves(resumed.state), _leaves(ref.state)):
        np.testing.assert_array_equal(a, b)
