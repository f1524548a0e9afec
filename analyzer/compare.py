"""python -m analyzer.compare — one leaderboard across analysed batches (a campaign), queried with DuckDB.

    python -m analyzer.compare data/experiments_1_* data/experiments_2_* --out data/campaign
    python -m analyzer.compare BATCH_DIR... --out DIR --dataset data/lake   # also a hive-partitioned dataset

Reads each batch's summary/results.parquet (and raw/samples_gpu.parquet for --dataset) with DuckDB,
never the CSVs. Rows are per task × quality basis × model × GPU (host, GPU name) × simulated or not ×
load level (a --sweep batch's sweep and sweep_level; empty outside sweeps): batches measured on different
GPUs, scored on a different quality basis or run at another load level are never pooled; batches on the
same GPU, basis and level are pooled and the row names every batch it came from.

Exit codes: 0 done, 2 bad input (no such batch, a batch not analysed yet, clashing batch names,
a --dataset directory that holds something else).
"""
from __future__ import annotations

import argparse
import hashlib
import math
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analyzer import columns as COLS
from analyzer import i18n, report_html, tables
from analyzer import load_curve as LC
from analyzer.i18n import Msg
from analyzer.outputs import CSV_ENCODING, json_text, write_text
from analyzer.suite_stats import pass_at_k, wilson
from shared.batch import BatchDir
from shared.cli import add_log_args
from shared.escape import safe_filename
from shared.logs import configure_logging, get_logger
from shared.numbers import finite

log = get_logger("analyzer.compare")

EXIT_BAD_INPUT = 2
UNKNOWN = "unknown"      # host or GPU name of a batch analysed before GPUs were named (rerun the analyzer)
NO_GPU = "none"          # a batch without GPU telemetry
DATASET_MARKER = "_genai_power_dataset.json"  # '_' first: Spark, DuckDB globs and pyarrow skip it as data
MAX_POINTS_PER_ROW = 200  # request dots per leaderboard row in the page's plots (the means use every request)

# Metrics averaged per row (mean, std and 95 % interval where a CI column is listed). Optional ones
# (prefill/decode energy) appear only when some batch has them.
MEAN_METRICS = COLS.COMPARE          # from the column registry (analyzer/columns.py)
OPTIONAL_METRICS = COLS.COMPARE_OPTIONAL
CI_METRICS = COLS.COMPARE_CI
# sweep/sweep_level: a load sweep's levels are rows of their own (latency and J/token move with the load)
KEY_COLUMNS = ("task", "quality_basis", "model", "host", "gpu_name", "gpu_simulated", "sweep", "sweep_level")
# What makes a ranking fair: every row ranked together ran the same cases (case_set: a hash of the sorted
# case hashes; "unknown" for batches analysed before results.csv named them) with the same max tokens.
LIKE_COLUMNS = ("case_set", "n_cases", "max_tokens")
LEADERBOARD_COLUMNS = (
    KEY_COLUMNS + LIKE_COLUMNS + ("rank", "batches", "n_batches", "n", "n_failed", "n_outliers", "group_quality_per_kj")
    + COLS.COMPARE_COLUMNS + ("ci95_note", "pareto_optimal", "gpu_uuids", "pass_at_k", "k"))
BATCH_COLUMNS = ("batch", "path", "date", "requests", "ok", "failed", "hosts", "gpu_names", "gpu_simulated",
                 "quality_bases", "models", "tasks", "gpu_named")
PAGE_COLUMNS = ("rank", "model", "sweep", "sweep_level", "host", "gpu_name", "n_cases", "max_tokens", "n", "pass_at_k", "k", "group_quality_per_kj", "quality_per_kj_mean",
                "quality_per_kj_ci95_low", "quality_per_kj_ci95_high", "quality_score_mean", "total_energy_j_mean",
                "j_per_token_mean", "gpu_energy_prefill_j_mean", "gpu_energy_decode_j_mean", "first_token_s_mean",
                "toks_per_s_mean", "n_outliers", "batches", "pareto_optimal")
# Columns every batch's results.parquet is read with; absent ones (older batches) are NULL of this type.
NEEDED = {"model": "VARCHAR", "task": "VARCHAR", "status": "VARCHAR", "quality_basis": "VARCHAR",
          "gpu_hosts": "VARCHAR", "gpu_names": "VARCHAR", "gpu_uuids": "VARCHAR", "gpu_simulated": "BOOLEAN",
          "gpu_count": "BIGINT", "timestamp": "VARCHAR", "rid": "VARCHAR", "case_hash": "VARCHAR",
          "max_tokens": "BIGINT", "suite": "VARCHAR", "item_id": "VARCHAR", "correct": "BOOLEAN",
          "sweep": "VARCHAR", "sweep_level": "DOUBLE",
          "latency_outlier": "BOOLEAN",
          **{m: "DOUBLE" for m in MEAN_METRICS + OPTIONAL_METRICS}}


