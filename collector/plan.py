"""The request matrix (pure): deterministic request ids, per-request parameters, resume filtering."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from collector.backends import Params
from shared.messages import REQ_END


@dataclass(frozen=True)
class Job:
    rid: str
    model: str
    case: int          # index into batch.start.cases
    task: str
    load: str
    run: int           # 1-based repetition number; 0 for the warm-up
    warmup: bool = False


def make_rid(batch: str, model: str, case: int, task: str, load: str, run: int | str) -> str:
    """``batch/model/case/load/run``: the same inputs always give the same id (resume relies on it)."""
    return f"{batch}/{model}/{case:03d}-{task}/{load}/{run}"


def warmup_rid(batch: str, model: str) -> str:
    return f"{batch}/{model}/warmup/-/0"


def case_models(case: dict[str, Any], batch_models: list[str], cli_models: bool, all_models: list[str]) -> list[str]:
    """Models a case runs on: explicit --models win, else the case's own list, else the batch list."""
    spec: Any = batch_models if cli_models or "models" not in case else case["models"]
    if spec == "all" or spec == ["all"]:
        return list(all_models)
    out = []
    for m in spec:
        out.extend(all_models if m == "all" else [m])
    return list(dict.fromkeys(out))


def plan_jobs(batch: str, cases: list[dict[str, Any]], models_per_case: list[list[str]], runs: int) -> list[Job]:
    """Model-major order (a model stays loaded across its cases), then case, then run."""
    models = list(dict.fromkeys(m for ms in models_per_case for m in ms))
    jobs = []
    for model in models:
        for i, case in enumerate(cases):
            if model not in models_per_case[i]:
                continue
            for run in range(1, runs + 1):
                jobs.append(Job(make_rid(batch, model, i, case["task"], case["load"], run), model, i,
                                case["task"], case["load"], run))
    return jobs


def finished_rids(messages: Iterable[tuple[str, dict[str, Any]]]) -> set[str]:
    """Request ids with a successful ``req.end`` in a recording (what ``--resume`` skips)."""
    return {p["rid"] for topic, p in messages if topic == REQ_END and p.get("ok") is True and "rid" in p}


def params_for(case: dict[str, Any], settings: dict[str, dict[str, Any]]) -> Params:
    """Per-request parameters: explicit CLI > the case's own value > config.py > default."""
    def pick(key: str) -> Any:
        s = settings[key]
        if s["source"] == "cli" or key not in case:
            return s["value"]
        return case[key]

    think = case.get("think", settings["think"]["value"]) if settings["think"]["source"] != "cli" \
        else settings["think"]["value"]
    return Params(temperature=pick("temperature"), top_p=pick("top_p"), num_ctx=pick("num_ctx"),
                  max_tokens=pick("max_tokens"), seed=pick("seed"), keep_alive=settings["keep_alive"]["value"],
                  think={"on": True, "off": False}.get(think), options=dict(case.get("options") or {}))
