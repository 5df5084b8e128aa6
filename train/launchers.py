"""Where the training processes run: one machine or several, and the exact command each node runs.

Bastion drives Axolotl's own multi-node routes rather than its own: ``accelerate launch`` with
``--num_machines/--machine_rank/--main_process_ip/--main_process_port`` (the command-line form of an
accelerate config per node), ``torchrun`` with a c10d rendezvous, or Ray (Axolotl's ``use_ray``: a
Ray TorchTrainer started from a driver that needs no GPU). In each case every training process runs
``python -m train.axolotl_launch`` (Axolotl's config check, the sample-length check, then
``axolotl.cli.train.do_cli``), exactly as a single-GPU run does.

The node rank and the rendezvous endpoint come from the command line (``--node-rank``,
``--rendezvous HOST:PORT``), else from Slurm (``SLURM_NODEID``, ``SLURM_NNODES``,
``SLURM_JOB_NODELIST``) or torchrun's variables (``NODE_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``).
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bastion.errors import BadInputError
from bastion.recipe import Recipe
from bastion.run_folder import RunFolder

DEFAULT_PORT = 29500
RAY_PORT = 6379  # Ray's own default for the head's GCS
#: the placeholder printed by --dry-run when no rendezvous endpoint is known yet
PLACEHOLDER_HOST = "NODE0_HOST"
LAUNCHERS = ("accelerate", "torchrun", "ray")


@dataclass(frozen=True)
class NodePlan:
    """The shape of a training run and this node's place in it."""

    nodes: int
    procs_per_node: int
    launcher: str
    node_rank: int | None  # None: not given (fine for one node, a dry run, or a Ray driver)
    host: str | None
    port: int
    source: str  # where the rank and endpoint came from, for the log

    @property
    def world_size(self) -> int:
        return self.nodes * self.procs_per_node

    @property
    def multi_node(self) -> bool:
        return self.nodes > 1

    @property
    def endpoint(self) -> str:
        return f"{self.host or PLACEHOLDER_HOST}:{self.port}"

    @property
    def is_worker(self) -> bool:
        """A node other than node 0 of a multi-node run: it trains but does not collect the adapter."""
        return self.multi_node and self.launcher != "ray" and bool(self.node_rank)


def parse_rendezvous(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``[v6]:PORT``) -> (host, port); BadInputError when malformed."""
    match = re.fullmatch(r"\[?([A-Za-z0-9._\-:]+?)\]?:(\d{1,5})", text.strip())
    if not match or not 0 < int(match.group(2)) < 65536:
        raise BadInputError(f"--rendezvous: got {text!r}, expected HOST:PORT such as 10.0.0.1:29500")
    return match.group(1), int(match.group(2))


def slurm_first_host(nodelist: str) -> str:
    """The first host of a Slurm hostlist: ``gpu[07-09,12],cpu1`` -> ``gpu07`` (what node 0 is)."""
    first = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not first:
        raise BadInputError(f"SLURM_JOB_NODELIST: cannot read a host from {nodelist!r}")
    prefix, ranges = first.group(1), first.group(2)
    if not ranges:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def procs_per_node(recipe: Recipe) -> int:
    """Processes per node: ``gpus_per_node``, else ``num_gpus``, else (several GPUs asked for) all GPUs seen."""
    t = recipe.train
    if t["gpus_per_node"]:
        return int(t["gpus_per_node"])
    if t["num_gpus"]:
        return int(t["num_gpus"])
    if t["device"] == "cpu" or (t["distributed"] == "none" and t["nodes"] == 1):
        return 1
    try:
        import torch

        return max(1, torch.cuda.device_count())
    except ImportError:
        return 1


def node_plan(
    recipe: Recipe,
    *,
    node_rank: int | None = None,
    rendezvous: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> NodePlan:
    """This node's plan: the command line first, then Slurm's variables, then torchrun's."""
    env = os.environ if environ is None else environ
    t = recipe.train
    nodes, launcher = int(t["nodes"]), str(t["launcher"])
    host: str | None = None
    port = RAY_PORT if launcher == "ray" else DEFAULT_PORT
    sources: list[str] = []
    if rendezvous:
        host, port = parse_rendezvous(rendezvous)
        sources.append("--rendezvous")
    if node_rank is not None:
        sources.append("--node-rank")
    if "SLURM_NODEID" in env and (node_rank is None or host is None):
        slurm_nodes = int(env.get("SLURM_NNODES", nodes))
        if slurm_nodes != nodes:
            raise BadInputError(
                f"Slurm gave this job {slurm_nodes} nodes (SLURM_NNODES) but train.nodes is {nodes} in "
                f"{recipe.path}: ask Slurm for {nodes} nodes (sbatch --nodes {nodes}) or change train.nodes"
            )
        if node_rank is None:
            node_rank = int(env["SLURM_NODEID"])
        nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
        if host is None and nodelist:
            host, port = env.get("MASTER_ADDR") or slurm_first_host(nodelist), int(env.get("MASTER_PORT", port))
        sources.append("Slurm")
    if node_rank is None and "NODE_RANK" in env:
        node_rank = int(env["NODE_RANK"])
        sources.append("NODE_RANK")
    if host is None and env.get("MASTER_ADDR"):
        host, port = env["MASTER_ADDR"], int(env.get("MASTER_PORT", port))
        sources.append("MASTER_ADDR/MASTER_PORT")
    if node_rank is not None and not 0 <= node_rank < nodes:
        raise BadInputError(f"node rank {node_rank} is outside 0..{nodes - 1} (train.nodes = {nodes} in {recipe.path})")
    return NodePlan(nodes, procs_per_node(recipe), launcher, node_rank, host, port, ", ".join(sources))


