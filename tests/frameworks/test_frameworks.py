"""Each integration recording a real (tiny, CPU, random-weight) training run, read back through the CLI.

These need torch, transformers, lightning, keras, accelerate and optuna: `.ci/run` installs them in its
"framework integrations" stage; the core suite does not collect this folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import pytest

from conftest import cli, read_lines, run_python

ENV = {"KERAS_BACKEND": "torch", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "",
       "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
FRAMEWORKS = ("torch", "transformers", "lightning", "keras", "accelerate", "optuna")


def script(code: str, tmp: Path, check: bool = True) -> Any:
    env = dict(ENV, EXPRAG_PLUS_DIR=str(tmp / "runs"))
    return run_python(code, cwd=tmp, env=env, timeout=600, check=check)


def q(tmp: Path, *args: str) -> Any:
    p = cli(*args, "--json", "--root", str(tmp / "runs"), cwd=tmp)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def files(tmp: Path) -> List[List[Dict[str, Any]]]:
    return [read_lines(p) for p in sorted((tmp / "runs").glob("*.jsonl"))]


def of(records: List[Dict[str, Any]], rtype: str) -> List[Dict[str, Any]]:
    return [r for r in records if r["type"] == rtype]


def test_importing_the_package_imports_no_framework(tmp_path: Path) -> None:
    p = run_python(f"""
        import sys, json
        import exprag_plus, exprag_plus.cli, exprag_plus.integrations
        from exprag_plus import Experiment
        print(json.dumps(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules)))
        import exprag_plus.integrations.optuna
        print(json.dumps("optuna" in sys.modules))
    """, cwd=tmp_path)
    first, second = p.stdout.splitlines()
    assert json.loads(first) == [] and json.loads(second) is True  # the check itself can see an import


TRANSFORMERS = """
    import torch
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments, TrainerCallback
    from exprag_plus.integrations.transformers import ExpragCallback

    class Data(torch.utils.data.Dataset):
        def __init__(self, n, seed):
            g = torch.Generator().manual_seed(seed)
            self.x = torch.randint(5, 60, (n, 8), generator=g)
            self.y = (self.x[:, 0] > 30).long()
        def __len__(self):
            return len(self.x)
        def __getitem__(self, i):
            return {"input_ids": self.x[i], "attention_mask": torch.ones(8, dtype=torch.long), "labels": self.y[i]}

    class Boom(TrainerCallback):
        def __init__(self, at):
            self.at = at
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == self.at:
                raise RuntimeError("diverged at step %d" % self.at)

    def train(lr, name=None, boom=None, evaluate=True):
        torch.manual_seed(0)
        config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=32, max_position_embeddings=16, num_labels=2)
        model = BertForSequenceClassification(config)
        args = TrainingArguments(output_dir="out", learning_rate=lr, max_steps=6, per_device_train_batch_size=4,
                                 logging_steps=2, eval_strategy="steps", eval_steps=3, save_strategy="no",
                                 report_to="none", use_cpu=True, disable_tqdm=True, seed=0)
        cb = ExpragCallback(name=name)
        callbacks = [cb] + ([Boom(boom)] if boom else [])
        trainer = Trainer(model=model, args=args, train_dataset=Data(16, 1), eval_dataset=Data(8, 2), callbacks=callbacks)
        trainer.train()
        if evaluate:
            trainer.evaluate()
        return cb
