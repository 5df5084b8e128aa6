"""Synth against scripted OpenAI-compatible teachers on 127.0.0.1: every gate and retry path, the
cache (0 calls on a rerun), byte-identical reruns, two servers with one failing, a teacher that stays
down, kill-and-resume, both structured-output forms, held-out pages, API keys, the recipe checks."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, record_done
from synth_helpers import NAME, harvest_into, make_run, scripted_synth

import synth
from bastion.decontam import DEFAULT_BANKS_DIR, eval_bank_files, read_bank, record_text
from bastion.errors import MissingResourceError, ToolError
from bastion.recipe import RecipeError, load_recipe
from bastion.run_folder import RunFolder
from bastion.runner import check_upstream, run_stage, stage_named
from bench.scripted_teacher import Prompt, Reply, ScriptedTeacher, good, good_pair, verdict
from synth import prompts
from synth.serve import validate_vllm_command, vllm_command

BANK_QUESTION = next(read_bank(DEFAULT_BANKS_DIR / "mcq.jsonl"))["question"]
SYNTH = stage_named("synth")


@pytest.fixture(scope="module")
def harvested(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return harvest_into(tmp_path_factory.mktemp("synth-harvest"))


def mixed(p: Prompt, t: ScriptedTeacher) -> Reply:
    """Good pairs, and every misbehaviour, chosen by the request (the same on every run)."""
    if p.judge:
        return Reply(body=verdict(p))
    n = t.arrival(p)
    h = int(p.ident[:8], 16) % 12
    pair = good_pair(p)
    if h == 0:
        return Reply(body=pair | {"evidence": ["this sentence was never written in the chunk at all"]})
    if h == 1:
        return Reply(body='{"question": "unterminated')
    if h == 2 and not p.retry:
        return Reply(body="Sure! Here is your pair: question ... answer ...")
    if h == 3 and n == 1:
        return Reply(status=429, headers={"Retry-After": "0.3"})
    if h == 4 and n == 1:
        return Reply(status=500)
    if h == 5 and n == 1:
        return Reply(body=pair, delay=1.2)  # slower than the client's 0.5 s timeout
    if h == 6 and p.kind not in prompts.UNQUOTED_TYPES:
        return Reply(body=pair | {"answer": "Quantum blockchain firewalls entangle kerberized satellites nightly."})
    if h == 7:
        return Reply(body=pair | {"question": "Which service records the API calls made in an account?"})
    if h == 8:
        return Reply(body=pair | {"question": BANK_QUESTION})
    return Reply(body=pair)


def outputs(folder: RunFolder) -> tuple[bytes, bytes]:
    return folder.synth_pairs.read_bytes(), folder.synth_provenance.read_bytes()


def test_every_gate_and_retry_path_then_a_rerun_from_the_cache(harvested: Path, tmp_path: Path) -> None:
    with ScriptedTeacher(mixed) as teacher:
        recipe, folder, _ = make_run(harvested, tmp_path, scripted_synth(teacher.url))
        details = run_stage(SYNTH, recipe, folder)
        report = json.loads(folder.synth_report_json.read_text())
        rejected = report["funnel"]["rejected"]
        assert {"invalid_json"} <= set(rejected["parsed"])
        assert {"quote_not_in_chunk", "unsupported_answer"} <= set(rejected["grounded"])
        assert "exact_duplicate_question" in rejected["deduplicated"]
        assert rejected["decontaminated"] == {"eval_overlap": rejected["decontaminated"]["eval_overlap"]}
        counts = report["funnel"]["counts"]
        assert counts["requested"] == 90 and counts["kept"] == details["pairs"] > 30
        assert [counts[s] for s in report["funnel"]["steps"]] == sorted(counts.values(), reverse=True)
        retries = report["cost"]["teacher"]["teacher"]["retries"]
        assert retries.get("http_429", 0) >= 1 and retries.get("http_5xx", 0) >= 1 and retries.get("timeout", 0) >= 1
        # Retry-After: 0.3 s honoured although the backoff is 0.01 s
        waits = [t[1] - t[0] for t in teacher.times.values() if len(t) > 1]
        assert max(waits) >= 0.29
        # a reply that did not parse was asked for again, and the retry's pair was kept
        retried = [b for b in teacher.bodies if len(b["messages"]) > 2]
        assert retried and "Your reply was not valid" in retried[0]["messages"][-1]["content"]
        assert report["coverage"]["cloudsec-mini"]["covered"] > 0
        first = outputs(folder)
        calls = teacher.requests
        # a rerun (forced) asks the teacher nothing and writes the same bytes
        run_stage(SYNTH, recipe, folder)
        assert teacher.requests == calls
        assert outputs(folder) == first
        again = json.loads(folder.synth_report_json.read_text())
        assert again["cost"]["cache_hits"] == 90 and again["cost"]["http_requests"] == 0
    # the records are Alpaca, and provenance lines up with them
    records = [json.loads(x) for x in first[0].decode().splitlines()]
    prov = [json.loads(x) for x in first[1].decode().splitlines()]
    assert len(records) == len(prov) and all(set(r) == {"instruction", "input", "output"} for r in records)
    pairs = [p for p in prov if p["kind"] == "pair"]
    assert len(pairs) == details["pairs"] and all(p["teacher"]["model"] == "scripted-teacher" for p in pairs)
    assert {p["kind"] for p in prov} == {"pair", "extractive"}
    # the eval's own decontamination finds nothing left to exclude
    from evals.decontam import contaminated

    docs = [d for path in eval_bank_files(recipe.eval, recipe.resolve_path) for d in read_bank(path)]
    assert contaminated([record_text(r) for r in records], docs, n=recipe.eval["decontamination_ngram"]) == {}
    manifest = folder.stage_entry("synth")
    assert manifest["status"] == "ok" and manifest["prompt_tokens"] == 0 and manifest["cache_hits"] == 90


def test_two_servers_one_failing_give_the_same_records(harvested: Path, tmp_path: Path) -> None:
    def down(p: Prompt, t: ScriptedTeacher) -> Reply:
        return Reply(status=503)

    with ScriptedTeacher(good) as one, ScriptedTeacher(down) as broken:
        recipe, folder, _ = make_run(harvested, tmp_path / "a", scripted_synth(one.url, chunks=10))
        run_stage(SYNTH, recipe, folder)
        single = outputs(folder)
        recipe, folder, _ = make_run(harvested, tmp_path / "b", scripted_synth([broken.url, one.url], chunks=10))
        run_stage(SYNTH, recipe, folder)
        assert outputs(folder) == single
        usage = json.loads(folder.synth_report_json.read_text())["cost"]["teacher"]["teacher"]
        # each request in flight on it at first tries it (2 retries at most), then it is left out
        assert usage["failovers"] >= 1 and broken.requests <= 3 * 8  # 8 workers
        assert usage["completions"] == 30


def test_a_teacher_that_stays_down_fails_clearly_and_keeps_the_cache(harvested: Path, tmp_path: Path) -> None:
    state = {"up": True}

    def flaky(p: Prompt, t: ScriptedTeacher) -> Reply:
        with t.lock:
            served = t.statuses[200]
        if not state["up"] or served >= 12:
            return Reply(status=503, body={"error": {"message": "overloaded"}})
        return good(p, t)

    with ScriptedTeacher(flaky) as teacher:
        recipe, folder, path = make_run(harvested, tmp_path, scripted_synth(teacher.url, chunks=10))
        env = {**os.environ, "BASTION_RUNS": str(tmp_path / "runs")}
        out = subprocess.run(
            [sys.executable, "-m", "bastion", "synth", str(path)], cwd=REPO, env=env, capture_output=True, text=True
        )
        assert out.returncode == 4, out.stderr
        assert "stayed down" in out.stderr and "Traceback" not in out.stderr
        import sqlite3

        cached = sqlite3.connect(folder.synth_cache).execute("SELECT COUNT(*) FROM replies").fetchone()[0]
        assert 12 <= cached < 30
        served_before = teacher.statuses[200]
        state["up"] = True
        teacher.statuses.clear()
        teacher.statuses[200] = -1000  # back up for good
        out = subprocess.run(
            [sys.executable, "-m", "bastion", "synth", str(path)], cwd=REPO, env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        assert teacher.statuses[200] + 1000 == 30 - cached  # only the missing replies were asked for
        assert served_before >= 12


def test_kill_and_resume_gives_the_records_of_an_uninterrupted_run(harvested: Path, tmp_path: Path) -> None:
    with ScriptedTeacher(mixed, latency=0.03) as teacher:
        recipe, folder, path = make_run(harvested, tmp_path / "whole", scripted_synth(teacher.url, chunks=40))
        run_stage(SYNTH, recipe, folder)
        whole = outputs(folder)
        recipe, folder, path = make_run(harvested, tmp_path / "killed", scripted_synth(teacher.url, chunks=40))
        env = {**os.environ, "BASTION_RUNS": str(tmp_path / "killed" / "runs")}
        command = [sys.executable, "-m", "bastion", "synth", str(path)]
        start = teacher.requests
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while teacher.requests - start < 40 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not folder.synth_pairs.exists()  # nothing half-written
        import sqlite3

        cached = sqlite3.connect(folder.synth_cache).execute("SELECT COUNT(*) FROM replies").fetchone()[0]
        assert 0 < cached < 120
        before = teacher.requests
        out = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert outputs(folder) == whole
        resumed = json.loads(folder.synth_report_json.read_text())["cost"]
        assert resumed["cache_hits"] == cached and teacher.requests - before >= 120 - cached
        lines = folder.synth_pairs.read_text().splitlines()
        assert len(lines) == len(set(lines)) or len(lines) == len(whole[0].decode().splitlines())


def test_both_structured_output_forms(harvested: Path, tmp_path: Path) -> None:
    def llama_cpp_like(p: Prompt, t: ScriptedTeacher) -> Reply:
        form = p.raw["response_format"]
        if form["type"] != "json_object":
            return Reply(status=500, body={"detail": [{"msg": "Input should be 'text' or 'json_object'"}]})
        assert form["schema"]["required"] == ["question", "answer", "evidence"]
        assert "maxLength" not in json.dumps(form["schema"])  # llama.cpp would unroll it into its grammar
        return good(p, t)

    with ScriptedTeacher(llama_cpp_like) as teacher:
        recipe, folder, _ = make_run(harvested, tmp_path / "auto", scripted_synth(teacher.url, chunks=5))
        run_stage(SYNTH, recipe, folder)
        usage = json.loads(folder.synth_report_json.read_text())["cost"]["teacher"]["teacher"]
        assert usage["format_switches"] == 1 and usage["completions"] == 15
        assert teacher.bodies[0]["response_format"]["type"] == "json_schema"
        assert teacher.bodies[0]["response_format"]["json_schema"]["schema"]["required"] == [
            "question",
            "answer",
            "evidence",
        ]
        teacher.bodies.clear()
        extra = "    response_format: json_object\n"
        recipe, folder, _ = make_run(harvested, tmp_path / "fixed", scripted_synth(teacher.url, chunks=5, extra=extra))
        run_stage(SYNTH, recipe, folder)
        assert all(b["response_format"]["type"] == "json_object" for b in teacher.bodies)


def test_heldout_pages_never_reach_the_teacher(harvested: Path, tmp_path: Path) -> None:
    with ScriptedTeacher(good) as teacher:
        recipe, folder, _ = make_run(harvested, tmp_path, scripted_synth(teacher.url, chunks=None, pairs=1))
        held = [json.loads(x) for x in folder.heldout.read_text().splitlines()]
        assert held
        # a record of a held-out page slipped into train.jsonl: synth must still leave it out
        secret = "Held-out marker sentence about bastion host rotation windows that nobody trains on, ever again."
        with folder.train_data.open("a") as f:
            f.write(json.dumps({"instruction": "x", "input": "", "output": secret}) + "\n")
        with folder.sources.open("a") as f:
            f.write(json.dumps({"url": held[0]["url"], "title": "t", "section": "s", "source": "cloudsec-mini"}) + "\n")
        record_done("harvest", recipe, folder)
        run_stage(SYNTH, recipe, folder)
        sent = json.dumps(teacher.bodies)
        assert "Held-out marker sentence" not in sent
        assert all(held[0]["url"] not in json.dumps(b) for b in teacher.bodies)
        report = json.loads(folder.synth_report_json.read_text())
        assert report["chunks"]["heldout_skipped"] == 1
        assert secret not in folder.synth_pairs.read_text()


def test_api_key_only_by_variable_name_and_never_written(harvested: Path, tmp_path: Path) -> None:
    key = "sk-test-" + "Zq9x" * 8
    with ScriptedTeacher(good, api_key=key) as teacher:
        extra = "    api_key_env: BASTION_TEST_TEACHER_KEY\n"
        recipe, folder, path = make_run(harvested, tmp_path, scripted_synth(teacher.url, chunks=5, extra=extra))
        env = {**os.environ, "BASTION_RUNS": str(tmp_path / "runs")}
        env.pop("BASTION_TEST_TEACHER_KEY", None)
        missing = subprocess.run(
            [sys.executable, "-m", "bastion", "synth", str(path)], cwd=REPO, env=env, capture_output=True, text=True
        )
        assert missing.returncode == 3 and "BASTION_TEST_TEACHER_KEY" in missing.stderr
        env["BASTION_TEST_TEACHER_KEY"] = key
        out = subprocess.run(
            [sys.executable, "-m", "bastion", "-v", "--log-json", "synth", str(path)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr
        sent = {k.lower(): v for k, v in teacher.headers_seen[-1].items()}
        assert sent["authorization"] == f"Bearer {key}"
        wrong = subprocess.run(
            [sys.executable, "-m", "bastion", "synth", str(path)],
            cwd=REPO,
            env={**env, "BASTION_TEST_TEACHER_KEY": key + "x"},
            capture_output=True,
            text=True,
        )
        assert wrong.returncode in (0, 4)  # cached: 0 calls; the key is never needed for a cached run
    written = [out.stdout, out.stderr, missing.stderr]
    written += [p.read_bytes().decode("utf-8", "replace") for p in folder.synth_dir.rglob("*") if p.is_file()]
    written.append(folder.manifest_path.read_text())
    assert all(key not in text for text in written)
    # a key pasted where the variable's name belongs is refused by the recipe check
    text = path.read_text().replace(
        "api_key_env: BASTION_TEST_TEACHER_KEY", "api_key_env: sk_live_abc123DEF456ghi789JKL"
    )
    path.write_text(text)
    with pytest.raises(RecipeError, match="never the key itself"):
        load_recipe(path, checks=[c for c in [synth.STAGE.check] if c])


def test_nothing_grounded_fails_clearly_or_falls_back(harvested: Path, tmp_path: Path) -> None:
    def liar(p: Prompt, t: ScriptedTeacher) -> Reply:
        pair = good_pair(p)
        return Reply(
            body=pair
            | {
                "evidence": ["invented evidence that is not in any chunk"],
                "answer": "Zebras guard the perimeter at night.",
            }
        )

    with ScriptedTeacher(liar) as teacher:
        recipe, folder, _ = make_run(harvested, tmp_path / "fail", scripted_synth(teacher.url, chunks=4))
        with pytest.raises(ToolError, match="kept 0 pairs") as err:
            run_stage(SYNTH, recipe, folder)
        assert "quote_not_in_chunk" in str(err.value) or "missing_not_stated" in str(err.value)
        assert not folder.synth_pairs.exists() and (folder.failed_dir("synth")).exists()
        extra = "  fallback_to_extractive: true\n"
        recipe, folder, _ = make_run(harvested, tmp_path / "fallback", scripted_synth(teacher.url, chunks=4) + extra)
        details = run_stage(SYNTH, recipe, folder)
        assert details["fallback_to_extractive"] and details["pairs"] == 0
        prov = [json.loads(x) for x in folder.synth_provenance.read_text().splitlines()]
        assert prov and {p["kind"] for p in prov} == {"extractive"}
        assert "fallback" in folder.synth_report_md.read_text()


def test_the_judge_is_calibrated_then_scores_pairs(harvested: Path, tmp_path: Path) -> None:
    with ScriptedTeacher(mixed) as teacher:
        extra = "  judge:\n    enabled: true\n    min_agreement: 0.5\n"
        recipe, folder, _ = make_run(harvested, tmp_path / "ok", scripted_synth(teacher.url, chunks=10) + extra)
        run_stage(SYNTH, recipe, folder)
        report = json.loads(folder.synth_report_json.read_text())
        judge = report["judge"]
        assert judge["cases"] >= 20 and 0.5 <= judge["agreement"] < 1.0
        assert report["funnel"]["counts"]["judged"] <= report["funnel"]["counts"]["grounded"]
        extra = "  judge:\n    enabled: true\n    min_agreement: 1.0\n"
        recipe, folder, _ = make_run(harvested, tmp_path / "strict", scripted_synth(teacher.url, chunks=10) + extra)
        with pytest.raises(ToolError, match="labelled rubric cases"):
            run_stage(SYNTH, recipe, folder)


def test_train_reads_the_pairs_when_synth_is_enabled(harvested: Path, tmp_path: Path) -> None:
    with ScriptedTeacher(good) as teacher:
        recipe, folder, _ = make_run(harvested, tmp_path, scripted_synth(teacher.url, chunks=3))
        assert folder.training_records(recipe) == folder.synth_pairs
        train = stage_named("train")
        assert "synth" in train.reads_from and train.inputs(recipe, folder) == [folder.synth_pairs]
        with pytest.raises(MissingResourceError, match="synth has not run yet"):
            check_upstream(train, recipe, folder)
        run_stage(SYNTH, recipe, folder)
        check_upstream(train, recipe, folder)  # synth done: train may start
    off = load_recipe(REPO / "recipes" / "tiny-cpu.yaml")
    assert off.data["synth"]["enabled"] is False
    assert RunFolder(tmp_path).training_records(off) == RunFolder(tmp_path).train_data


def test_recipe_checks(harvested: Path, tmp_path: Path) -> None:
    def problems(section: str) -> str:
        path = tmp_path / "r.yaml"
        base = (REPO / "recipes" / "tiny-cpu.yaml").read_text().replace("synth:\n  enabled: false\n", "")
        path.write_text(base + "\nsynth:\n" + section)
        try:
            load_recipe(path, checks=[c for c in [synth.STAGE.check] if c])
        except RecipeError as exc:
            return str(exc)
        return ""

    assert "set teacher.base_url" in problems("  enabled: true\n")
    assert "must sum to 1" in problems(
        "  enabled: true\n  teacher: {base_url: 'http://127.0.0.1:9/v1', model: m}\n  question_types: {factual: 0.5}\n"
    )
    assert "needs the model" in problems("  enabled: true\n  teacher: {serve: {engine: vllm}}\n")
    assert "needs the GGUF" in problems("  enabled: true\n  teacher: {serve: {engine: llama_cpp}}\n")
    assert "not both" in problems(
        "  enabled: true\n  teacher: {base_url: 'http://127.0.0.1:9/v1', serve: {engine: vllm, model: m}}\n"
    )
    assert problems("  enabled: true\n  teacher: {base_url: 'http://127.0.0.1:9/v1', model: m}\n") == ""
    assert problems("  enabled: false\n") == ""


def test_vllm_command_is_rendered_and_validated(harvested: Path, tmp_path: Path) -> None:
    serve = {
        "engine": "vllm",
        "model": "meta-llama/Llama-3.1-70B-Instruct",
        "tensor_parallel_size": 4,
        "gpu_memory_utilization": 0.85,
        "max_model_len": 8192,
        "extra_args": ["--enable-prefix-caching"],
    }
    command = vllm_command(serve, "teacher-70b", port=8123, seed=7)
    assert command[:3] == ["vllm", "serve", "meta-llama/Llama-3.1-70B-Instruct"]
    assert "--tensor-parallel-size" in command and command[command.index("--tensor-parallel-size") + 1] == "4"
    assert command[-1] == "--enable-prefix-caching" and validate_vllm_command(command) == []
    assert validate_vllm_command(["vllm", "serve", "m", "--host", "0.0.0.0"]) != []
    section = "  enabled: true\n  teacher:\n    serve: {engine: vllm, model: meta-llama/Llama-3.1-8B-Instruct}\n"
    recipe, folder, path = make_run(harvested, tmp_path, section)
    dry = subprocess.run(
        [sys.executable, "-m", "bastion", "synth", str(path), "--dry-run"],
        cwd=REPO,
        env={**os.environ, "BASTION_RUNS": str(tmp_path / "runs")},
        capture_output=True,
        text=True,
    )
    assert dry.returncode == 0, dry.stderr
    assert "vllm serve meta-llama/Llama-3.1-8B-Instruct --host 127.0.0.1" in dry.stdout
    if not any((Path(p) / "vllm").exists() for p in os.environ.get("PATH", "").split(os.pathsep)):
        with pytest.raises(MissingResourceError, match="vLLM is not installed"):
            run_stage(SYNTH, recipe, folder)


def test_one_list_per_concept() -> None:
    from bastion.recipe import load_schema
    from evals.tasks.cloudsec.utils import BANK

    assert DEFAULT_BANKS_DIR == BANK
    schema = load_schema()["$defs"]["question_types"]["properties"]
    assert list(schema) == list(prompts.QUESTION_TYPES)
    assert abs(sum(v["default"] for v in schema.values()) - 1) < 1e-9


def test_the_plan_follows_the_shares_and_is_stable() -> None:
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(2000)]
    shares = {k: 0.0 for k in prompts.QUESTION_TYPES} | {"factual": 0.5, "comparison": 0.3, "cannot_answer": 0.2}
    plan = prompts.plan(hashes, shares, ["a", "b"], 3, seed=1)
    got = {k: sum(r.kind == k for r in plan) / len(plan) for k in ("factual", "comparison", "cannot_answer")}
    assert all(abs(got[k] - shares[k]) < 0.03 for k in got)
    assert prompts.plan(hashes[5:9], shares, ["a", "b"], 3, seed=1) == [
        prompts.Request(r.chunk_index - 5, r.slot, r.kind, r.persona) for r in plan[15:27]
    ]
    assert len({r.kind for r in plan[:3]}) > 1 or len({r.kind for r in plan[3:6]}) > 1


def test_name() -> None:
    assert NAME == "synth-test"
