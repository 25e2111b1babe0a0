"""A small learning-rate sweep, then the questions an agent would ask of it, through the library.

Run it, then try the same from the shell: `exprag-plus runs`, `exprag-plus best metrics.val_acc`,
`exprag-plus compare latest latest~1`.
"""

import math
import random

from exprag_plus import Experiment, load_runs, query

for lr in (0.003, 0.01, 0.03, 0.1):
    rng = random.Random(lr)
    with Experiment("lr sweep", metadata={"hparams": {"lr": lr, "epochs": 20}, "sweep": "lr"}) as exp:
        for step in range(20):
            progress = 1 - math.exp(-lr * 40 * (step + 1) / 20)
            noise = rng.gauss(0, 0.01)
            exp.track(
                {"step": step, "metrics": {"loss": 1.2 * (1 - progress) + 0.1 + noise,
                                           "val_acc": 0.5 + 0.45 * progress - (0.2 if lr > 0.05 and step > 10 else 0)}},
                note="epoch end",
            )

runs = [r for r in load_runs() if r.metadata.get("sweep") == "lr"]
best = query.best(runs, "metrics.val_acc")
print(f"best lr by validation accuracy: {best['run']['short_id']} "
      f"lr={next(r for r in runs if r.run_id == best['run']['id']).metadata['hparams']['lr']} "
      f"best={best['best']:.3f} at step {best['best_step']}, final={best['last']:.3f}")
print(f"({best['rule']}; {best['considered']} runs ranked)")