class BadInput(Exception):
    """Input compare cannot use; the message names the path and the fix."""


@dataclass
class Comparison:
    batches: list[dict[str, Any]]
    leaderboard: list[dict[str, Any]]
    points: dict[tuple, list[dict[str, Any]]]   # leaderboard key → request dots (energy, quality) for the plots
    notes: list[str] = field(default_factory=list)
    simulated: bool = False
    load_curve: list[dict[str, Any]] = field(default_factory=list)  # every batch's load levels, batch named


def _duckdb():
    import duckdb  # imported here so `python -m analyzer` never needs it

    return duckdb


def find_batches(dirs: list[Path]) -> list[tuple[str, Path]]:
    """(batch name, results.parquet) per directory, or BadInput naming the path and the fix."""
    out: dict[str, Path] = {}
    for d in dirs:
        if not d.is_dir():
            raise BadInput(f"{d}: no such batch directory; pass directories that hold summary/results.parquet")
        res = BatchDir(d).summary / "results.parquet"
        if not res.is_file():
            raise BadInput(f"{res}: not found, so {d} has not been analysed; run python -m analyzer --batch {d} first")
        name = d.resolve().name
        if name in out:
            raise BadInput(f"{d} and {out[name].parent.parent} are both named {name!r}: rows name their batch by its "
                           "directory name, so rename one of them")
        out[name] = res
    if not out:
        raise BadInput("no batch directories given; pass one or more analysed batch directories")
    return sorted(out.items())


def connect(batches: list[tuple[str, Path]]):
    """A DuckDB connection with the view ``requests``: every batch's results.parquet (columns unified by
    name), its batch name, and the GPU identity columns ``host`` and ``gpu_name``."""
    duckdb = _duckdb()
    con = duckdb.connect()
    con.execute("CREATE TABLE batch_files(batch VARCHAR, file VARCHAR)")
    con.executemany("INSERT INTO batch_files VALUES (?, ?)", [[b, str(p)] for b, p in batches])
    files = [str(p) for _, p in batches]
    con.execute("CREATE TABLE raw_results AS SELECT * FROM read_parquet(?, union_by_name = true, filename = true)",
                [files])
    have = {r[0] for r in con.execute("DESCRIBE raw_results").fetchall()}
    no_gpu = "coalesce(TRY_CAST(r.gpu_count AS BIGINT), 0) = 0" if "gpu_count" in have else "true"
    hosts, names = _col(have, "gpu_hosts"), _col(have, "gpu_names")
    # every results column as stored, plus the batch and the GPU identity (host, GPU name)
    con.execute(f"""
        CREATE VIEW requests_raw AS
        SELECT r.* EXCLUDE (filename), b.batch,
               CASE WHEN {no_gpu} AND {hosts} IS NULL THEN '{NO_GPU}' ELSE coalesce({hosts}, '{UNKNOWN}') END AS host,
               CASE WHEN {no_gpu} AND {names} IS NULL THEN '{NO_GPU}' ELSE coalesce({names}, '{UNKNOWN}') END
                   AS gpu_name,
               {hosts} IS NOT NULL OR {no_gpu} AS gpu_named
        FROM raw_results r JOIN batch_files b ON r.filename = b.file""")
    cols = ", ".join(f'TRY_CAST(r."{c}" AS {t}) AS "{c}"' if c in have else f'CAST(NULL AS {t}) AS "{c}"'
                     for c, t in NEEDED.items())
    if "suite" in have:  # a benchmark suite's items are a leaderboard of their own: task "suite NAME"
        cols = cols.replace('TRY_CAST(r."task" AS VARCHAR) AS "task"',
                            'coalesce(\'suite \' || TRY_CAST(r."suite" AS VARCHAR), TRY_CAST(r."task" AS VARCHAR)) '
                            'AS "task"')
    # the columns the leaderboard reads, with one type each whatever the batches stored
    con.execute(f"CREATE VIEW requests AS SELECT r.batch, {cols}, r.host, r.gpu_name, r.gpu_named FROM requests_raw r")
    return con


def _columns(con, table: str) -> set[str]:
    return {r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()}


def _col(have: set[str], c: str) -> str:
    return f'r."{c}"' if c in have else "NULL"


def _interval(mean: float | None, std: float | None, n: int, metric: str) -> tuple[float | None, float | None, str | None]:
    """The same 95 % t-interval as stats.csv (tables.describe), from DuckDB's mean, std and n."""
    if mean is None or n == 0:
        return None, None, None
    if n < tables.MIN_N_FOR_CI or std is None:
        return None, None, "n too small"
    half = tables.t95(n - 1) * std / math.sqrt(n)
    lo, hi = tables.metric_range(metric)
    low, high, note = mean - half, mean + half, None
    if (lo is not None and low < lo) or (hi is not None and high > hi):
        note = "clipped"
        low = max(low, lo) if lo is not None else low
        high = min(high, hi) if hi is not None else high
    return low, high, note


