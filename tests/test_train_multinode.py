"""Several training processes and machines: where the rank and rendezvous come from, every node's dry-run
command for each launcher, and a real two-node run on this machine (two `bastion train` processes,
torch.distributed over gloo on 127.0.0.1) compared with the single-process run."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner
from conftest import REPO, record_done

from bastion.errors import BadInputError
from bastion.recipe import load_recipe
from bastion.run_folder import RunFolder
from bastion.runner import run_stage, stage_named
from train.launchers import node_plan, parse_rendezvous, require_placement, slurm_first_host

FLAGSHIP = REPO / "recipes" / "llama31-8b.yaml"


def flagship(tmp_path: Path, launcher: str, nodes: int = 2, gpus: int = 8) -> Path:
    text = FLAGSHIP.read_text().replace(
        "  distributed: none", f"  nodes: {nodes}\n  gpus_per_node: {gpus}\n  launcher: {launcher}\n  distributed: none"
    )
    path = tmp_path / f"flagship-{launcher}.yaml"
    path.write_text(text)
    return path


# -- where the rank and the rendezvous come from ----------------------------------------------


def test_rank_and_rendezvous_from_the_command_line_first(tmp_path: Path) -> None:
    recipe = load_recipe(flagship(tmp_path, "torchrun"))
    env = {"SLURM_NODEID": "0", "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "gpu[07-08]", "MASTER_ADDR": "x"}
    plan = node_plan(recipe, node_rank=1, rendezvous="10.1.2.3:29400", environ=env)
    assert (plan.node_rank, plan.host, plan.port, plan.world_size) == (1, "10.1.2.3", 29400, 16)
    assert plan.is_worker


def test_rank_and_rendezvous_from_slurm(tmp_path: Path) -> None:
    recipe = load_recipe(flagship(tmp_path, "accelerate"))
    env = {"SLURM_NODEID": "1", "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "gpu[07-08,12],cpu1"}
    plan = node_plan(recipe, environ=env)
    assert (plan.node_rank, plan.host, plan.port, plan.source) == (1, "gpu07", 29500, "Slurm")
    with pytest.raises(BadInputError, match=r"SLURM_NNODES.*train.nodes is 2.*--nodes 2"):
        node_plan(recipe, environ={**env, "SLURM_NNODES": "3"})


def test_rank_and_rendezvous_from_torchrun_variables(tmp_path: Path) -> None:
    recipe = load_recipe(flagship(tmp_path, "torchrun"))
    plan = node_plan(recipe, environ={"NODE_RANK": "0", "MASTER_ADDR": "head", "MASTER_PORT": "29611"})
    assert (plan.node_rank, plan.endpoint, plan.is_worker) == (0, "head:29611", False)


def test_bad_rank_and_endpoint_are_refused(tmp_path: Path) -> None:
    recipe = load_recipe(flagship(tmp_path, "torchrun"))
    with pytest.raises(BadInputError, match=r"node rank 2 is outside 0..1"):
        node_plan(recipe, node_rank=2, environ={})
    for bad in ("head", "head:0", "head:99999", ":29500"):
        with pytest.raises(BadInputError, match="expected HOST:PORT"):
            parse_rendezvous(bad)
    assert parse_rendezvous("[fd00::1]:29500") == ("fd00::1", 29500)
    with pytest.raises(BadInputError, match=r"node rank and rendezvous is not known.*--node-rank N --rendezvous"):
        require_placement(node_plan(recipe, environ={}), "r.yaml")


def test_slurm_hostlists() -> None:
    assert slurm_first_host("node17") == "node17"
    assert slurm_first_host("gpu[3-5]") == "gpu3"
    assert slurm_first_host("a100-[008,010-012],h100-1") == "a100-008"


def test_cpu_processes_need_torchrun(tmp_path: Path) -> None:
    text = (REPO / "recipes" / "tiny-cpu.yaml").read_text()
    path = tmp_path / "r.yaml"
    path.write_text(text.replace("\ntrain:\n", "\ntrain:\n  nodes: 2\n  launcher: accelerate\n", 1))
    with pytest.raises(BadInputError, match=r"train.launcher.*expected 'torchrun'"):
        load_recipe(path)


def test_cli_takes_node_rank_and_rendezvous() -> None:
    from bastion.cli import main

    out = CliRunner().invoke(main, ["train", "--help"]).output
    assert "--node-rank INTEGER" in out and "--rendezvous TEXT" in out and "--dry-run" in out


# -- dry runs: before any harvest, every node's command ---------------------------------------


def dry_run(tmp_path: Path, capsys: pytest.CaptureFixture, recipe_path: Path, **options: object) -> str:
    recipe = load_recipe(recipe_path)
    folder = RunFolder.for_recipe(recipe, base=tmp_path / "runs")  # fresh: no harvest has run
    run_stage(stage_named("train"), recipe, folder, dry_run=True, **options)
    assert not folder.train_dir.exists() and "train" not in folder.read_manifest()["stages"]
    out: str = capsys.readouterr().out
    assert "training data" in out and "is not there yet: run `bastion harvest" in out
    assert "valid for Axolotl" in out and "adapter: qlora" in out
    return out


def commands(out: str) -> list[str]:
    return [line for line in out.splitlines() if "-m train.axolotl_launch" in line]


def test_dry_run_torchrun_two_nodes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = dry_run(tmp_path, capsys, flagship(tmp_path, "torchrun"), rendezvous="10.0.0.1:29500")
    node0, node1 = commands(out)
    for rank, line in enumerate((node0, node1)):
        assert (
            "-m torch.distributed.run --nproc_per_node 8 --nnodes 2 "
            f"--node_rank {rank} --rdzv_backend c10d --rdzv_endpoint 10.0.0.1:29500 --rdzv_id llama31-8b-cloudsec "
            "-m train.axolotl_launch "
        ) in line
    assert "axolotl train" in out and "--launcher torchrun -- --nproc_per_node 8 --nnodes 2 --node_rank 1" in out
    assert "shared" in out and "same recipe" in out and "same training data" in out


def test_dry_run_accelerate_two_nodes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = dry_run(tmp_path, capsys, flagship(tmp_path, "accelerate"), rendezvous="head-0:29555")
    for rank, line in enumerate(commands(out)):
        assert (
            "-m accelerate.commands.launch --multi_gpu --num_machines 2 --num_processes 16 "
            f"--machine_rank {rank} --main_process_ip head-0 --main_process_port 29555 -m train.axolotl_launch"
        ) in line
    assert "machine_rank: 1, main_process_ip: head-0, main_process_port: 29555" in out  # its config file


def test_dry_run_ray_driver(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = dry_run(tmp_path, capsys, flagship(tmp_path, "ray"))
    assert "use_ray: true" in out and "ray_num_workers: 16" in out and "GPU: 1" in out
    assert "ray start --head --port 6379 --num-gpus 8" in out
    assert "ray start --address NODE0_HOST:6379 --num-gpus 8" in out
    (driver,) = commands(out)
    assert driver.startswith("RAY_ADDRESS=NODE0_HOST:6379 ") and "torch.distributed" not in driver
    assert "needs no GPU" in out and "storage_path" in out
    assert "no CUDA GPU is visible" not in out  # the driver needs none


def test_dry_run_one_node_keeps_the_single_gpu_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = dry_run(tmp_path, capsys, FLAGSHIP)
    (line,) = commands(out)
    assert line.split()[1:3] == ["-m", "train.axolotl_launch"]
    assert "rendezvous" not in out


# -- a real run: two nodes on this machine vs one process --------------------------------------

RECORDS = [
    {
        "instruction": f"How should team {i} handle {topic} in its cloud accounts?",
        "input": "",
        "output": f"Team {i} should {advice}. " * (1 + i % 3),
    }
    for i, (topic, advice) in enumerate(
        [
            ("access keys", "rotate access keys every 90 days and prefer short-lived roles"),
            ("logging", "send audit logs to a separate account with object lock"),
            ("network", "deny inbound traffic by default and open only the ports a service needs"),
            ("secrets", "keep secrets in a managed vault and never in source control"),
        ]
        * 8
    )
]
STEPS = 4


def recipe_for(tmp_path: Path, name: str, train: str) -> Path:
    """tiny-cpu.yaml with STEPS steps, no validation split, ``train`` in place of its micro batch size,
    and LoRA only (training the embedding too would only make the run slower)."""
    text = (REPO / "recipes" / "tiny-cpu.yaml").read_text().replace("name: tiny-cpu", f"name: {name}")
    for key, value in (("max_steps", STEPS), ("save_steps", STEPS), ("eval_steps", STEPS), ("val_set_size", 0)):
        text, count = re.subn(rf"^  {key}: .*\n", f"  {key}: {value}\n", text, count=1, flags=re.M)
        assert count == 1, key
    text, count = re.subn(r"^  micro_batch_size: .*\n", train, text, count=1, flags=re.M)
    assert count == 1
    text = re.sub(r"^  axolotl:\n(?:    .*\n)+", "", text, count=1, flags=re.M)
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def harvested(tmp_path: Path, recipe_path: Path) -> RunFolder:
    recipe = load_recipe(recipe_path)
    folder = RunFolder.for_recipe(recipe, base=tmp_path / "runs")
    folder.data_dir.mkdir(parents=True)
    folder.train_data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    record_done("harvest", recipe, folder)
    return folder


def losses(folder: RunFolder) -> list[float]:
    from train.pipeline import latest_checkpoint

    checkpoint = latest_checkpoint(folder.train_output)
    assert checkpoint is not None
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return [float(e["loss"]) for e in state["log_history"] if "loss" in e]


def samples(log_dir: Path, rank: int) -> dict[int, list[str]]:
    rows = [json.loads(x) for x in (log_dir / f"rank-{rank}.jsonl").read_text().splitlines()]
    return {row["step"]: row["samples"] for row in rows}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGINT to each `bastion train` (it stops its trainer's process group), then kill whatever is left."""
    family = []
    for proc in procs:
        try:
            family += psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for child in family:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=10)


