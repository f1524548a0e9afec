"""assess(): every quality column for a list of requests (the analyzer's one entry into this package).

Static checks run first for every request, then the code tests (child processes, a few at a time),
then BARTScore grouped by checkpoint (one model load per checkpoint, both directions in one sorted
pass). One bad request, a missing checkpoint or a crashed test never stops the others.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from analyzer.quality import code_checks, reference as refm, sandbox, scorers, suite_answers, text as textm
from analyzer.quality.options import QualityOptions
from shared.logs import get_logger
from shared.tasks import is_known_task, unknown_task_note

log = get_logger("quality")

BART_COLUMNS = ("bartscore", "bartscore_p", "bartscore_r", "bartscore_f", "bartscore_model", "bartscore_error")
CODE_COLUMNS = ("code_found", "code_parses", "code_symbols_ok", "code_symbols_missing", "code_mentions_complexity",
                "code_tests_passed", "code_tests_error", "code_tests_sandbox", "code_tests_skipped")
TEXT_COLUMNS = ("len_chars", "len_tokens", "distinct_1", "distinct_2", "distinct_3", "repetition_rate")
REFERENCE_COLUMNS = ("chrf", "rouge_l")
SUITE_COLUMNS = ("correct", "correct_strict", "extracted_answer")
EXTRACTED_CHARS = 2000  # the extracted answer kept in results.csv (a HumanEval program can be long)
# quality_basis names what quality_score was computed from: one of BASES (None when there is no score).
BASES = tuple(scorers.SCORERS)
COLUMNS = BART_COLUMNS + CODE_COLUMNS + TEXT_COLUMNS + ("text_lang", "quality_score", "quality_error") \
    + REFERENCE_COLUMNS + ("quality_basis",) + SUITE_COLUMNS

# Loaded scorers, kept for the life of the process: the analyzer may call assess() more than once.
_SCORERS: dict[tuple, object] = {}


def _empty_row() -> dict:
    return dict.fromkeys(COLUMNS)


def _static(req: dict, row: dict) -> dict | None:
    """Fill text and static code columns; return the pending code-test job, if any."""
    answer = textm.strip_thinking(req.get("text"))  # defensive: the thinking must never be scored
    row.update(textm.text_stats(answer))
    reference = req.get("reference")
    lang = req.get("lang") or textm.detect_lang(reference or answer)
    if lang not in (None, "en", "zh"):
        raise ValueError(f"lang must be 'en', 'zh' or None, got {lang!r}; fix the case's 'lang' field")
    row["text_lang"] = lang
    if _suite_kind(req) in ("humaneval", "gsm8k", "choice"):
        return _suite_static(req, answer, row)
    if req.get("task") != "code":
        return None
    expect = code_checks.resolve_expect(req.get("expect"), req.get("prompt"))
    code = code_checks.extract_code(answer, expect.entry)
    row["code_found"] = code is not None
    row["code_parses"] = code is not None and code_checks.parses(code)
    if expect.symbols:
        missing = code_checks.missing_symbols(code or "", expect.symbols)
        row["code_symbols_ok"] = not missing
        row["code_symbols_missing"] = ",".join(missing)
    if expect.complexity:  # a check the case never asked for must not count (quality_score skips None)
        row["code_mentions_complexity"] = code_checks.mentions_complexity(answer, expect.complexity)
    if expect.tests:
        if code is None:
            row["code_tests_passed"], row["code_tests_error"] = False, "no code found in the answer"
        elif not row["code_parses"]:
            row["code_tests_passed"], row["code_tests_error"] = False, "the code does not parse"
        else:
            return {"code": code, "tests": expect.tests, "entry": expect.entry}
    return None


def _suite_kind(req: dict) -> str | None:
    return (req.get("suite_data") or {}).get("kind") if isinstance(req.get("suite_data"), dict) else None


def _is_reference_task(req: dict) -> bool:
    """qa, summary and reference-suite items are scored against their reference text."""
    return req.get("task") in ("qa", "summary") or _suite_kind(req) == "reference"


def _suite_static(req: dict, answer: str, row: dict) -> dict | None:
    """A suite item's verdict from the answer (GSM8K, choice), or the HumanEval test job."""
    data = req["suite_data"]
    kind = data["kind"]
    if kind == "humaneval":
        program, _how = suite_answers.humaneval_program(data["prompt"], answer, data["entry_point"])
        row["extracted_answer"] = suite_answers.humaneval_code(answer, data["entry_point"])[:EXTRACTED_CHARS]
        if not suite_answers.parses(program):
            row["code_tests_passed"], row["code_tests_error"] = False, "the program (prompt + answer) does not parse"
            return None
        return {"code": program, "tests": suite_answers.humaneval_tests(data["test"], data["entry_point"]),
                "entry": data["entry_point"]}
    if kind == "gsm8k":
        flexible, strict = suite_answers.gsm8k_flexible(answer), suite_answers.gsm8k_strict(answer)
        row["extracted_answer"] = flexible
        row["correct"] = flexible is not None and flexible == data["target"]
        row["correct_strict"] = strict is not None and strict == data["target"]
    elif kind == "choice":
        letter = suite_answers.extract_choice(answer, int(data.get("n_options") or 4))
        row["extracted_answer"] = letter
        row["correct"] = letter is not None and letter == data["answer"]
    return None