def require_placement(plan: NodePlan, recipe_arg: str) -> None:
    """A real multi-node run needs this node's rank and node 0's address; say how to give them."""
    if not plan.multi_node:
        return
    how = (
        f"pass them on each node: `bastion train {recipe_arg} --node-rank N --rendezvous HOST:PORT` (HOST: node 0's "
        "address, reachable from every node), or run under Slurm (SLURM_NODEID, SLURM_JOB_NODELIST) or with "
        "NODE_RANK, MASTER_ADDR and MASTER_PORT set"
    )
    if plan.launcher == "ray":
        if plan.host is None and not os.environ.get("RAY_ADDRESS"):
            raise BadInputError(
                f"train.launcher 'ray' with {plan.nodes} nodes needs the Ray cluster's address: "
                f"`bastion train {recipe_arg} --rendezvous HEAD:6379` on the driver (or RAY_ADDRESS)"
            )
        if plan.node_rank:
            raise BadInputError(
                "train.launcher 'ray': only the driver runs `bastion train`; the other machines join the "
                f"cluster with `ray start --address {plan.endpoint}`"
            )
        return
    missing = [name for name, value in (("node rank", plan.node_rank), ("rendezvous", plan.host)) if value is None]
    if missing:
        raise BadInputError(f"train.nodes is {plan.nodes}: this node's {' and '.join(missing)} is not known; {how}")


def launcher_module_args(
    recipe: Recipe, folder: RunFolder, resume_from: Path | None = None, sample_log: Path | None = None
) -> list[str]:
    """``-m train.axolotl_launch CONFIG ...``: what every training process runs."""
    t = recipe.train
    module = [
        "-m",
        "train.axolotl_launch",
        str(folder.axolotl_config),
        "--device",
        t["device"],
        "--distributed",
        t["distributed"],
        "--lengths-out",
        str(folder.train_lengths),
    ]
    if t["num_gpus"]:
        module += ["--num-gpus", str(t["num_gpus"])]
    if resume_from is not None:
        module += ["--resume-from-checkpoint", str(resume_from)]
    if sample_log is not None:
        module += ["--sample-log", str(sample_log)]
    return module


def node_command(plan: NodePlan, rank: int, module: list[str], *, run_id: str) -> list[str]:
    """The command node ``rank`` runs (for Ray: the driver's command)."""
    python = sys.executable
    procs = plan.procs_per_node
    if plan.launcher == "ray" or plan.world_size == 1:
        return [python, *module]
    if plan.launcher == "torchrun":
        run = [python, "-m", "torch.distributed.run", "--nproc_per_node", str(procs)]
        if not plan.multi_node:
            return [*run, "--standalone", *module]
        return [
            *run,
            "--nnodes",
            str(plan.nodes),
            "--node_rank",
            str(rank),
            "--rdzv_backend",
            "c10d",
            "--rdzv_endpoint",
            plan.endpoint,
            "--rdzv_id",
            run_id,
            *module,
        ]
    accelerate = [python, "-m", "accelerate.commands.launch"]
    if not plan.multi_node:
        return [*accelerate, "--num_processes", str(procs), *module]
    return [
        *accelerate,
        "--multi_gpu",
        "--num_machines",
        str(plan.nodes),
        "--num_processes",
        str(plan.world_size),
        "--machine_rank",
        str(rank),
        "--main_process_ip",
        plan.host or PLACEHOLDER_HOST,
        "--main_process_port",
        str(plan.port),
        *module,
    ]