@pytest.mark.slow
def test_two_nodes_on_this_machine_train_like_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    # the same global batch: one process x 4 samples, or two nodes x 1 process x 2 samples
    single_path = recipe_for(tmp_path, "single", "  micro_batch_size: 4\n")
    two_path = recipe_for(
        tmp_path, "two", "  micro_batch_size: 2\n  nodes: 2\n  gpus_per_node: 1\n  launcher: torchrun\n"
    )
    single, two = harvested(tmp_path, single_path), harvested(tmp_path, two_path)

    monkeypatch.setenv("BASTION_SAMPLE_LOG", str(tmp_path / "samples-single"))
    started = time.monotonic()
    run_stage(stage_named("train"), load_recipe(single_path), single)
    single_seconds = time.monotonic() - started

    env = {**os.environ, "BASTION_SAMPLE_LOG": str(tmp_path / "samples-two"), "BASTION_RUNS": str(tmp_path / "runs")}
    for name in ("SLURM_NODEID", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    endpoint = f"127.0.0.1:{free_port()}"
    procs: list[subprocess.Popen[bytes]] = []
    started = time.monotonic()
    try:
        for rank in (1, 0):
            cmd = [sys.executable, "-m", "bastion", "train", str(two_path), "--node-rank", str(rank)]
            procs.append(
                subprocess.Popen(
                    [*cmd, "--rendezvous", endpoint],
                    cwd=tmp_path,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        outputs = [proc.communicate(timeout=240)[0].decode(errors="replace") for proc in procs]
    finally:
        stop_all(procs)
    two_seconds = time.monotonic() - started
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outputs)

    # one adapter, written by node 0, recorded once in the manifest; node 1 kept its own log
    two.require_adapter()
    entry = two.stage_entry("train")
    assert (entry["status"], entry["nodes"], entry["processes"], entry["launcher"]) == ("ok", 2, 2, "torchrun")
    assert "--node_rank" in entry["command"] and entry["steps"] == STEPS
    assert two.train_node_log(1).is_file() and "train: node 1 of 2" in outputs[0]

    # each process trained on its own half of every batch: together, what the single process saw
    rank0, rank1 = samples(tmp_path / "samples-two", 0), samples(tmp_path / "samples-two", 1)
    one = samples(tmp_path / "samples-single", 0)
    assert len(rank0) == len(rank1) == len(one) == STEPS
    for step in one:
        assert len(rank0[step]) == len(rank1[step]) == 2 and not set(rank0[step]) & set(rank1[step])
        assert sorted(rank0[step] + rank1[step]) == sorted(one[step])

    # and the loss curve follows the single-process run
    curve_one, curve_two = losses(single), losses(two)
    assert len(curve_one) == len(curve_two) == STEPS
    gaps = [abs(a - b) for a, b in zip(curve_one, curve_two, strict=True)]
    with capsys.disabled():
        sys.stdout.write(
            f"\none process: {curve_one} in {single_seconds:.0f} s; two: {curve_two} in {two_seconds:.0f} s\n"
        )
    assert max(gaps) < 0.02 * curve_one[0], (curve_one, curve_two)
