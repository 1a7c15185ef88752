"""The web process's gunicorn hooks that are not exercised by serving a request."""

from __future__ import annotations

import gc

from inbox import gunicorn_conf


def test_a_web_worker_freezes_the_loaded_app_and_relaxes_the_collector() -> None:
    thresholds = gc.get_threshold()
    try:
        gunicorn_conf.post_worker_init(worker=None)
        assert gc.get_threshold() == gunicorn_conf.GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