def leaderboard(con) -> list[dict[str, Any]]:
    """One row per task × basis × model × host × GPU name × simulated × load level over successful requests."""
    aggs = []
    for m in MEAN_METRICS + OPTIONAL_METRICS:
        aggs.append(f'avg("{m}") AS "{m}_mean"')
        if m in CI_METRICS:
            aggs += [f'stddev_samp("{m}") AS "{m}_std"', f'count("{m}") AS "{m}_n"']
    ok = con.execute(f"""
        WITH failed AS (
            SELECT task, model, host, gpu_name, coalesce(gpu_simulated, false) AS gpu_simulated, sweep, sweep_level,
                   count(*) AS n_failed
            FROM requests WHERE status IS DISTINCT FROM 'ok' GROUP BY ALL)
        SELECT g.*, coalesce(f.n_failed, 0) AS n_failed FROM (
            SELECT task, coalesce(quality_basis, '') AS quality_basis, model, host, gpu_name,
                   coalesce(gpu_simulated, false) AS gpu_simulated, sweep, sweep_level,
                   string_agg(DISTINCT batch, ',' ORDER BY batch) AS batches, count(DISTINCT batch) AS n_batches,
                   count(*) AS n, string_agg(DISTINCT gpu_uuids, ',' ORDER BY gpu_uuids) AS gpu_uuids,
                   count(*) FILTER (WHERE latency_outlier) AS n_outliers,
                   string_agg(DISTINCT coalesce(case_hash, '?'), ',' ORDER BY coalesce(case_hash, '?')) AS cases,
                   count(DISTINCT case_hash) AS n_cases,
                   string_agg(DISTINCT coalesce(CAST(max_tokens AS VARCHAR), '?'), ','
                              ORDER BY coalesce(CAST(max_tokens AS VARCHAR), '?')) AS max_tokens,
                   avg(quality_score) FILTER (WHERE quality_score IS NOT NULL AND total_energy_j IS NOT NULL) AS q_both,
                   avg(total_energy_j) FILTER (WHERE quality_score IS NOT NULL AND total_energy_j IS NOT NULL) AS e_both,
                   {", ".join(aggs)}
            FROM requests WHERE status = 'ok' GROUP BY ALL) g
        LEFT JOIN failed f ON f.task IS NOT DISTINCT FROM g.task AND f.model IS NOT DISTINCT FROM g.model
            AND f.host = g.host AND f.gpu_name = g.gpu_name AND f.gpu_simulated = g.gpu_simulated
            AND f.sweep IS NOT DISTINCT FROM g.sweep AND f.sweep_level IS NOT DISTINCT FROM g.sweep_level
        ORDER BY task, quality_basis, gpu_simulated, model, host, gpu_name, sweep, sweep_level""")
    names = [d[0] for d in ok.description]
    rows = []
    for rec in ok.fetchall():
        r = dict(zip(names, rec))
        out: dict[str, Any] = {k: r[k] for k in KEY_COLUMNS}
        out["quality_basis"] = r["quality_basis"] or None
        out.update(batches=r["batches"], n_batches=int(r["n_batches"]), n=int(r["n"]), n_failed=int(r["n_failed"]),
                   n_outliers=int(r["n_outliers"]), gpu_uuids=r["gpu_uuids"], case_set=case_set_id(r["cases"]),
                   n_cases=int(r["n_cases"]) or None, max_tokens=None if r["max_tokens"] == "?" else r["max_tokens"])
        for m in MEAN_METRICS + OPTIONAL_METRICS:
            out[f"{m}_mean"] = finite(r[f"{m}_mean"])
        notes = set()
        for m in CI_METRICS:
            low, high, note = _interval(out[f"{m}_mean"], finite(r[f"{m}_std"]), int(r[f"{m}_n"]), m)
            out[f"{m}_ci95_low"], out[f"{m}_ci95_high"] = low, high
            notes.add(note)
        out["ci95_note"] = "n too small" if "n too small" in notes else ("clipped" if "clipped" in notes else None)
        basis = COLS.BASIS_BY_NAME.get(out["quality_basis"] or "")
        n_q = int(r["quality_score_n"])
        if basis is not None and basis.binary and out["quality_score_mean"] is not None and n_q:
            # 0/1 scores: the accuracy's Wilson interval (binomial), not a t-interval of a mean
            low, high = wilson(round(out["quality_score_mean"] * n_q), n_q)
            out["quality_score_ci95_low"], out["quality_score_ci95_high"] = low, high
        q, e = finite(r["q_both"]), finite(r["e_both"])
        out["group_quality_per_kj"] = 1000.0 * q / e if (q is not None and e) else None
        rows.append(out)
    _rank_and_pareto(rows)
    return rows


