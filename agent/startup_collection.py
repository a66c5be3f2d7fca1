"""The cyclic garbage collector kept off start-up's objects.

A command's imports make some 100,000 objects, none of them garbage, and the collections they trigger walk
them all again and again: about 9 ms of a 140 ms `tlsfleet probe`. The console entry point pauses collection
before a short command's imports; the command resumes it when its work begins (run_coroutine), with what
start-up made frozen so that no later collection walks it. A server (agent, coordinator) freezes what its
start-up made once it serves: its oldest generation's collections, which otherwise walk every module,
store certificate and cache entry (35-200 ms an agent, all agents at about the same moment of a report
run), then walk only what serving made.
"""

from __future__ import annotations

import gc

# Allocations between collections of the youngest generation once resumed (CPython's default is 700): a
# short command's work allocates in bursts of tens of thousands of objects that mostly die young, and at
# most this many of them can be uncollected garbage at any time.
RESUMED_THRESHOLD = 50_000

_paused = False


def pause() -> None:
    """No cyclic collection until resume(); reference counting frees everything else as usual."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume() -> None:
    """Collect cycles again if pause() stopped it, start-up's objects frozen first. Idempotent."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.set_threshold(RESUMED_THRESHOLD, *gc.get_threshold()[1:])
        gc.enable()


def serving() -> None:
    """A server's start-up is over: collect its garbage once, freeze what is left (collections never walk it
    again) and collect cycles, with CPython's thresholds, if pause() stopped it."""
    global _paused
    gc.collect()  # frozen, start-up's garbage cycles would stay for the life of the process
    gc.freeze()
    if _paused:
        _paused = False
        gc.enable()
