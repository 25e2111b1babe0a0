"""The Transformers callback's cost on a Trainer step loop, against the same loop without it.

A tiny BERT built from a config (random weights, CPU, nothing downloaded) trains `--steps` steps and logs
every step (`logging_steps=1`, the worst case for a tracker). Rounds alternate with and without the
callback; each round times `trainer.train()` alone. The run's start (git state and snapshot, run file:
once per training, in `on_train_begin`) is timed apart and reported on its own line; the ratio is of the
step loop. Goal: median(with, less the start) / median(without) <= 1.05.
Needs torch and transformers (`.ci/run`'s framework stage installs them).

    python benchmarks/integrations.py [--steps 200] [--rounds 7]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments  # noqa: E402

from exprag_plus.integrations.transformers import ExpragCallback  # noqa: E402


class TimedStart(ExpragCallback):
    start_s = 0.0

    def on_train_begin(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        super().on_train_begin(*args, **kwargs)
        self.start_s = time.perf_counter() - t0


class Data(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randint(5, 60, (n, 16), generator=g)
        self.y = (self.x[:, 0] > 30).long()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.x[i], "attention_mask": torch.ones(16, dtype=torch.long), "labels": self.y[i]}


def one_round(steps: int, with_callback: bool, workdir: str) -> "tuple[float, float]":
    torch.manual_seed(0)
    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32, num_labels=2)
    args = TrainingArguments(output_dir=os.path.join(workdir, "out"), max_steps=steps, per_device_train_batch_size=8,
                             logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
                             disable_tqdm=True, seed=0)
    callbacks = [TimedStart(name="bench", root=os.path.join(workdir, "runs"))] if with_callback else []
    trainer = Trainer(model=BertForSequenceClassification(config), args=args, train_dataset=Data(256),
                      callbacks=callbacks)
    t0 = time.perf_counter()
    trainer.train()
    elapsed = time.perf_counter() - t0
    if callbacks:
        callbacks[0].experiment.close()
        return elapsed, callbacks[0].start_s
    return elapsed, 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=7)
    opts = ap.parse_args()
    transformers.logging.set_verbosity_error()
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        one_round(5, True, tmp)  # warm-up: imports, allocator, first run folder
        base, cb, starts = [], [], []
        for _ in range(opts.rounds):
            base.append(one_round(opts.steps, False, tmp)[0])
            total, start = one_round(opts.steps, True, tmp)
            cb.append(total - start)
            starts.append(start)
    b, c = statistics.median(base), statistics.median(cb)
    ratio = c / b
    print(f"Trainer.train(), {opts.steps} steps logging every step, median of {opts.rounds} rounds")
    print(f"  without callback: {b * 1000 / opts.steps:.2f} ms/step")
    print(f"  with ExpragCallback: {c * 1000 / opts.steps:.2f} ms/step")
    print(f"  run start (once per training): {statistics.median(starts) * 1000:.1f} ms")
    print(f"  ratio: {ratio:.3f} (goal <= 1.05) {'OK' if ratio <= 1.05 else 'OVER'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
