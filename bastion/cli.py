"""The ``bastion`` command line: validate, one command per stage, all, demo, serve, chat."""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

import click

from bastion.errors import BastionError
from bastion.logs import setup_logging
from bastion.runner import STAGES
from bastion.stage import Stage

log = logging.getLogger("bastion")

RECIPE_HELP = "Recipe file, or a name under recipes/ (e.g. llama31-8b.yaml)."


class BastionGroup(click.Group):
    """Maps BastionError to its exit code with a one-paragraph message and no traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BastionError as exc:
            _report_error(ctx, str(exc))
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            log.error("interrupted")
            sys.exit(130)
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit):
            raise
        except Exception as exc:  # unexpected: say what and how to see more
            if ctx.obj and ctx.obj.get("debug"):
                raise
            _report_error(ctx, f"unexpected error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)")
            sys.exit(1)


def run() -> None:
    """The console entry point: run the CLI, then exit without tearing the interpreter down.

    Once torch and transformers are loaded, Python's own shutdown spends 1-1.6 s freeing some 5,000
    modules one by one. When no other thread is still running, the exit handlers run (logging,
    temporary files), the streams are flushed and the process ends at once with the same status.
    """
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    else:
        code = 0
    if isinstance(code, str):
        click.echo(code, err=True)
        code = 1
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)
    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)
    if run_exit_handlers is None:
        sys.exit(code)
    run_exit_handlers()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


def _report_error(ctx: click.Context, message: str) -> None:
    """Errors go to stderr as plain text (not wrapped by the log formatter), or as JSON with --log-json."""
    if ctx.obj and ctx.obj.get("log_json"):
        log.error("%s", message)
    else:
        from bastion.logs import redact

        click.echo(f"error: {redact(message)}", err=True)


@click.group(cls=BastionGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Bastion's own debug logging (libraries stay quiet).")
@click.option("--log-json", is_flag=True, help="Log one JSON object per line (for log collectors).")
@click.option("--debug", is_flag=True, help="Debug logging of everything (libraries too); tracebacks.")
@click.option(
    "--runs-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="BASTION_RUNS",
    help="Folder of the run folders (default: ./runs; env BASTION_RUNS).",
)
@click.version_option(package_name="bastion", prog_name="bastion")
@click.pass_context
def main(ctx: click.Context, verbose: bool, log_json: bool, debug: bool, runs_dir: Path | None) -> None:
    """Bastion: turn documentation into a domain-expert LLM from one YAML recipe.

    Stages: harvest -> train -> eval -> export -> eval-gguf. Each reads the recipe and the earlier
    stages' files in runs/<name>/ and can be rerun alone.
    """
    setup_logging(verbose=verbose, log_json=log_json, debug=debug)
    if runs_dir is not None:
        os.environ["BASTION_RUNS"] = str(runs_dir.resolve())  # bastion.paths.runs_dir and child processes
    ctx.ensure_object(dict).update(debug=debug, log_json=log_json)


def _load(recipe: str, stages: list[Stage] | None = None) -> Any:
    """Load and validate a recipe, with the checks of ``stages`` (default: every stage's)."""
    from bastion.recipe import load_recipe

    return load_recipe(recipe, checks=[s.check for s in (STAGES if stages is None else stages) if s.check])


def _folder(recipe: Any) -> Any:
    from bastion.run_folder import RunFolder

    return RunFolder.for_recipe(recipe)


@main.command()
@click.argument("recipe")
def validate(recipe: str) -> None:
    """Check RECIPE against the schema and cross-field rules; list every problem at once."""
    r = _load(recipe)
    log.info("%s: valid recipe '%s' (sha256 %s)", r.path, r.name, r.sha256[:12])


def _stage_command(stage: Stage) -> click.Command:
    """``bastion <stage> RECIPE [options]`` for one stage."""

    def command(recipe: str, **options: Any) -> None:
        from bastion.runner import run_stage

        r = _load(recipe, [stage])
        run_stage(stage, r, _folder(r), **options)

    params: list[click.Parameter] = [click.Argument(["recipe"])]
    params += [
        click.Option([option.flag], is_flag=True, help=option.help)
        if option.type is None
        else click.Option([option.flag], type=option.type, default=None, help=option.help, envvar=list(option.envvar))
        for option in stage.options
    ]
    return click.Command(stage.name, callback=command, params=params, help=stage.help)


for _stage in STAGES:
    main.add_command(_stage_command(_stage))


@main.command()
@click.argument("recipe")
@click.option("--quant", default=None, help="Which exported GGUF (q4_k_m, q8_0, f16...); default: the Modelfile's.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback by default).")
@click.option("--port", default=8000, show_default=True, type=int)
def serve(recipe: str, quant: str | None, host: str, port: int) -> None:
    """Serve RECIPE's exported GGUF with llama-cpp-python's OpenAI-compatible server."""
    from bastion.run_folder import default_gguf_kind
    from export.runtime import serve as run_server
    from export.runtime import verified_gguf

    r = _load(recipe, [])
    gguf = verified_gguf(_folder(r), quant or default_gguf_kind(r))
    sys.exit(
        run_server(
            gguf,
            host=host,
            port=port,
            n_ctx=r.export["ollama"]["num_ctx"],
            alias=r.export["ollama"]["model_name"] or r.name,
        )
    )


@main.command()
@click.argument("recipe")
@click.option("--quant", default=None, help="Which exported GGUF (q4_k_m, q8_0, f16...); default: the Modelfile's.")
def chat(recipe: str, quant: str | None) -> None:
    """Chat with RECIPE's exported GGUF in the terminal (the recipe's system prompt, the GGUF's template)."""
    from bastion.run_folder import default_gguf_kind
    from export.runtime import chat as run_chat
    from export.runtime import verified_gguf

    r = _load(recipe, [])
    gguf = verified_gguf(_folder(r), quant or default_gguf_kind(r))
    run_chat(gguf, r.system_prompt, n_ctx=r.export["ollama"]["num_ctx"], temperature=r.export["ollama"]["temperature"])


FORCE_HELP = "Rerun this stage even if its inputs are unchanged (repeatable; 'all' reruns every stage)."
STAGE_CHOICES = click.Choice([stage.name for stage in STAGES] + ["all"])


@main.command(name="all")
@click.argument("recipe")
@click.option("--force", multiple=True, type=STAGE_CHOICES, help=FORCE_HELP)
def all_stages(recipe: str, force: tuple[str, ...]) -> None:
    """Run every stage on RECIPE in order, skipping stages whose inputs are unchanged."""
    _run_all(recipe, force)


@main.command()
@click.option("--force", multiple=True, type=STAGE_CHOICES, help=FORCE_HELP)
def demo(force: tuple[str, ...]) -> None:
    """Run every stage on recipes/tiny-cpu.yaml: a tiny model, offline, on CPU."""
    import time

    start = time.monotonic()
    _run_all("tiny-cpu.yaml", force)
    log.info("demo finished in %.0f s", time.monotonic() - start)


def _run_all(recipe: str, force: tuple[str, ...] = ()) -> None:
    from bastion.runner import run_all

    r = _load(recipe)
    folder = _folder(r)
    outcome = run_all(r, folder, force=force)
    for stage, status in outcome.items():
        log.info("  %-9s %s", stage, status)
    where = {
        "data report": folder.quality_md,
        "eval report": folder.eval_report_md,
        "GGUF eval": folder.gguf_eval_report_md,
        "Modelfile": folder.modelfile,
        "model card": folder.model_card,
    }
    for label, path in where.items():
        if path.exists():
            log.info("%-12s %s", label, path)
    for gguf in folder.ggufs():
        log.info("%-12s %s", "GGUF", gguf)
    log.info("run folder:  %s", folder.root)
    sentence = _learning_sentence(folder)
    if sentence:
        log.info("%s", sentence)


def _learning_sentence(folder: Any) -> str | None:
    """What the chain taught, in one sentence: held-out bits per byte base -> tuned, and the GGUF's figure."""
    import json

    from evals.compare import domain_sentence

    if not folder.eval_report_json.is_file():
        return None
    sentence = domain_sentence(json.loads(folder.eval_report_json.read_text(encoding="utf-8")))
    if sentence and folder.gguf_eval_report_json.is_file():
        gguf = json.loads(folder.gguf_eval_report_json.read_text(encoding="utf-8"))
        for row in (gguf.get("domain") or {}).values():
            b = row["bits_per_byte"]
            ratio = f" (x{b['ratio_to_tuned']:.4f} of the tuned model)" if b.get("ratio_to_tuned") else ""
            sentence += f"; GGUF {gguf['gguf']}: {b['tuned']:.3f}{ratio}"
    return sentence


if __name__ == "__main__":
    main()
