"""`accelerate launch` with two CPU processes (gloo): the same code path as several GPUs or machines.

Two processes with batch_size B take the batches one process with batch_size B and grad_accum=2 takes, two to
an optimiser step, so the runs must agree: the same weights up to the float rounding of the gradient
all-reduce (measured: 1.2e-7 at most, dropout on, since the dropout stream is keyed by the batch's place in
the epoch) and the same dev metrics. A checkpoint written under either count resumes under the other with
grad_accum scaled to keep the batches per step, and ends where the uninterrupted run ends; a rank killed
mid-run ends the launch (torchrun stops the others) with a non-zero exit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import stop_at
from safetensors.torch import load_file

from plmkit import api
from plmkit.errors import TrainingError

pytestmark = pytest.mark.multiprocess  # the four that launch processes are also slow (9-10 s each)

# 160 training rows: 10 batches of 16 an epoch, 5 steps of two batches; dropout stays on (the default)
OPTS = {"epochs": "2", "batch_size": "16", "lr": "3e-3", "progress": "false", "log_steps": "1",
        "mixed_precision": "no", "save_steps": "2"}  # fmt: skip
WEIGHTS_TOLERANCE = 1e-5  # largest difference of any weight, one process against two


def launch(args: list[str], timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    """`accelerate launch --multi_gpu --num_processes 2 -m plmkit ARGS` on the CPU: --multi_gpu is what makes
    Accelerate start several processes (torchrun); ACCELERATE_USE_CPU keeps them on the CPU (gloo) even on a
    machine with a GPU; port 0 picks a free port."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", "0", "-m", "plmkit", *args]  # fmt: skip
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PLMKIT_FAULT")}
    environ |= {"ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environ)


def train_args(model: Path, data: dict[str, Path], out: Path, *extra: str, **opts: str) -> list[str]:
    overrides = [f"{k}={v}" for k, v in (OPTS | {"model": str(model)} | opts).items()]
    return ["train", "--task", "classification", "--train", str(data["train"]), "--dev", str(data["dev"]),
            "--output", str(out), *extra, *overrides]  # fmt: skip


def reports(result: subprocess.CompletedProcess) -> list[dict]:
    """The JSON lines printed on stdout: only the main process reports."""
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def max_difference(a: Path, b: Path) -> float:
    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert x.keys() == y.keys()
    return max((x[k] - y[k]).abs().max().item() for k in x)


def assert_one_output(out: Path) -> None:
    """A finished run's directory and nothing beside it: no checkpoint, no temporaries, no second copy."""
    assert not (out / "checkpoint").exists()
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.") and "tmp" in p.name] == []
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


@pytest.fixture(scope="module")
def one_process(tiny_model_dir, toy_data, tmp_path_factory) -> Path:
    """The uninterrupted reference: one process, grad_accum=2 (two batches of 16 a step)."""
    out = tmp_path_factory.mktemp("one") / "model"
    api.train(str(toy_data["train"]), out, dev=str(toy_data["dev"]),
              overrides=OPTS | {"model": str(tiny_model_dir), "grad_accum": "2"})  # fmt: skip
    return out


@pytest.mark.slow
def test_two_processes_train_as_one_with_the_same_batches_per_step(one_process, tiny_model_dir, toy_data, tmp_path):
    out = tmp_path / "two"
    result = launch(train_args(tiny_model_dir, toy_data, out))
    assert result.returncode == 0, result.stderr[-3000:]
    (summary,) = reports(result)  # one report, from the main process
    one = json.loads((one_process / "plmkit.json").read_text())
    assert summary["steps"] == 10  # 5 a process and epoch: each took half of the 10 batches
    assert [h["step"] for h in summary["history"]] == [h["step"] for h in one["history"]] == [5, 10]
    for mine, theirs in zip(summary["history"], one["history"]):
        for key in ("dev_accuracy", "dev_macro_f1"):
            assert mine[key] == pytest.approx(theirs[key], abs=1e-6), key
    assert one["history"][0]["dev_accuracy"] != one["history"][1]["dev_accuracy"]  # it learned: not a trivial match
    assert max_difference(out, one_process) <= WEIGHTS_TOLERANCE
    assert json.loads((out / "plmkit.json").read_text())["dev_metrics"] == summary["dev_metrics"]
    assert_one_output(out)


@pytest.mark.slow
def test_pretrain_under_two_processes_writes_one_output(tmp_path):
    from conftest import toy_rows

    corpus = tmp_path / "corpus.txt"
    cycle = "子丑寅卯辰巳午未申酉戌亥"
    lines = [(cycle * 3)[k : k + 20] for k in range(12)] * 10 + [t for t, _ in toy_rows(40, seed=5)]
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "bert"
    options = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64, "vocab_size": 200,
               "max_length": 64, "epochs": 2, "batch_size": 8, "lr": "5e-3", "log_steps": 1, "progress": "false",
               "heldout_fraction": 0.2, "mixed_precision": "no"}  # fmt: skip
    result = launch(["pretrain", "--output", str(out), "--corpus", str(corpus), "--",
                     *(f"{k}={v}" for k, v in options.items())])  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (summary,) = reports(result)
    assert result.stdout.count("training segments") == 1  # the main process alone says what it trains on
    log = json.loads((out / "pretrain_log.json").read_text())
    assert summary["final_loss"] == log["losses"][-1][1] and [h["epoch"] for h in log["history"]] == [1, 2]
    assert {"model.safetensors", "tokenizer.json", "config.json", "loss_curve.png"} <= {p.name for p in out.iterdir()}
    assert_one_output(out)


