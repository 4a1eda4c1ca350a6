"""What a finished run becomes in an output folder's journal (clbench.results.store reads and appends it)."""

from __future__ import annotations

from datetime import datetime, timezone

from clbench.runners.config import to_json
from clbench.runners.loop import RunResult
from clbench.strategies.registry import params_label


def journal_entry(result: RunResult, *, versions: dict, device: str) -> dict:
    """One run as a journal line: its runs row and, for a finished run, its eval, cost and curve rows."""
    cfg = result.config
    keys = {"run_id": cfg.run_id, "benchmark": cfg.benchmark, "scenario": cfg.scenario, "strategy": cfg.strategy,
            "seed": cfg.seed}
    ok = result.status == "ok"
    run_row = {
        **keys,
        "config_id": cfg.config_id,
        "stream_seed": cfg.stream_seed,
        "params": to_json(cfg.canonical()["params"]),  # as hashed: later-added defaults left out (config.py)
        # What readers show, recorded now (the class is loaded): reading a folder never imports a strategy.
        "label": params_label(cfg.strategy_class(), cfg.params),
        "strategy_ref": cfg.strategy_ref,
        "train_config": to_json(cfg.settings()),
        "versions": to_json(versions),
        "device": device,
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "duration_s": result.duration_s,
        "status": result.status,
        "error": result.error,
        "phase": cfg.phase,
        "selected_by": cfg.selected_by,
    }
    return {
        "run": run_row,
        "evals": [{**keys, **row} for row in result.evals] if ok else [],
        "costs": [{**keys, **row} for row in result.costs] if ok else [],
        "curves": [{**keys, **row} for row in result.curves] if ok else [],
    }
