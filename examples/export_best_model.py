"""A small sweep whose runs save their "weights", and a post-run action that exports the best model.

The idea of experimaestro's MNIST demo, without ML dependencies:

    python examples/export_best_model.py
    exprag-plus actions list latest
    exprag-plus actions run latest ExportBestModel                      # asks for the folder on a terminal
    exprag-plus actions run latest ExportBestModel --set folder=best-model --json
    exprag-plus actions show latest ExportBestModel                     # params and past executions

Each training run writes `model.json` into its own folder `<runs folder>/<run_id>/`. The last run,
"pick and export", ranks the sweep and registers `ExportBestModel`, which, when run, picks the best run
by validation accuracy (`exprag_plus.query.best`) and copies its weights to a folder the user chooses.

Loading the action later imports this file as the module `export_best_model`: everything that runs the
sweep stays under `if __name__ == "__main__":`.
"""

import json
import math
import os
import random
import secrets
import shutil
from pathlib import Path
from typing import Any, Dict, Optional

from exprag_plus import Action, Experiment, Interaction, load_runs, query


class ExportBestModel(Action):
    """Copy the weights of the sweep's best run to a folder of your choice."""

    sweep_id: str
    metric: str = "metrics.val_acc"
    runs_dir: Optional[str] = None  # the runs folder (default: the usual one)

    def describe(self) -> str:
        return f"copy the weights (model.json) of the best run of sweep {self.sweep_id} by {self.metric} to a folder"

    def execute(self, interaction: Interaction) -> Dict[str, Any]:
        runs = [r for r in load_runs(self.runs_dir)
                if r.metadata.get("sweep_id") == self.sweep_id and r.status == "completed"]
        best = query.best(runs, self.metric)
        winner = best["run"]
        run = next(r for r in runs if r.run_id == winner["id"])
        source = Path(run.path).parent / run.run_id / "model.json"  # the folder the run saved its weights in
        folder = Path(interaction.text("folder", "Copy the best model to folder:")).expanduser()
        target = folder / "model.json"
        if target.exists() and not interaction.checkbox("overwrite", f"{target} exists. Overwrite it?", default=False):
            raise FileExistsError(f"{target} exists; pass --set overwrite=true to replace it")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        return {"run_id": winner["id"], "short_id": winner["short_id"], self.metric: best["best"],
                "copied_to": str(target.resolve())}


def train(lr: float, sweep_id: str, epochs: int = 8) -> None:
    """A pretend training run: a few 'epochs', metrics tracked, weights saved in the run's folder."""
    rng = random.Random(lr)
    with Experiment("export demo: train", metadata={"hparams": {"lr": lr, "epochs": epochs}, "sweep_id": sweep_id}) as exp:
        weights = [rng.uniform(-1, 1) for _ in range(8)]
        for epoch in range(epochs):
            weights = [w - lr * (w - 0.5) for w in weights]
            fit = 1 - math.exp(-lr * 6 * (epoch + 1))
            exp.track({"step": epoch, "metrics": {"loss": 1.0 - 0.9 * fit + rng.gauss(0, 0.01),
                                                  "val_acc": 0.5 + 0.45 * fit - (0.15 if lr > 0.3 else 0.0)}})
        folder = os.path.join(exp.root, exp.run_id)
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "model.json"), "w", encoding="utf-8") as f:
            json.dump({"lr": lr, "weights": weights}, f)


def main() -> None:
    sweep_id = secrets.token_hex(4)
    for lr in (0.03, 0.1, 0.5):
        train(lr, sweep_id)
    with Experiment("export demo: pick and export", metadata={"sweep": sweep_id}) as exp:
        runs = [r for r in load_runs(exp.root) if r.metadata.get("sweep_id") == sweep_id]
        best = query.best(runs, "metrics.val_acc")
        exp.track({"best_run": best["run"]["id"], "best_val_acc": best["best"]}, note="ranking of the sweep")
        name = exp.add_action(ExportBestModel(sweep_id=sweep_id, runs_dir=exp.root))
    print(f"sweep {sweep_id}: best run {best['run']['short_id']} (val_acc {best['best']:.3f})")
    print(f"export it with: exprag-plus actions run latest {name} --set folder=best-model")


if __name__ == "__main__":
    main()