@pytest.mark.slow
def test_a_killed_rank_ends_the_run_and_resume_under_one_process_finishes_it(
    one_process, tiny_model_dir, toy_data, tmp_path
):
    out = tmp_path / "killed"
    started = time.monotonic()
    # rank 1 SIGKILLs itself after its 3rd optimiser step; the checkpoint of step 2 is on disk
    result = launch(train_args(tiny_model_dir, toy_data, out), PLMKIT_FAULT="step:3", PLMKIT_FAULT_RANK="1")
    assert result.returncode != 0 and time.monotonic() - started < 120
    assert "SIGKILL" in result.stderr and not (out / "model.safetensors").exists()
    state = json.loads((out / "checkpoint" / "loop_state.json").read_text())
    assert (state["step"], state["batches_done"], state["made_from"]["processes"]) == (2, 4, 2)

    options = OPTS | {"model": str(tiny_model_dir)}
    with pytest.raises(TrainingError, match="grad_accum=2 keeps it under 1 process"):
        api.train(str(toy_data["train"]), out, dev=str(toy_data["dev"]), overrides=options, resume=True)
    resumed = api.train(str(toy_data["train"]), out, dev=str(toy_data["dev"]),
                        overrides=options | {"grad_accum": "2"}, resume=True)  # fmt: skip
    assert resumed["steps"] == 10
    assert max_difference(out, one_process) <= WEIGHTS_TOLERANCE
    assert_one_output(out)


@pytest.mark.slow
def test_a_one_process_checkpoint_resumes_under_two(one_process, tiny_model_dir, toy_data, tmp_path):
    out = tmp_path / "cut"
    options = OPTS | {"model": str(tiny_model_dir), "grad_accum": "2"}
    with pytest.raises(KeyboardInterrupt):  # mid-epoch 2, after the checkpoint of step 6
        api.train(str(toy_data["train"]), out, dev=str(toy_data["dev"]), overrides=options, callbacks=[stop_at(7)])
    result = launch(train_args(tiny_model_dir, toy_data, out, "--resume"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from step 6 (epoch 2, batch 2)" in result.stdout
    (summary,) = reports(result)
    assert summary["steps"] == 10
    assert max_difference(out, one_process) <= WEIGHTS_TOLERANCE
    assert_one_output(out)


@pytest.mark.parametrize("processes", [2, 3])
@pytest.mark.parametrize("start", [0, 1, 4])
def test_each_process_takes_its_own_batches_and_as_many(processes, start):
    """The loop's sampler sharded as Accelerate's prepared loader shards it: the epoch's batches from `start`
    on, dealt out in turn, every process the same number (the last round padded from the first batches),
    nothing left out, though the short batch (the end of the last window) lands anywhere."""
    from accelerate.data_loader import BatchSamplerShard

    from plmkit.data.batching import BucketBatchSampler

    lengths = [(7 * i) % 13 + 1 for i in range(101)]  # 101 items: batches of 8, the last one short
    sampler = BucketBatchSampler(lengths, 8, seed=1, bucket_size=2)
    sampler.start = start
    everything = sampler.batches()
    assert sum(len(b) != 8 for b in everything) == 1
    shards = [list(BatchSamplerShard(sampler, processes, p)) for p in range(processes)]
    rounds = -(-(len(everything) - start) // processes)
    assert all(len(shard) == rounds for shard in shards)
    for k in range(rounds):  # round k: the batches start + k * processes + p
        for p, shard in enumerate(shards):
            g = start + k * processes + p
            assert shard[k] == (everything[g] if g < len(everything) else shard[k])
    dealt = [b for k in range(rounds) for p in range(processes) if start + k * processes + p < len(everything)
             for b in [shards[p][k]]]  # fmt: skip
    assert dealt == everything[start:]


def test_what_a_checkpoint_needs_to_resume_under_another_process_count():
    from plmkit.train.loop import check_made_from

    made = {"batch_size": 16, "seed": 1}
    check_made_from(Path("c"), made | {"grad_accum": 1, "processes": 2}, made | {"grad_accum": 2, "processes": 1})
    check_made_from(Path("c"), made | {"grad_accum": 4}, made | {"grad_accum": 2, "processes": 2})  # older: 1 process
    with pytest.raises(TrainingError, match="2 then .1 x 2., 1 now .1 x 1.; grad_accum=2 keeps it under 1 process"):
        check_made_from(Path("c"), made | {"grad_accum": 1, "processes": 2}, made | {"grad_accum": 1, "processes": 1})
    with pytest.raises(TrainingError, match="2 processes cannot share 1 batches a step"):
        check_made_from(Path("c"), made | {"grad_accum": 1, "processes": 1}, made | {"grad_accum": 1, "processes": 2})


def test_alone_the_process_helpers_do_the_work_here():
    from plmkit.train.processes import across_processes, from_main, launched

    assert not launched()
    assert across_processes([3, 1, 2], lambda idx: [i * 10 for i in idx]) == [0, 10, 20]
    assert from_main(lambda: "made") == "made"
