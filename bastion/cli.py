"""The ``bastion`` command line: validate, harvest, train, eval, export, all, demo."""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

import click

from bastion.errors import BastionError
from bastion.logs import setup_logging

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
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.option("--log-json", is_flag=True, help="Log one JSON object per line (for log collectors).")
@click.option("--debug", is_flag=True, help="Show tracebacks of unexpected errors.")
@click.version_option(package_name="bastion", prog_name="bastion")
@click.pass_context
def main(ctx: click.Context, verbose: bool, log_json: bool, debug: bool) -> None:
    """Bastion: turn documentation into a domain-expert LLM from one YAML recipe.

    Stages: harvest -> train -> eval -> export. Each reads the recipe and the previous stage's
    files in runs/<name>/ and can be rerun alone.
    """
    setup_logging(verbose=verbose, log_json=log_json)
    ctx.ensure_object(dict).update(debug=debug, log_json=log_json)


def _load(recipe: str) -> Any:
    from bastion.recipe import load_recipe

    return load_recipe(recipe)


@main.command()
@click.argument("recipe")
def validate(recipe: str) -> None:
    """Check RECIPE against the schema and cross-field rules; list every problem at once."""
    r = _load(recipe)
    log.info("%s: valid recipe '%s' (sha256 %s)", r.path, r.name, r.sha256[:12])


def _stage_command(stage: str, doc: str) -> Callable[..., None]:
    @click.argument("recipe")
    def command(recipe: str, **options: Any) -> None:
        from bastion.manifest import RunFolder
        from bastion.stages import run_stage

        r = _load(recipe)
        run_stage(stage, r, RunFolder.for_recipe(r), **options)

    command.__doc__ = doc
    command.__name__ = stage
    return command


main.command(name="harvest")(
    _stage_command("harvest", "Crawl and read RECIPE's sources into Alpaca JSONL plus a data-quality report.")
)
main.command(name="train")(
    click.option("--dry-run", is_flag=True, help="Print the rendered Axolotl config and launch command; run nothing.")(
        click.option("--resume", is_flag=True, help="Continue from the last checkpoint in runs/<name>/train/output.")(
            _stage_command("train", "Fine-tune RECIPE's base model with Axolotl (QLoRA/LoRA) on the harvested data.")
        )
    )
)
main.command(name="eval")(
    _stage_command(
        "eval", "Evaluate the base and the tuned model with lm-evaluation-harness and report the difference."
    )
)
main.command(name="export")(
    _stage_command("export", "Merge the adapter, convert to GGUF, quantise, verify and write an Ollama Modelfile.")
)


@main.command()
@click.argument("recipe")
@click.option("--quant", default=None, help="Which exported GGUF (q4_k_m, q8_0, f16...); default: the Modelfile's.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback by default).")
@click.option("--port", default=8000, show_default=True, type=int)
def serve(recipe: str, quant: str | None, host: str, port: int) -> None:
    """Serve RECIPE's exported GGUF with llama-cpp-python's OpenAI-compatible server."""
    from bastion.manifest import RunFolder
    from export.runtime import find_gguf
    from export.runtime import serve as run_server

    r = _load(recipe)
    gguf = find_gguf(r, RunFolder.for_recipe(r), quant)
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
    from bastion.manifest import RunFolder
    from export.runtime import chat as run_chat
    from export.runtime import find_gguf

    r = _load(recipe)
    gguf = find_gguf(r, RunFolder.for_recipe(r), quant)
    run_chat(gguf, r.system_prompt, n_ctx=r.export["ollama"]["num_ctx"], temperature=r.export["ollama"]["temperature"])


FORCE_HELP = "Rerun this stage even if its inputs are unchanged (repeatable; 'all' reruns every stage)."
STAGE_CHOICES = click.Choice(["harvest", "train", "eval", "export", "all"])


@main.command(name="all")
@click.argument("recipe")
@click.option("--force", multiple=True, type=STAGE_CHOICES, help=FORCE_HELP)
def all_stages(recipe: str, force: tuple[str, ...]) -> None:
    """Run harvest, train, eval and export on RECIPE in order, skipping stages whose inputs are unchanged."""
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
    from bastion.manifest import RunFolder
    from bastion.stages import run_all

    r = _load(recipe)
    folder = RunFolder.for_recipe(r)
    outcome = run_all(r, folder, force=force)
    for stage, status in outcome.items():
        log.info("  %-8s %s", stage, status)
    where = {
        "data report": folder.root / "data" / "quality.md",
        "eval report": folder.root / "eval" / "report.md",
        "Modelfile": folder.root / "export" / "Modelfile",
        "model card": folder.root / "export" / "README.md",
    }
    ggufs = sorted((folder.root / "export").glob("*.gguf"))
    for label, path in where.items():
        if path.exists():
            log.info("%-12s %s", label, path)
    for gguf in ggufs:
        log.info("%-12s %s", "GGUF", gguf)
    log.info("run folder:  %s", folder.root)


if __name__ == "__main__":
    main()
