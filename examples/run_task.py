"""Run a task schema (after hpcflow/MatFlow) inside a recorded run.

The schema says which parameters the shell commands consume and produce; the run's JSONL gets a `task`
record with the inputs, the outputs and every command. A value a token substitutes must be plain
(`<<parameter:p1>>` with 1, a path, `k=v`); other text, like sweep_stats' label, is read by the command
from "$EXPRAG_PARAM_label". Try also:
    exprag-plus task info examples/schemas/sweep_stats.yaml
    exprag-plus task run examples/schemas/seed_intermediate_p2.yaml --input p1=1
"""

from pathlib import Path

from exprag_plus import Experiment, TaskSchema

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    schema = TaskSchema.from_file(HERE / "schemas" / "seed_intermediate_p2.yaml")
    print(schema.info)
    with Experiment("task demo", metadata={"schema": schema.objective}) as exp:
        for p1 in (1, 10, 100):
            outputs = exp.run_task(schema, {"p1": p1})
            exp.track({"p1": p1, "p3": outputs["p3"]}, note="p3 = p1 + 2 through the intermediate p2")
            print(f"p1={p1} -> {outputs}")
        stats = TaskSchema.from_file(HERE / "schemas" / "sweep_stats.yaml")
        print(exp.run_task(stats, {"scale": 2, "label": "any text: it's read from $EXPRAG_PARAM_label"}))
    print(f"recorded run {exp.run_id}: exprag-plus show {exp.run_id[-8:]}")
