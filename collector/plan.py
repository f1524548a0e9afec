"""The request matrix (pure): deterministic request ids, per-request parameters, resume filtering."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from collector.backends import Params, get
from collector.load import Level
from shared.messages import REQ_END, REQ_START

PASS_AT_K_TEMPERATURE = 0.8  # several samples of one suite item must differ (the HumanEval paper's setting)


@dataclass(frozen=True)
class Job:
    rid: str
    model: str
    case: int          # index into batch.start.cases
    task: str
    load: str
    run: int           # 1-based repetition number; 0 for the warm-up
    warmup: bool = False
    level: Level | None = None  # the load level it runs at (collector.load); None: the batch's one level

    @property
    def sweep_level(self) -> int | float | None:
        return self.level.number if self.level is not None else None


def make_rid(batch: str, model: str, case: int, task: str, load: str, run: int | str,
             level: Level | None = None) -> str:
    """``batch/model/case/load/run`` (a sweep: ``batch/model/case/load/c4/run``): the same inputs
    always give the same id (resume relies on it)."""
    lv = f"{level.label}/" if level is not None and level.swept else ""
    return f"{batch}/{model}/{case:03d}-{task}/{load}/{lv}{run}"


def warmup_rid(batch: str, model: str, level: Level | None = None) -> str:
    lv = f"{level.label}/" if level is not None and level.swept else ""
    return f"{batch}/{model}/warmup/-/{lv}0"


def model_id(name: str, backend: str) -> str:
    """One identity per model: Ollama treats ``x`` and ``x:latest`` as the same model."""
    if name.strip() == "*":  # a dry run's stand-in for "all" when the server cannot be asked
        return "*"
    return get(backend).model_id(name)


def case_models(case: dict[str, Any], batch_models: list[str], cli_models: bool, all_models: list[str],
                backend: str = "ollama") -> list[str]:
    """Models a case runs on: explicit --models win, else the case's own list, else the batch list;
    "all" is every model the server lists. Names are normalised and de-duplicated."""
    spec: Any = batch_models if cli_models or "models" not in case else case["models"]
    if spec == "all" or spec == ["all"]:
        spec = list(all_models)
    out = []
    for m in spec:
        out.extend(all_models if m == "all" else [m])
    return list(dict.fromkeys(model_id(m, backend) for m in out))


def missing_models(wanted: Iterable[str], listed: Iterable[str], backend: str) -> list[str]:
    """The wanted models the server does not list (by identity)."""
    have = {model_id(m, backend) for m in listed}
    return [m for m in wanted if model_id(m, backend) not in have]


def plan_jobs(batch: str, cases: list[dict[str, Any]], models_per_case: list[list[str]], runs: int,
              levels: list[Level] | None = None) -> list[Job]:
    """Model-major order (a model stays loaded across its cases and load levels), then level (in
    the order given), then case, then run."""
    models = list(dict.fromkeys(m for ms in models_per_case for m in ms))
    jobs = []
    for model in models:
        for level in levels or [None]:
            for i, case in enumerate(cases):
                if model not in models_per_case[i]:
                    continue
                for run in range(1, runs + 1):
                    jobs.append(Job(make_rid(batch, model, i, case["task"], case["load"], run, level), model, i,
                                    case["task"], case["load"], run, level=level))
    return jobs


# (model, case content hash, load, run, sweep level or None)
RequestKey = tuple[str, str, str, int, "int | float | None"]


def request_key(model: str, case_hash: str, load: str, run: int, backend: str,
                sweep_level: int | float | None = None) -> RequestKey:
    """A request's identity: what was asked of which model at which sweep level, not the directory
    it was recorded in."""
    return (model_id(model, backend), case_hash, load, run, sweep_level)


def finished_keys(messages: Iterable[tuple[str, dict[str, Any]]], backend: str) -> set[RequestKey]:
    """Identities of the requests with a successful ``req.end`` in a recording (what ``--resume`` skips)."""
    starts: dict[str, dict[str, Any]] = {}
    done: set[RequestKey] = set()
    for topic, p in messages:
        if topic == REQ_START and not p.get("warmup"):
            starts[p.get("rid")] = p
        elif topic == REQ_END and p.get("ok") is True and p.get("rid") in starts:
            s = starts[p["rid"]]
            if all(isinstance(s.get(k), str) for k in ("model", "case_hash", "load")) and isinstance(s.get("run"), int):
                level = s.get("sweep_level")
                level = level if isinstance(level, (int, float)) and not isinstance(level, bool) else None
                done.add(request_key(s["model"], s["case_hash"], s["load"], s["run"], backend, level))
    return done


def params_for(case: dict[str, Any], settings: dict[str, dict[str, Any]], run: int | None = None) -> Params:
    """Per-request parameters: explicit CLI > the case's own value > config.py > default.

    A suite item's runs are samples of one problem (pass@k): run r sends seed + r (recorded), and the
    temperature is 0 unless set, or PASS_AT_K_TEMPERATURE with several runs, so the samples differ."""
    def pick(key: str) -> Any:
        s = settings[key]
        if s["source"] == "cli" or key not in case:
            return s["value"]
        return case[key]

    think = case.get("think", settings["think"]["value"]) if settings["think"]["source"] != "cli" \
        else settings["think"]["value"]
    ollama = get(settings["backend"]["value"]).keeps_alive
    temperature, seed = pick("temperature"), pick("seed")
    if case.get("suite"):
        runs = settings["runs"]["value"] or 1
        if settings["temperature"]["source"] == "default" and "temperature" not in case:
            temperature = PASS_AT_K_TEMPERATURE if runs > 1 else 0.0
        if run is not None:
            seed = (seed or 0) + run
    # only what the backend sends: OpenAI-compatible servers take no num_ctx, keep_alive or think
    if case.get("raw_prompt") and settings["backend"]["value"] == "ollama":
        # HumanEval on Ollama's generate endpoint: the problem as a raw completion prompt, cut at the Codex stop sequences
        # (a chat answer has the suite's own, case["stop"]: see collector.suites)
        return Params(temperature=temperature, top_p=pick("top_p"), num_ctx=pick("num_ctx"), max_tokens=pick("max_tokens"),
                      seed=seed, keep_alive=settings["keep_alive"]["value"], think=None, raw=True,
                      stop=list(case.get("raw_stop", case.get("stop")) or []), options=dict(case.get("options") or {}))
    return Params(temperature=temperature, top_p=pick("top_p"), num_ctx=pick("num_ctx") if ollama else None,
                  max_tokens=pick("max_tokens"), seed=seed,
                  keep_alive=settings["keep_alive"]["value"] if ollama else None,
                  think={"on": True, "off": False}.get(think) if ollama else None,
                  stop=list(case.get("stop") or []), options=dict(case.get("options") or {}))
