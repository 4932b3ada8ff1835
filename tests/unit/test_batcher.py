"""The dynamic batcher on its own: windows, limits, and a failing request kept from its batch-mates."""

from __future__ import annotations

import asyncio

import pytest

from plmkit.serve.batcher import Batcher, QueueFull


def doubled(calls: list[list[int]]):
    def run(inputs: list[int]) -> list[int]:
        calls.append(list(inputs))
        if any(x < 0 for x in inputs):
            raise ValueError(f"negative input in {inputs}")
        return [2 * x for x in inputs]

    return run


async def submit_all(batcher: Batcher, requests: list[list[int]]) -> list:
    batcher.start()
    try:
        return await asyncio.gather(*(batcher.submit(r) for r in requests), return_exceptions=True)
    finally:
        await batcher.stop()


def test_requests_in_one_window_share_a_call_and_get_their_own_outputs():
    calls: list[list[int]] = []
    requests = [[1], [2, 3], [4], [5, 6, 7]]
    out = asyncio.run(submit_all(Batcher(doubled(calls), window_s=0.05, max_batch=64), requests))
    assert out == [[2], [4, 6], [8], [10, 12, 14]]
    assert calls == [[1, 2, 3, 4, 5, 6, 7]]


def test_max_batch_splits_calls_without_splitting_a_request():
    calls: list[list[int]] = []
    requests = [[1, 2], [3, 4], [5, 6], [7, 8, 9, 10, 11]]
    out = asyncio.run(submit_all(Batcher(doubled(calls), window_s=0.05, max_batch=4), requests))
    assert out == [[2 * x for x in r] for r in requests]
    assert calls == [[1, 2, 3, 4], [5, 6], [7, 8, 9, 10, 11]]  # the one over max_batch runs alone, whole


def test_without_a_window_requests_that_arrive_while_the_model_runs_form_the_next_call():
    """window 0 (the default): the first request runs at once; those that arrive during its call wait only
    for that call to end, then run together."""
    calls: list[list[int]] = []

    def slow(inputs: list[int]) -> list[int]:
        import time

        time.sleep(0.2)
        return doubled(calls)(inputs)

    async def scenario() -> list:
        batcher = Batcher(slow, window_s=0.0)
        batcher.start()
        try:
            first = asyncio.ensure_future(batcher.submit([1]))
            await asyncio.sleep(0.05)  # the first call is running now
            rest = [asyncio.ensure_future(batcher.submit([x])) for x in (2, 3, 4)]
            return await asyncio.gather(first, *rest)
        finally:
            await batcher.stop()

    assert asyncio.run(scenario()) == [[2], [4], [6], [8]]
    assert calls == [[1], [2, 3, 4]]


def test_without_batching_each_request_is_its_own_call():
    calls: list[list[int]] = []
    asyncio.run(submit_all(Batcher(doubled(calls), batching=False), [[1], [2], [3]]))
    assert calls == [[1], [2], [3]]


def test_a_failing_request_fails_alone():
    calls: list[list[int]] = []
    out = asyncio.run(submit_all(Batcher(doubled(calls), window_s=0.05), [[1], [-1], [3]]))
    assert out[0] == [2] and out[2] == [6]
    assert isinstance(out[1], ValueError) and "[-1]" in str(out[1])
    assert calls[0] == [1, -1, 3] and sorted(calls[1:]) == [[-1], [1], [3]]


def test_queue_full_is_refused_at_once():
    async def go():
        batcher = Batcher(doubled([]), window_s=0.2, max_queue=3)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit([1, 2]))
        await asyncio.sleep(0)
        with pytest.raises(QueueFull, match="2 inputs are waiting; the queue holds 3"):
            await batcher.submit([3, 4])
        assert await batcher.submit([5]) == [10]  # one more still fits
        assert await first == [2, 4]
        await batcher.stop()

    asyncio.run(go())


def test_length_groups_pad_little_and_keep_every_index_once():
    from plmkit.train.infer import length_groups

    lengths = [10, 120, 11, 60, 12, 118, 58, 9]
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    groups = length_groups(order, lengths, batch_size=3, max_padding=0.25)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert [[lengths[i] for i in g] for g in groups] == [[9, 10, 11], [12], [58, 60], [118, 120]]
    for g in groups:  # each batch padded to its longest stays within 25% of its real tokens
        assert max(lengths[i] for i in g) * len(g) <= 1.25 * sum(lengths[i] for i in g)
    assert length_groups(order, [5] * 8, batch_size=3, max_padding=0.0) == [order[0:3], order[3:6], order[6:8]]
