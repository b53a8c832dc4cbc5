"""Several threads: seeded results equal the serial ones, process state is given back."""

from __future__ import annotations

import logging
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

import transmodal as tm


def _fit(data, make_model, seed, **kw):
    model = make_model(data, seed=seed, anchor_fraction=1.0, **kw)
    return model.train(max_epochs=2, batch_size=32, progress_bar=False)


@pytest.mark.filterwarnings("ignore")  # (set once: catch_warnings in threads would race)
def test_models_trained_in_threads_equal_the_serial_ones(paired_data, make_model):
    """Building and training seed, draw from and give back torch's process-wide state
    (generators, deterministic mode, Lightning's loggers, warning filters): two threads
    took turns in each other's runs (latents 2 apart) and left deterministic mode on."""
    serial = [_fit(paired_data, make_model, s).get_latent_representation("rna") for s in (0, 1)]
    # (not the filter list itself: a first import in a thread may add a library's filter)
    before = (torch.are_deterministic_algorithms_enabled(),
              logging.getLogger("lightning.pytorch").level, warnings.showwarning)
    with ThreadPoolExecutor(2) as pool:
        models = list(pool.map(lambda s: _fit(paired_data, make_model, s), (0, 1)))
    for model, z in zip(models, serial):
        np.testing.assert_array_equal(model.get_latent_representation("rna"), z)
    assert before == (torch.are_deterministic_algorithms_enabled(),
                      logging.getLogger("lightning.pytorch").level, warnings.showwarning)


@pytest.mark.filterwarnings("ignore")
def test_posterior_draws_in_threads_are_the_seeds_own(paired_data, make_model):
    """translate(sample=True, seed=s) draws from a generator of its own: the same draws in
    any thread, and the caller's torch.manual_seed stream is not moved."""
    model = _fit(paired_data, make_model, 0, variational=True)

    def draw(seed):
        return model.translate(source="rna", target="atac", sample=True, seed=seed,
                               batch_size=16).X

    serial = {s: draw(s) for s in range(6)}
    with ThreadPoolExecutor(3) as pool:
        threaded = dict(zip(range(6), pool.map(draw, range(6))))
    for s in range(6):
        np.testing.assert_array_equal(threaded[s], serial[s])
    assert not np.array_equal(serial[0], serial[1])
    torch.manual_seed(123)
    want = torch.rand(5)
    torch.manual_seed(123)
    draw(7)
    assert torch.equal(torch.rand(5), want)


def _enter_process_state() -> bool:
    from transmodal._utils import process_state

    with process_state():
        return True


def test_a_forked_child_does_not_wait_for_its_parents_threads():
    """A lock held by a parent's thread at fork time has no holder in the child."""
    import multiprocessing as mp
    import threading

    from transmodal._utils import process_state

    held, release = threading.Event(), threading.Event()

    def hold():
        with process_state():
            held.set()
            release.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(30)
    try:
        with mp.get_context("fork").Pool(1) as pool:
            assert pool.apply_async(_enter_process_state).get(timeout=30)
    finally:
        release.set()
        thread.join()