def _run_code_tests(jobs: dict[str, dict], results: dict[str, dict], opts: QualityOptions, progress: bool) -> None:
    if not jobs:
        return
    if not opts.run_code_tests:
        for rid in jobs:
            results[rid]["code_tests_error"] = "not run (run_code_tests is off)"
        return
    choice = sandbox.sandbox_choice(opts.unsafe_code_tests_without_sandbox)
    if choice.kind == sandbox.SKIPPED:  # never run model code unsandboxed unless the user said so
        for rid in jobs:
            results[rid]["code_tests_sandbox"], results[rid]["code_tests_skipped"] = sandbox.SKIPPED, choice.reason
        return
    workers = max(1, min(4, (os.cpu_count() or 2) // 2))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {rid: pool.submit(sandbox.run_tests, job["code"], job["tests"], job["entry"], opts.code_timeout_s,
                                    choice=choice)
                   for rid, job in jobs.items()}
        items = futures.items()
        if progress:
            from tqdm import tqdm

            items = tqdm(items, desc="code tests", unit="req")
        for rid, future in items:
            try:
                outcome = future.result()
                results[rid]["code_tests_passed"], results[rid]["code_tests_error"] = outcome.passed, outcome.error
                results[rid]["code_tests_sandbox"], results[rid]["code_tests_skipped"] = outcome.sandbox, outcome.skipped
            except Exception as exc:  # noqa: BLE001 - e.g. the interpreter could not start
                results[rid]["code_tests_passed"] = None
                results[rid]["code_tests_error"] = f"sandbox failed: {type(exc).__name__}: {exc}"
                log.warning("code_tests_failed", rid=rid, error=str(exc))


def _scorer(checkpoint: str, opts: QualityOptions):
    from analyzer.quality.bartscore import BARTScorer

    key = (checkpoint, opts.device, opts.max_length, opts.batch_size)
    if key not in _SCORERS:
        _SCORERS[key] = BARTScorer(checkpoint=checkpoint, device=opts.device, max_length=opts.max_length,
                                   batch_size=opts.batch_size)
    return _SCORERS[key]