def accelerate_config(plan: NodePlan, rank: int) -> dict[str, object]:
    """The accelerate config file of node ``rank`` (``accelerate launch --config_file``), equal to its flags."""
    return {
        "compute_environment": "LOCAL_MACHINE",
        "distributed_type": "MULTI_GPU",
        "num_machines": plan.nodes,
        "num_processes": plan.world_size,
        "machine_rank": rank,
        "main_process_ip": plan.host or PLACEHOLDER_HOST,
        "main_process_port": plan.port,
        "rdzv_backend": "static",
        "same_network": True,
    }


def axolotl_cli_command(plan: NodePlan, rank: int, config: Path, run_id: str) -> list[str]:
    """The same node's command with Axolotl's own CLI (``axolotl train CONFIG --launcher ... -- ...``)."""
    base = ["axolotl", "train", str(config)]
    if plan.launcher == "ray":
        return [*base, "--use-ray", "--ray-num-workers", str(plan.world_size)]
    if plan.world_size == 1:
        return [*base, "--launcher", "python"]
    if plan.launcher == "torchrun":
        extra = ["--nproc_per_node", str(plan.procs_per_node)]
        if plan.multi_node:
            extra += ["--nnodes", str(plan.nodes), "--node_rank", str(rank), "--rdzv_backend", "c10d"]
            extra += ["--rdzv_endpoint", plan.endpoint, "--rdzv_id", run_id]
        return [*base, "--launcher", "torchrun", "--", *extra]
    extra = ["--num_processes", str(plan.world_size)]
    if plan.multi_node:
        extra += ["--num_machines", str(plan.nodes), "--machine_rank", str(rank)]
        extra += ["--main_process_ip", plan.host or PLACEHOLDER_HOST, "--main_process_port", str(plan.port)]
    return [*base, "--launcher", "accelerate", "--", *extra]


def ray_cluster_commands(plan: NodePlan) -> list[tuple[str, list[str]]]:
    """``ray start`` on each machine: the head on node 0, the others joining it."""
    gpus = ["--num-gpus", str(plan.procs_per_node)]
    out = [("node 0 (Ray head)", ["ray", "start", "--head", "--port", str(plan.port), *gpus])]
    out += [(f"node {r}", ["ray", "start", "--address", plan.endpoint, *gpus]) for r in range(1, plan.nodes)]
    return out


def ray_settings(plan: NodePlan) -> dict[str, object]:
    """Axolotl's Ray keys: one worker (one GPU) per training process."""
    return {"use_ray": True, "ray_num_workers": plan.world_size, "resources_per_worker": {"GPU": 1}}


def dry_run_text(plan: NodePlan, module: list[str], config: Path, *, run_id: str) -> str:
    """What --dry-run prints about launching: every node's exact command, and the equivalents."""
    lines = [
        f"# launch: {plan.nodes} node(s) x {plan.procs_per_node} process(es) = {plan.world_size}, "
        f"launcher {plan.launcher}" + (f", rendezvous {plan.endpoint}" if plan.multi_node else "")
    ]
    if plan.multi_node and plan.host is None:
        lines.append(f"# {PLACEHOLDER_HOST}: node 0's address (not given: --rendezvous HOST:PORT or the environment)")
    if plan.launcher == "ray":
        env = f"RAY_ADDRESS={plan.endpoint} " if plan.multi_node else ""
        for label, command in ray_cluster_commands(plan) if plan.multi_node else []:
            lines.append(f"# {label}:\n{shlex.join(command)}")
        driver = shlex.join(node_command(plan, 0, module, run_id=run_id))
        lines.append(f"# driver (any machine that reaches the cluster; it needs no GPU):\n{env}{driver}")
        lines.append(f"# the same with Axolotl's CLI:\n{shlex.join(axolotl_cli_command(plan, 0, config, run_id))}")
        return "\n".join(lines) + "\n"
    for rank in range(plan.nodes):
        label = f"node {rank}" + (" (this node)" if plan.multi_node and rank == plan.node_rank else "")
        lines.append(f"# {label}:\n{shlex.join(node_command(plan, rank, module, run_id=run_id))}")
        if plan.multi_node:
            lines.append(f"#   with Axolotl's CLI: {shlex.join(axolotl_cli_command(plan, rank, config, run_id))}")
            if plan.launcher == "accelerate":
                flat = ", ".join(f"{k}: {v}" for k, v in accelerate_config(plan, rank).items())
                lines.append(f"#   as an accelerate config file: {{{flat}}}")
    return "\n".join(lines) + "\n"