"""


def test_transformers_trainer_records_a_run_per_training(tmp_path: Path) -> None:
    script(TRANSFORMERS + """
    cb = train(1e-3, name="bert-a")
    assert cb.on_event_added_in_a_later_release(None, None, None, logs={}) is None
    train(5e-2, name="bert-b")
    """, tmp_path)
    recs = files(tmp_path)
    assert len(recs) == 2
    for r in recs:
        start, end = r[0], r[-1]
        assert end["type"] == "run_end" and end["status"] == "completed"
        assert start["metadata"]["args"]["max_steps"] == 6 and start["metadata"]["model"]["hidden_size"] == 16
        tracks = [t["value"] for t in of(r, "track")]
        assert [t["step"] for t in tracks if "loss" in t] == [2, 4, 6]
        # evaluations during training (steps 3, 6) and trainer.evaluate() after it, all in this run
        assert [t["step"] for t in tracks if "eval_loss" in t] == [3, 6, 6]
        assert any("train_runtime" in t for t in tracks)
    assert {r[0]["metadata"]["args"]["learning_rate"] for r in recs} == {1e-3, 5e-2}

    best = q(tmp_path, "best", "eval_loss", "--min")
    assert best["run"]["name"] in ("bert-a", "bert-b") and best["considered"] == 2 and best["best_step"] in (3, 6)
    hist = q(tmp_path, "history", "latest", "loss")
    assert [p["step"] for p in hist["points"]] == [2, 4, 6]
    cmp = q(tmp_path, "compare", "latest", "latest~1")
    assert "args.learning_rate" in {m["path"] for m in cmp["metadata"]}
    assert {"eval_loss", "loss", "train_loss"} <= {m["path"] for m in cmp["metrics"]}


def test_transformers_training_that_raises_ends_the_run_failed(tmp_path: Path) -> None:
    p = script(TRANSFORMERS + """
    train(1e-3, name="uncaught", boom=3)
    """, tmp_path, check=False)
    assert p.returncode == 1 and "diverged at step 3" in p.stderr
    (r,) = files(tmp_path)
    assert r[-1]["status"] == "failed" and r[-1]["error"]["type"] == "RuntimeError"
    assert "diverged at step 3" in r[-1]["error"]["message"]
    assert [t["value"]["step"] for t in of(r, "track") if "loss" in t["value"]] == [2]

    # Caught by the script, which goes on to exit normally: training never reported its end.
    script(TRANSFORMERS + """
    try:
        train(1e-3, name="caught", boom=5)
    except RuntimeError:
        pass
    """, tmp_path)
    shown = q(tmp_path, "show", "latest")
    text = json.dumps(shown)
    assert '"failed"' in text and "Unfinished" in text


def test_transformers_joins_an_open_experiment(tmp_path: Path) -> None:
    script(TRANSFORMERS + """
    from exprag_plus import Experiment
    with Experiment("outer", {"purpose": "join"}) as exp:
        cb = train(1e-3, evaluate=False)
        assert cb.experiment is exp and not exp.closed
    """, tmp_path)
    (r,) = files(tmp_path)
    assert r[0]["name"] == "outer" and r[-1]["status"] == "completed"
    (params,) = of(r, "params")
    assert params["params"]["args"]["learning_rate"] == 1e-3
    assert any("loss" in t["value"] for t in of(r, "track"))


LIGHTNING = """
    import torch, lightning as L
    from exprag_plus.integrations.lightning import ExpragLogger

    class Tiny(L.LightningModule):
        def __init__(self, lr=0.05, fail_at=-1):
            super().__init__()
            self.save_hyperparameters()
            self.net = torch.nn.Linear(4, 1)
        def training_step(self, batch, i):
            if self.global_step == self.hparams.fail_at:
                raise ValueError("bad batch at step %d" % self.global_step)
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            self.log("train/loss", loss)
            return loss
        def validation_step(self, batch, i):
            x, y = batch
            self.log("val/loss", torch.nn.functional.mse_loss(self.net(x), y))
        def test_step(self, batch, i):
            x, y = batch
            self.log("test/loss", torch.nn.functional.mse_loss(self.net(x), y))
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    def loader():
        g = torch.Generator().manual_seed(0)
        x = torch.randn(32, 4, generator=g)
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)

    def fit(lr, fail_at=-1, test=True):
        logger = ExpragLogger(name="tiny-lightning")
        trainer = L.Trainer(max_epochs=3, logger=logger, log_every_n_steps=2, accelerator="cpu", devices=1,
                            enable_progress_bar=False, enable_model_summary=False, default_root_dir="lt")
        model = Tiny(lr=lr, fail_at=fail_at)
        trainer.fit(model, loader(), loader())
        if test:
            trainer.test(model, loader())
        return logger