def _bartscore(jobs: dict[str, tuple[str, str, str]], results: dict[str, dict], opts: QualityOptions,
               progress: bool) -> None:
    from analyzer.quality.bartscore import BartScoreUnavailable

    by_checkpoint: dict[str, list[str]] = {}
    for rid, (checkpoint, _ref, _hyp) in jobs.items():
        by_checkpoint.setdefault(checkpoint, []).append(rid)
    unavailable: dict[str, str] = {}  # checkpoint -> why; said once for the batch, after the loop
    for checkpoint, rids in by_checkpoint.items():
        for rid in rids:
            results[rid]["bartscore_model"] = checkpoint
        try:
            scorer = _scorer(checkpoint, opts)
        except Exception as exc:  # noqa: BLE001 - BartScoreUnavailable, or e.g. torch missing, CUDA broken
            message = str(exc) if isinstance(exc, BartScoreUnavailable) else \
                f"BARTScore could not start with '{checkpoint}': {type(exc).__name__}: {exc}"
            unavailable[checkpoint] = message
            for rid in rids:
                results[rid]["bartscore_error"] = message
            continue
        refs = [jobs[rid][1] for rid in rids]
        hyps = [jobs[rid][2] for rid in rids]
        try:
            triples = list(zip(*scorer.score_prf(refs, hyps, progress=progress)))
        except Exception as exc:  # noqa: BLE001 - e.g. out of memory on one long pair: retry one by one
            log.warning("bartscore_batch_failed", checkpoint=checkpoint, error=str(exc))
            _release_gpu_memory()
            triples = []
            for ref, hyp in zip(refs, hyps):
                try:
                    p, r, f = scorer.score_prf([ref], [hyp], batch_size=1)
                    triples.append((p[0], r[0], f[0]))
                except Exception as one_exc:  # noqa: BLE001
                    triples.append(f"{type(one_exc).__name__}: {one_exc}")
        _store_triples(results, rids, triples)
    if unavailable:
        # a warning, not an error: the batch is scored by chrF instead and the report says so
        log.warning("bartscore_unavailable", checkpoints=list(unavailable),
                    requests=sum(len(by_checkpoint[c]) for c in unavailable),
                    effect="QA/summary scored by chrF / 100 (quality_basis chrf)",
                    why=next(iter(unavailable.values())).split(" Fix: ")[0],
                    fix="python -m analyzer.quality.fetch_checkpoint CHECKPOINT on a machine with network, or "
                        "python -m analyzer --no-bart (collector: --analyzer-args \"--no-bart\")")


def _store_triples(results: dict[str, dict], rids: list[str], triples: list) -> None:
    for rid, triple in zip(rids, triples):
        if isinstance(triple, str):
            results[rid]["bartscore_error"] = f"BARTScore failed: {triple}"
            continue
        p, r, f = triple
        row = results[rid]
        row["bartscore"], row["bartscore_p"], row["bartscore_r"], row["bartscore_f"] = p, p, r, f


def _release_gpu_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # after an out-of-memory, before retrying pair by pair


def _final_score(req: dict, row: dict) -> tuple[float | None, str | None]:
    """(quality_score, quality_basis) by the task's registered rule (scorers.py). Reference tasks:
    BARTScore where it was computed, else chrF / 100."""
    task = req.get("task")
    kind = _suite_kind(req)
    if kind == "humaneval":  # pass@1 of this sample: the problem's own tests; None when they could not run
        row["correct"] = row["code_tests_passed"]
        return scorers.score("tests_passed", req, row) if row["correct"] is not None else (None, None)
    if kind == "gsm8k":
        return scorers.score("exact_match", req, row)
    if kind == "choice":
        return scorers.score("choice_match", req, row)
    if _is_reference_task(req):
        if not (req.get("reference") or "").strip():
            return None, None
        if row["len_chars"] == 0:
            return 0.0, None  # the basis follows the task's other answers: _empty_answer_basis
        if row["bartscore_f"] is not None:
            return scorers.score("bartscore", req, row)
        return scorers.score("chrf", req, row)
    if task == "code":
        return scorers.score("code_checks", req, row)
    if task == "creative":
        return scorers.score("diversity", req, row)
    return None, None


def _reference_metrics(jobs: dict[str, tuple[str, str, str | None]], results: dict[str, dict]) -> str | None:
    """chrF and ROUGE-L for every request with a reference; the reason when the libraries are missing."""
    if not jobs:
        return None
    missing = refm.available()
    if missing:
        log.error("reference_metrics_unavailable", requests=len(jobs), error=missing)
        return missing
    for rid, (reference, answer, lang) in jobs.items():
        try:
            results[rid]["chrf"] = refm.chrf(answer, reference)
            results[rid]["rouge_l"] = refm.rouge_l(answer, reference, lang)
        except Exception as exc:  # noqa: BLE001 - one odd text must not stop the batch
            results[rid]["quality_error"] = f"chrF/ROUGE-L failed: {type(exc).__name__}: {exc}"
    return None


