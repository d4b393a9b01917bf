"""``running_loop()``: ``asyncio.get_running_loop()`` without its system call
(``_foundation/env.py``)."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from phoenix_cluster._foundation.env import running_loop


def test_it_is_the_running_loop_of_each_run_and_thread() -> None:
    async def both() -> tuple[asyncio.AbstractEventLoop, asyncio.AbstractEventLoop]:
        return running_loop(), asyncio.get_running_loop()

    first, expected = asyncio.run(both())
    assert first is expected
    second, expected = asyncio.run(both())  # a new loop after the first one ended
    assert second is expected and second is not first
    seen: list[tuple[asyncio.AbstractEventLoop, asyncio.AbstractEventLoop]] = []

    async def hold(started: threading.Event, release: asyncio.Event) -> None:
        seen.append(await both())
        started.set()
        await release.wait()

    # Two loops running at once, one per thread: each thread sees its own.
    loop = asyncio.new_event_loop()
    release = asyncio.Event()
    started = threading.Event()
    thread = threading.Thread(target=loop.run_until_complete, args=(hold(started, release),))

    async def main() -> None:
        thread.start()
        assert await asyncio.to_thread(started.wait, 10)
        mine = await both()
        assert mine[0] is mine[1] is not loop
        loop.call_soon_threadsafe(release.set)

    asyncio.run(main())
    thread.join(10)
    loop.close()
    assert seen[0][0] is seen[0][1] is loop


def test_outside_a_loop_it_raises_like_asyncio() -> None:
    asyncio.run(asyncio.sleep(0))  # a loop that ran in this thread and ended
    with pytest.raises(RuntimeError):
        running_loop()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX only")
def test_a_forked_child_does_not_see_its_parents_loop() -> None:
    async def fork() -> int:
        running_loop()  # remembered in the parent
        pid = os.fork()
        if pid == 0:  # the child: the parent's loop is not running here
            try:
                running_loop()
            except RuntimeError:
                os._exit(0)
            os._exit(1)
        return pid

    pid = asyncio.run(fork())
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