"""


def test_lightning_logger_records_fit_and_test(tmp_path: Path) -> None:
    script(LIGHTNING + """
    fit(0.05)
    fit(0.2)
    """, tmp_path)
    recs = files(tmp_path)
    assert len(recs) == 2
    for r in recs:
        assert r[-1]["status"] == "completed"
        assert of(r, "params")[0]["params"]["lr"] in (0.05, 0.2)
        tracks = [t["value"] for t in of(r, "track")]
        train_steps = [t["step"] for t in tracks if "train/loss" in t]
        assert train_steps == sorted(train_steps) and len(train_steps) >= 3
        assert sum("val/loss" in t for t in tracks) == 3 and sum("test/loss" in t for t in tracks) == 1
    # checkpoints are named after the run
    ckpts = {p.parent.parent.name for p in (tmp_path / "lt").rglob("*.ckpt")}
    assert ckpts == {r[0]["run_id"] for r in recs}

    best = q(tmp_path, "best", "val/loss", "--min")
    assert best["considered"] == 2
    assert len(q(tmp_path, "history", best["run"]["id"], "train/loss")["points"]) >= 3
    cmp = q(tmp_path, "compare", "latest", "latest~1")
    assert {"train/loss", "val/loss", "test/loss"} <= {m["path"] for m in cmp["metrics"]}


def test_lightning_training_that_raises_ends_the_run_failed_at_once(tmp_path: Path) -> None:
    script(LIGHTNING + """
    from exprag_plus import load_run
    try:
        logger = fit(0.05, fail_at=5)
    except ValueError:
        pass
    run = load_run("latest")
    assert run.status == "failed", run.status  # before the process ends
    print("ok")
    """, tmp_path)
    (r,) = files(tmp_path)
    assert r[-1]["status"] == "failed" and r[-1]["error"]["type"] == "ValueError"
    assert "bad batch at step 5" in r[-1]["error"]["message"]
    assert q(tmp_path, "history", "latest", "train/loss")["count"] >= 1


KERAS = """
    import os
    assert os.environ["KERAS_BACKEND"] == "torch"
    import numpy as np, keras
    from exprag_plus.integrations.keras import ExpragCallback

    def fit(lr, epochs=3):
        keras.utils.set_random_seed(0)
        x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
        y = x.sum(axis=1, keepdims=True)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr), loss="mse", metrics=["mae"])
        cb = ExpragCallback(name="keras-mlp", metadata={"lr": lr}, batch_every=2)
        model.fit(x, y, epochs=epochs, batch_size=16, validation_split=0.25, verbose=0, callbacks=[cb])
        model.evaluate(x, y, verbose=0, callbacks=[cb])
        return cb
"""


def test_keras_on_torch_records_epochs_batches_and_evaluate(tmp_path: Path) -> None:
    script(KERAS + """
    import keras
    assert keras.backend.backend() == "torch"
    fit(0.01)
    fit(0.05)
    """, tmp_path)
    recs = files(tmp_path)
    assert len(recs) == 2
    for r in recs:
        assert r[-1]["status"] == "completed"
        meta = r[0]["metadata"]
        assert meta["fit"]["epochs"] == 3 and meta["lr"] in (0.01, 0.05)
        assert meta["optimizer"]["learning_rate"] == pytest.approx(meta["lr"])
        tracks = [t["value"] for t in of(r, "track")]
        assert [t["step"] for t in tracks if "val_loss" in t] == [0, 1, 2]
        assert [t["step"] for t in tracks if "batch/loss" in t] == [1, 3, 4, 6, 7, 9]  # batches 0, 2 of 3 per epoch
        assert sum("test/loss" in t for t in tracks) == 1
    best = q(tmp_path, "best", "val_loss", "--min")
    assert best["run"]["metadata"]["lr"] in (0.01, 0.05) and best["considered"] == 2
    assert [p["step"] for p in q(tmp_path, "history", "latest", "val_loss")["points"]] == [0, 1, 2]
    cmp = q(tmp_path, "compare", "latest", "latest~1")
    assert "lr" in {m["path"] for m in cmp["metadata"]} and "val_mae" in {m["path"] for m in cmp["metrics"]}


ACCELERATE = """
    import torch
    from accelerate import Accelerator
    from exprag_plus.integrations.accelerate import ExpragTracker

    def train(lr, fail=False):
        tracker = ExpragTracker(run_name="accel")
        acc = Accelerator(log_with=[tracker], cpu=True)
        acc.init_trackers("proj", config={"lr": lr, "batch": 8})
        torch.manual_seed(0)
        net = torch.nn.Linear(4, 1)
        opt = torch.optim.SGD(net.parameters(), lr=lr)
        x = torch.randn(32, 4)
        net, opt = acc.prepare(net, opt)
        for step in range(5):
            loss = torch.nn.functional.mse_loss(net(x), x.sum(1, keepdim=True))
            acc.backward(loss)
            opt.step(); opt.zero_grad()
            acc.log({"train_loss": loss.item()}, step=step)
            if fail and step == 2:
                raise RuntimeError("out of memory (pretend)")
        acc.end_training()
        return tracker