def _empty_answer_basis(results: dict[str, dict], by_rid: dict[str, dict]) -> None:
    """An empty answer scores 0 on the basis its task's other answers in that language were scored on
    (BARTScore when its checkpoint ran for them), so one empty answer never splits a task's basis."""
    seen: dict[tuple, set] = {}
    for rid, req in by_rid.items():
        row = results[rid]
        if row["quality_basis"] and row["len_chars"]:
            seen.setdefault((req.get("task"), row["text_lang"]), set()).add(row["quality_basis"])
    for rid, req in by_rid.items():
        row = results[rid]
        if _is_reference_task(req) and row["quality_score"] == 0.0 and row["quality_basis"] is None:
            bases = seen.get((req.get("task"), row["text_lang"]), set())
            row["quality_basis"] = "bartscore" if bases == {"bartscore"} else "chrf"


def assess(requests: list[dict], options: QualityOptions | None = None, progress: bool = False) -> dict[str, dict]:
    """Score every request; returns {rid: {column: value}}. Never raises for one bad request.

    Every row carries every name in COLUMNS; None = not applicable or not available. A request that
    could not be scored at all has ``quality_error`` set."""
    opts = options or QualityOptions()
    results: dict[str, dict] = {}
    code_jobs: dict[str, dict] = {}
    bart_jobs: dict[str, tuple[str, str, str]] = {}
    ref_jobs: dict[str, tuple[str, str, str | None]] = {}
    by_rid: dict[str, dict] = {}
    items = enumerate(requests)
    if progress:
        from tqdm import tqdm

        items = tqdm(items, total=len(requests), desc="quality checks", unit="req")
    for index, req in items:
        rid = req.get("rid") if isinstance(req, dict) else None
        rid = str(rid) if rid is not None else f"#{index}"
        row = results[rid] = _empty_row()
        if not isinstance(req, dict):
            row["quality_error"] = f"request #{index} is a {type(req).__name__}, not a mapping"
            continue
        by_rid[rid] = req
        try:
            job = _static(req, row)
            if job:
                code_jobs[rid] = job
            reference = (req.get("reference") or "").strip()
            if reference:
                answer = textm.strip_thinking(req.get("text"))
                ref_jobs[rid] = (reference, answer, req.get("lang") or textm.detect_lang(reference))
                if not opts.enable_bart or not _is_reference_task(req):
                    pass  # columns stay empty: only qa and summary are scored by BARTScore
                elif not answer:
                    row["bartscore_error"] = "the answer is empty: nothing to score"
                else:
                    # The checkpoint follows the reference's language (a Chinese BART for Chinese).
                    lang = req.get("lang") or textm.detect_lang(reference)
                    bart_jobs[rid] = (opts.checkpoint_for(lang), reference, answer)
        except Exception as exc:  # noqa: BLE001 - one bad request must not stop the batch
            row["quality_error"] = f"{type(exc).__name__}: {exc}"
            log.warning("quality_request_failed", rid=rid, error=row["quality_error"])
    _run_code_tests(code_jobs, results, opts, progress)
    reference_problem = _reference_metrics(ref_jobs, results)
    if bart_jobs:
        _bartscore(bart_jobs, results, opts, progress)
    for rid, req in by_rid.items():
        row = results[rid]
        if row["quality_error"]:
            continue
        try:
            row["quality_score"], row["quality_basis"] = _final_score(req, row)
        except Exception as exc:  # noqa: BLE001
            row["quality_error"] = f"{type(exc).__name__}: {exc}"
            continue
        if row["quality_score"] is None and not is_known_task(req.get("task")):
            row["quality_error"] = unknown_task_note(str(req.get("task") or ""))
        elif row["quality_score"] is None and rid in ref_jobs:
            # say why: neither BARTScore nor chrF could be computed for this reference
            row["quality_error"] = "; ".join(x for x in (row["bartscore_error"], reference_problem) if x) or None
    _empty_answer_basis(results, by_rid)
    return results