def case_set_id(cases: str | None) -> str:
    """A short name for the set of cases a row ran ("unknown" when a batch did not record them)."""
    if not cases or "?" in cases.split(","):
        return UNKNOWN
    return hashlib.sha256(cases.encode("utf-8")).hexdigest()[:8]


def rank_key(r: dict[str, Any]) -> tuple:
    """Rows ranked together: same task, basis, simulated-or-not, case set, max tokens and load level."""
    return (r["task"], r["quality_basis"] or "", r["gpu_simulated"], r.get("case_set") or UNKNOWN,
            r.get("max_tokens") or "", r.get("sweep") or "", level_text(r.get("sweep_level")))


def level_text(level: Any) -> str:
    """A load level as written on the page and in the notes ("" outside a sweep)."""
    v = finite(level, text=False)
    return "" if v is None else f"{v:g}"


def _rank_and_pareto(rows: list[dict[str, Any]]) -> None:
    """Per rank_key (like with like only): rank by group 效质比 and mark the energy/quality Pareto front."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(rank_key(r), []).append(r)
    for members in groups.values():
        ranked = sorted(members, key=lambda r: (r["group_quality_per_kj"] is None, -(r["group_quality_per_kj"] or 0.0),
                                                r["model"], r["host"], r["gpu_name"]))
        for i, r in enumerate(ranked):
            r["rank"] = i + 1 if r["group_quality_per_kj"] is not None else None
        both = [r for r in members if r["total_energy_j_mean"] is not None and r["quality_score_mean"] is not None]
        for r, flag in zip(both, tables.pareto_flags([(r["total_energy_j_mean"], r["quality_score_mean"]) for r in both])):
            r["pareto_optimal"] = flag
        for r in members:
            r.setdefault("pareto_optimal", None)


def add_pass_at_k(con, board: list[dict[str, Any]]) -> None:
    """pass@k of each suite row with several samples per item (k = the fewest samples any item has):
    the unbiased estimator, averaged over items. Rows without repeated items get none."""
    cur = con.execute("""
        SELECT task, coalesce(quality_basis, '') AS basis, model, host, gpu_name, coalesce(gpu_simulated, false) AS sim,
               sweep, sweep_level, item_id, count(*) AS n, count(*) FILTER (WHERE correct) AS c
        FROM requests WHERE status = 'ok' AND item_id IS NOT NULL AND correct IS NOT NULL GROUP BY ALL""")
    per: dict[tuple, list[tuple[int, int]]] = {}
    for task, basis, model, host, gpu, sim, sweep, level, _item, n, c in cur.fetchall():
        per.setdefault((task, basis or None, model, host, gpu, sim, sweep, level), []).append((int(n), int(c)))
    for r in board:
        items = per.get(_row_key(r))
        k = min(n for n, _ in items) if items else 0
        r["pass_at_k"] = r["k"] = None
        if k >= 2:
            r["pass_at_k"], r["k"] = math.fsum(pass_at_k(n, c, k) for n, c in items) / len(items), k


def batch_table(con) -> list[dict[str, Any]]:
    cur = con.execute("""
        SELECT batch, min(substr(timestamp, 1, 10)) AS date, count(*) AS requests,
               count(*) FILTER (WHERE status = 'ok') AS ok, count(*) FILTER (WHERE status IS DISTINCT FROM 'ok') AS failed,
               string_agg(DISTINCT host, ',' ORDER BY host) AS hosts,
               string_agg(DISTINCT gpu_name, ',' ORDER BY gpu_name) AS gpu_names,
               bool_or(coalesce(gpu_simulated, false)) AS gpu_simulated,
               string_agg(DISTINCT quality_basis, ',' ORDER BY quality_basis) AS quality_bases,
               string_agg(DISTINCT model, ',' ORDER BY model) AS models,
               string_agg(DISTINCT task, ',' ORDER BY task) AS tasks, bool_and(gpu_named) AS gpu_named
        FROM requests GROUP BY batch ORDER BY batch""")
    names = [d[0] for d in cur.description]
    records = cur.fetchall()  # before the next execute: a DuckDB connection holds one result at a time
    paths = dict(con.execute("SELECT batch, file FROM batch_files").fetchall())
    rows = []
    for rec in records:
        r = dict(zip(names, rec))
        r["path"] = str(Path(paths[r["batch"]]).parent.parent)
        rows.append(r)
    return rows


def request_points(con) -> dict[tuple, list[dict[str, Any]]]:
    """Up to MAX_POINTS_PER_ROW requests per leaderboard row, deterministic (by batch and rid)."""
    cur = con.execute(f"""
        SELECT task, coalesce(quality_basis, '') AS basis, model, host, gpu_name, coalesce(gpu_simulated, false) AS sim,
               sweep, sweep_level, batch, rid, total_energy_j, quality_score
        FROM requests
        WHERE status = 'ok' AND total_energy_j IS NOT NULL AND quality_score IS NOT NULL
        QUALIFY row_number() OVER (PARTITION BY task, basis, model, host, gpu_name, sim, sweep, sweep_level
                                   ORDER BY batch, rid) <= {MAX_POINTS_PER_ROW}""")
    out: dict[tuple, list[dict]] = {}
    for task, basis, model, host, gpu, sim, sweep, level, batch, rid, e, q in cur.fetchall():
        out.setdefault((task, basis or None, model, host, gpu, sim, sweep, level), []).append(
            {"e": float(e), "q": float(q), "load": batch, "run": rid})
    return out


def _row_key(r: dict[str, Any]) -> tuple:
    return tuple(r[k] for k in KEY_COLUMNS)


def notes_for(board: list[dict[str, Any]], batches: list[dict[str, Any]]) -> list[str]:
    """What the reader must know: never-pooled splits, pooled batches, batches without GPU names."""
    out = []
    per: dict[tuple, set] = {}
    for r in board:
        per.setdefault((r["task"], r["model"]), set()).add((r["host"], r["gpu_name"], r["gpu_simulated"],
                                                            r["quality_basis"]))
    for (task, model), keys in sorted(per.items()):
        gpus = sorted({(h, g, s) for h, g, s, _ in keys})
        bases = sorted({b or UNKNOWN for *_, b in keys})
        if len(gpus) > 1 or len(bases) > 1:
            out.append(Msg("c_split", task=task, model=model, n=len(gpus), bases=", ".join(bases), nb=len(bases),
                           gpus=[Msg("c_gpu", host=h, gpu=g, sim=Msg("c_simulated") if s else "") for h, g, s in gpus]))
    apart: dict[tuple, dict[tuple, list[str]]] = {}
    for r in board:
        k = rank_key(r)
        apart.setdefault(k[:3] + k[5:], {}).setdefault(k[3:5], []).append(r["model"])
    for (task, basis, sim, sweep, level), sets in sorted(apart.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        if len(sets) > 1:
            out.append(Msg("c_apart", task=task, basis=f" ({basis})" if basis else "",
                           sim=Msg("c_simulated_gpu") if sim else "", n=len(sets),
                           level=Msg("c_at_level", sweep=sweep, level=level) if level else "",
                           which=[Msg("c_set", cases=cs, max_tokens=mt or "unknown", models=", ".join(sorted(ms)))
                                  for (cs, mt), ms in sorted(sets.items())]))
    levels: dict[tuple, set[tuple]] = {}
    for r in board:
        if r.get("sweep_level") is not None:
            levels.setdefault((r["task"], r["model"]), set()).add((r.get("sweep") or "", r["sweep_level"]))
    for (task, model), lv in sorted(levels.items()):
        if len(lv) > 1:
            out.append(Msg("c_levels", task=task, model=model, n=len(lv),
                           which=", ".join(f"{s} {level_text(v)}" for s, v in sorted(lv))))
    for r in board:
        if r["n_batches"] > 1:
            mixed = "," in str(r.get("max_tokens") or "")  # batches with different max tokens in one mean
            out.append(Msg("c_pooled", task=r["task"], model=r["model"], host=r["host"], gpu=r["gpu_name"],
                           n=r["n_batches"], batches=r["batches"],
                           mixed=Msg("c_pooled_mixed", max_tokens=r["max_tokens"]) if mixed else ""))
    slow = [r for r in board if r.get("n_outliers")]
    if slow:  # kept in the means (they happened), but a reader should look at them
        out.append(Msg("c_outliers", n=sum(r["n_outliers"] for r in slow), rows=len(slow),
                       which="; ".join(f"{r['task']}/{r['model']}: {r['n_outliers']}" for r in slow[:10])))
    for b in batches:
        if not b["gpu_named"]:
            out.append(Msg("c_unnamed", batch=b["batch"], unknown=UNKNOWN, path=b["path"]))
        if (b["quality_bases"] or "") == "":
            out.append(Msg("c_no_quality", batch=b["batch"]))
    return out


def compare(dirs: list[Path]) -> Comparison:
    batches = find_batches(dirs)
    con = connect(batches)
    try:
        board = leaderboard(con)
        add_pass_at_k(con, board)
        btab = batch_table(con)
        points = request_points(con)
        curve = load_curves(con, batches)
    finally:
        con.close()
    return Comparison(btab, board, points, notes_for(board, btab), any(b["gpu_simulated"] for b in btab), curve)


LOAD_CURVE_COLUMNS = ("batch",) + tuple(c for c in LC.COLUMNS)


def load_curves(con, batches: list[tuple[str, Path]]) -> list[dict[str, Any]]:
    """Every batch's summary/load_curve.parquet (batches with load levels), one row per batch × model ×
    level, for the overlay of J/token against output tokens/s."""
    files = [(b, p.parent / "load_curve.parquet") for b, p in batches if (p.parent / "load_curve.parquet").is_file()]
    if not files:
        return []
    rel = con.execute("SELECT * FROM read_parquet(?, union_by_name = true, filename = true)",
                      [[str(f) for _, f in files]])
    names = [d[0] for d in rel.description]
    by_file = {str(f): b for b, f in files}
    out = []
    for rec in rel.fetchall():
        row = dict(zip(names, rec))
        row["batch"] = by_file.get(row.pop("filename"), "")
        out.append(row)
    return sorted(out, key=lambda r: (r["batch"], str(r.get("model")), finite(r.get("sweep_level"), text=False) or 0.0))


# ---------------------------------------------------------------- the dataset (hive-partitioned Parquet)

def _slugs(con, sql: str) -> str:
    """A VALUES list mapping each distinct value of ``sql`` to a file-name-safe partition value."""
    values = [r[0] for r in con.execute(sql).fetchall()]
    pairs = [(v, safe_filename(v if v not in (None, "") else NO_GPU)) for v in values]
    return "VALUES " + ", ".join(f"({_lit(v)}, {_lit(s)})" for v, s in pairs) if pairs else "SELECT NULL, NULL"


def _lit(v: Any) -> str:
    return "NULL" if v is None else "'" + str(v).replace("'", "''") + "'"


def write_dataset(dirs: list[Path], out: Path) -> dict[str, int]:
    """``out/requests/host=/gpu=/model=/date=/*.parquet`` (every results column, plus batch and the exact
    names) and ``out/samples/host=/gpu=/date=/*.parquet`` (every GPU sample, plus batch). Partition values
    are file-name safe (Windows too); the exact names are in host_name, gpu_name, model_name."""
    batches = find_batches(dirs)
    if out.exists() and any(out.iterdir()) and not (out / DATASET_MARKER).is_file():
        raise BadInput(f"{out}: exists and is not a dataset written by analyzer.compare; pass an empty or new "
                       "directory to --dataset")
    for sub in ("requests", "samples"):
        shutil.rmtree(out / sub, ignore_errors=True)  # a rewrite replaces the whole dataset
    out.mkdir(parents=True, exist_ok=True)
    con = connect(batches)
    counts = {}
    try:
        hosts = _slugs(con, "SELECT DISTINCT host FROM requests_raw")
        gpus = _slugs(con, "SELECT DISTINCT coalesce(gpu_uuids, gpu_name) FROM requests_raw") \
            if "gpu_uuids" in _columns(con, "requests_raw") else _slugs(con, "SELECT DISTINCT gpu_name FROM requests_raw")
        gpu_id = "coalesce(q.gpu_uuids, q.gpu_name)" if "gpu_uuids" in _columns(con, "requests_raw") else "q.gpu_name"
        models = _slugs(con, "SELECT DISTINCT model FROM requests_raw")
        con.execute(f"""
            COPY (
                SELECT q.* EXCLUDE (model, host, gpu_named), q.model AS model_name, q.host AS host_name,
                       h.s AS host, g.s AS gpu, m.s AS model, coalesce(substr(q.timestamp, 1, 10), 'unknown') AS date
                FROM requests_raw q
                JOIN ({hosts}) h(v, s) ON h.v IS NOT DISTINCT FROM q.host
                JOIN ({gpus}) g(v, s) ON g.v IS NOT DISTINCT FROM {gpu_id}
                JOIN ({models}) m(v, s) ON m.v IS NOT DISTINCT FROM q.model
                ORDER BY q.batch, q.timestamp, q.rid
            ) TO '{_path(out / "requests")}' (FORMAT parquet, PARTITION_BY (host, gpu, model, date))""")
        counts["requests"] = con.execute("SELECT count(*) FROM requests_raw").fetchone()[0]
        sample_files = [(b, p.parent.parent / "raw" / "samples_gpu.parquet") for b, p in batches]
        sample_files = [(b, p) for b, p in sample_files if p.is_file()]
        counts["samples"] = 0
        if sample_files:
            con.execute("CREATE TABLE sample_files(batch VARCHAR, file VARCHAR)")
            con.executemany("INSERT INTO sample_files VALUES (?, ?)", [[b, str(p)] for b, p in sample_files])
            con.execute("CREATE TABLE raw_samples AS SELECT * FROM read_parquet(?, union_by_name = true, "
                        "filename = true)", [[str(p) for _, p in sample_files]])
            have = _columns(con, "raw_samples")
            # older batches' samples have no host/uuid/name columns: the host is the publisher id's host part
            host = "coalesce(s.host, split_part(s.src, '@', 2))" if "host" in have else "split_part(s.src, '@', 2)"
            uuid = "s.uuid" if "uuid" in have else "CAST(NULL AS VARCHAR)"
            name = "s.name" if "name" in have else "CAST(NULL AS VARCHAR)"
            drop = ", ".join(["filename", "gpu"] + [c for c in ("host", "uuid", "name") if c in have])
            con.execute(f"""
                CREATE TABLE smp AS
                SELECT s.* EXCLUDE ({drop}), f.batch, s.gpu AS gpu_key, {host} AS host_name, {uuid} AS uuid,
                       {name} AS gpu_name, coalesce({uuid}, s.gpu) AS gpu_id, coalesce(d.date, 'unknown') AS date
                FROM raw_samples s JOIN sample_files f ON s.filename = f.file
                LEFT JOIN (SELECT batch, min(substr(timestamp, 1, 10)) AS date FROM requests GROUP BY batch) d
                       ON d.batch = f.batch""")
            shosts = _slugs(con, "SELECT DISTINCT host_name FROM smp")
            sgpus = _slugs(con, "SELECT DISTINCT gpu_id FROM smp")
            con.execute(f"""
                COPY (
                    SELECT smp.* EXCLUDE (gpu_id), h.s AS host, g.s AS gpu
                    FROM smp
                    JOIN ({shosts}) h(v, s) ON h.v IS NOT DISTINCT FROM smp.host_name
                    JOIN ({sgpus}) g(v, s) ON g.v IS NOT DISTINCT FROM smp.gpu_id
                    ORDER BY smp.batch, smp.host_name, smp.gpu_id, smp.t_ns
                ) TO '{_path(out / "samples")}' (FORMAT parquet, PARTITION_BY (host, gpu, date))""")
            counts["samples"] = con.execute("SELECT count(*) FROM smp").fetchone()[0]
    finally:
        con.close()
    write_text(out / DATASET_MARKER, json_text({"written_by": "python -m analyzer.compare --dataset",
                                                "batches": [b for b, _ in batches], **counts}))
    return counts


def _path(p: Path) -> str:
    # DuckDB takes forward slashes on every platform; quotes doubled for the SQL literal
    return p.resolve().as_posix().replace("'", "''")


# ---------------------------------------------------------------- outputs

def render_html(c: Comparison, lang: str = "en") -> str:
    """The comparison page: the batch report's look (CSS, tooltips, sortable tables, self-check)."""
    esc, t = report_html.esc, i18n.t
    body = [f"<h1>{esc(t('compare_title', lang))} — {esc(t('compare_n_batches', lang, n=len(c.batches)))}</h1>",
            f'<div class="def" id="ratio-def"><b>{esc(t("ratio_name", lang))}.</b> {t("ratio_def", lang)}'
            f'<br><span class="caption">{esc(t("compare_def", lang))}</span></div>']
    if c.simulated:
        body.append(f'<p class="sim">⚠ {esc(t("compare_sim", lang))}</p>')
    body.append(f'<h2 id="problems">{esc(t("compare_notes", lang))}</h2>')
    body.append('<ul class="problems">' + "".join(f"<li>{esc(i18n.render(n, lang))}</li>" for n in c.notes) + "</ul>"
                if c.notes
                else f"<p>{esc(t('no_problems', lang))}</p>")
    groups: dict[tuple, list[dict]] = {}
    for r in c.leaderboard:
        groups.setdefault(rank_key(r), []).append(r)
    body.append(f"<h2>{esc(t('leaderboard', lang))}</h2><p class='caption'>{esc(t('compare_caption', lang))}</p>")
    for i, ((task, basis, sim, cases, max_tokens, sweep, level), rows) in enumerate(sorted(
            groups.items(), key=lambda kv: tuple(str(x) for x in kv[0][:5]) + (kv[0][5], _num(kv[0][6])))):
        head = f"{t('task', lang)}: {task}" + (f" — {t('basis', lang)}: {basis}" if basis else "") + \
            (t("simulated_suffix", lang) if sim else "") + \
            " — " + t("like_with_like", lang, cases=cases, n=rows[0].get("n_cases") or "?",
                      max_tokens=max_tokens or "?") + (f" — {sweep} {level}" if level else "")
        body.append(f"<h3>{esc(head)}</h3>")
        rows = sorted(rows, key=lambda r: (r["rank"] is None, r["rank"] or 0))
        labels = {_row_key(r): f"{r['model']} · {r['host']} / {r['gpu_name']}" for r in rows}
        colors = {labels[_row_key(r)]: report_html.PALETTE[j % len(report_html.PALETTE)] for j, r in enumerate(rows)}
        front = [{**r, "model": labels[_row_key(r)]} for r in rows
                 if r["total_energy_j_mean"] is not None and r["quality_score_mean"] is not None]
        pts = [{**p, "model": labels[_row_key(r)]} for r in rows for p in c.points.get(_row_key(r), [])]
        if pts and front:
            body.append(report_html.scatter_svg(f"scatter-{i}", pts, front, colors, lang))
        body.append(report_html.html_table(f"leaderboard-{i}", _page_columns(rows), rows, lang))
    if c.load_curve:  # one line per batch × model through its load levels
        from analyzer.report_load import load_curve_svg
        rows = [{**r, "model": f"{r['model']} · {r['batch']}"} for r in c.load_curve]
        colors = {m: report_html.PALETTE[j % len(report_html.PALETTE)]
                  for j, m in enumerate(dict.fromkeys(r["model"] for r in rows))}
        body.append(f'<h2 id="load-curve">{esc(t("load_curve", lang))}</h2>'
                    f"<p class='caption'>{esc(t('load_curve_caption', lang, slo='load_curve.csv: slo'))}</p>")
        body.append(load_curve_svg("load-curve-plot", rows, colors, lang) or "")
    body.append(f"<h2>{esc(t('batches', lang))}</h2>"
                + report_html.html_table("batches", [c_ for c_ in BATCH_COLUMNS if c_ != "gpu_named"], c.batches, lang))
    csp = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:"
    title = f"{t('compare_title', lang)} — {t('compare_n_batches', lang, n=len(c.batches))}"
    return (f'<!DOCTYPE html>\n<html lang="{"zh-CN" if lang == "zh" else "en"}"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{report_html.CSS}</style><script>{report_html.JS_HEAD}</script>"
            "</head>\n<body>" + "\n".join(body)
            + f'\n<div id="tip"></div><script>{report_html.JS}</script></body></html>\n')


def _num(text: str) -> float:
    return float(text) if text else -1.0


def _page_columns(rows: list[dict]) -> list[str]:
    """The page's columns, leaving out the optional ones no row has (prefill/decode energy, load level)."""
    optional = {f"{m}_mean" for m in OPTIONAL_METRICS} | {"pass_at_k", "k", "sweep", "sweep_level"}
    return [c for c in PAGE_COLUMNS if c not in optional or any(r.get(c) is not None for r in rows)]


def write_outputs(c: Comparison, out: Path, lang: str = "en") -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    return [
        write_text(out / "leaderboard.csv", tables.csv_text(LEADERBOARD_COLUMNS, c.leaderboard), CSV_ENCODING),
        write_text(out / "batches.csv", tables.csv_text(BATCH_COLUMNS, c.batches), CSV_ENCODING),
        write_text(out / "notes.txt", "".join(n + "\n" for n in c.notes)),
    ] + [write_text(out / i18n.suffixed("compare.html", one), render_html(c, one)) for one in i18n.langs_of(lang)] \
        + ([write_text(out / "load_curve.csv", tables.csv_text(LOAD_CURVE_COLUMNS, c.load_curve), CSV_ENCODING)]
           if c.load_curve else [])


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m analyzer.compare", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("batches", nargs="+", type=Path, help="analysed batch directories (with summary/results.parquet)")
    ap.add_argument("--out", type=Path, required=True, help="where leaderboard.csv, batches.csv, notes.txt and "
                                                            "compare.html go")
    ap.add_argument("--dataset", type=Path, help="also write a hive-partitioned Parquet dataset of requests and GPU "
                                                 "samples here (host=/gpu=/model=/date=)")
    ap.add_argument("--report-lang", "--lang", dest="lang", default="both", choices=i18n.LANG_CHOICES,
                    help="which pages: en = compare.html, zh = compare.zh.html, both (default; auto is the same), "
                         "as python -m analyzer --report-lang; CSV names never change")
    add_log_args(ap)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, json=args.log_json)
    lang = i18n.check_choice(args.lang)
    try:
        c = compare(args.batches)
        files = write_outputs(c, args.out, lang)
        if args.dataset is not None:
            counts = write_dataset(args.batches, args.dataset)
            log.info("dataset_written", path=str(args.dataset), **counts)
    except BadInput as exc:
        log.error("bad_input", problem=str(exc))
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    log.info("compare_written", out=str(args.out), batches=len(c.batches), rows=len(c.leaderboard))
    print(f"compared {len(c.batches)} batch(es), {len(c.leaderboard)} row(s) -> {files[0]}"
          + (f"; dataset -> {args.dataset}" if args.dataset is not None else ""), flush=True)
    for n in c.notes:
        print(f"note: {n}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