"""


def test_accelerate_tracker(tmp_path: Path) -> None:
    script(ACCELERATE + """
    t = train(0.01)
    assert t.tracker.closed
    train(0.1)
    """, tmp_path)
    recs = files(tmp_path)
    assert len(recs) == 2
    for r in recs:
        assert r[0]["name"] == "accel" and r[0]["metadata"]["batch"] == 8 and r[-1]["status"] == "completed"
        assert [t["value"]["step"] for t in of(r, "track")] == [0, 1, 2, 3, 4]
        assert not of(r, "params")  # the config arrived before any metric: it is run_start's metadata
    best = q(tmp_path, "best", "train_loss", "--min", "--final")
    assert best["run"]["metadata"]["lr"] in (0.01, 0.1)
    assert len(q(tmp_path, "history", "latest", "train_loss")["points"]) == 5
    assert [m["path"] for m in q(tmp_path, "compare", "latest", "latest~1")["metadata"]] == ["lr"]

    p = script(ACCELERATE + """
    train(0.01, fail=True)
    """, tmp_path, check=False)
    assert p.returncode == 1
    latest = q(tmp_path, "show", "latest")
    assert '"failed"' in json.dumps(latest) and "out of memory" in json.dumps(latest)


OPTUNA = """
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from exprag_plus.integrations.optuna import ExpragCallback

    def objective(trial):
        x = trial.suggest_float("x", -4, 4)
        depth = trial.suggest_int("depth", 1, 3)
        for step in range(3):
            trial.report((x - 1) ** 2 + depth + 1.0 / (step + 1), step)
        if trial.number == 3:
            raise ValueError("trial 3 crashed")
        return (x - 1) ** 2 + depth

    study = optuna.create_study(study_name="quad", direction="minimize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=5, callbacks=[ExpragCallback()], catch=(ValueError,))
    print(study.best_trial.number, study.best_value)
"""


def test_optuna_study_of_five_trials(tmp_path: Path) -> None:
    p = script(OPTUNA, tmp_path)
    best_number, best_value = p.stdout.split()
    recs = sorted(files(tmp_path), key=lambda r: r[0]["metadata"]["optuna"]["trial"])
    assert len(recs) == 5
    for n, r in enumerate(recs):
        meta = r[0]["metadata"]
        assert r[0]["name"] == "quad" and meta["optuna"]["study"] == "quad" and meta["optuna"]["trial"] == n
        assert set(meta) == {"x", "depth", "optuna"}
        assert [t["value"].get("step") for t in of(r, "track")][:3] == [0, 1, 2]
        if n == 3:
            assert r[-1]["status"] == "failed" and meta["optuna"]["state"] == "FAIL"
        else:
            assert r[-1]["status"] == "completed" and of(r, "track")[-1]["value"]["value"] == pytest.approx((meta["x"] - 1) ** 2 + meta["depth"])
    best = q(tmp_path, "best", "value", "--min")
    assert best["run"]["metadata"]["optuna"]["trial"] == int(best_number)
    assert best["best"] == pytest.approx(float(best_value)) and best["considered"] == 4
    assert [pt["step"] for pt in q(tmp_path, "history", best["run"]["id"], "intermediate_value")["points"]] == [0, 1, 2]
    cmp = q(tmp_path, "compare", "latest", "latest~1")
    assert {"x", "depth"} <= {m["path"] for m in cmp["metadata"]}


def test_optuna_inside_an_open_experiment_joins_it(tmp_path: Path) -> None:
    script(OPTUNA.replace("    study.optimize(", "    from exprag_plus import Experiment\n    with Experiment('sweep'):\n        study.optimize("), tmp_path)
    (r,) = files(tmp_path)
    assert r[0]["name"] == "sweep" and len(of(r, "params")) == 5
    assert [t["value"]["trial"] for t in of(r, "track")] == [0, 1, 2, 3, 4]
