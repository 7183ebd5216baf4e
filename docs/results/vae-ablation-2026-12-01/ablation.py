"""The ablation of Kingma et al.'s M1+M2 recipe at equal time: 600 training seconds each, one
thread, two runs at a time on 2 cores, split seed 0, scored by VALIDATION error only.

    python docs/results/vae-ablation-2026-12-01/ablation.py M1_RUN_DIR OUT_DIR

M1_RUN_DIR: a finished ``scnf train configs/mnist-cpu-m1.toml`` run (the shared M1; in a
``scnf reproduce table2`` directory, ``OUT/runs/m1``). Each row changes one point of the recipe
(configs/mnist-cpu-m1m2.toml) back to our earlier variant. The last row, ``recipe-2400s``, is a
copy of the table's M1+M2 split-0 run (``M1_RUN_DIR/../m1m2-split0``) extended from 1200 to 2400
training seconds with ``scnf train --resume``: what longer training buys. Finished runs in
OUT_DIR are reused; OUT_DIR/ablation.md gets the table.
"""
import shutil
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SCNF = str(Path(sys.executable).with_name("scnf"))
BASE = ["--set", "train.max_seconds=600", "--set", "train.eval_every=2500", "--set", "data.split_seed=0"]
ROWS = [  # name, what it changes (the point), config, overrides (M1 = "{m1}")
    ("recipe", "- (Kingma et al.'s recipe)", "mnist-cpu-m1m2.toml", ["model.m1_run={m1}"]),
    ("alpha-earlier", "1: alpha -> our clf_weight 55 on the labelled mean, rows as drawn", "mnist-cpu-m1m2.toml",
     ["model.m1_run={m1}", "train.alpha=0", "train.clf_weight=55"]),
    ("joint-m1", "3: M1 trained jointly from step 0 (Bernoulli)", "mnist-cpu-m1m2.toml", ['model.m1_run=""']),
    ("joint-m1-continuous", "3+5: joint, continuous Bernoulli of dequantised pixels", "mnist-cpu-m1m2.toml",
     ['model.m1_run=""', 'model.vae_likelihood="continuous-bernoulli"']),
    ("all-dims", "4: inactive z1 dimensions kept", "mnist-cpu-m1m2.toml", ["model.m1_run={m1}", "model.m1_active_std=0"]),
    ("adamax-linear", "2: Adamax 1e-3 decaying linearly to 0 over 17,000 steps", "mnist-cpu-m1m2.toml",
     ["model.m1_run={m1}", "train.optimizer=adamax", "train.lr=1e-3", "train.schedule=linear", "train.steps=17000"]),
    ("m2-recipe", "M2 alone: Kingma et al.'s recipe", "mnist-cpu-m2.toml", []),
    ("m2-alpha-earlier", "M2 alone, 1: alpha -> our clf_weight 55", "mnist-cpu-m2.toml",
     ["train.alpha=0", "train.clf_weight=55"]),
    ("recipe-2400s", "the table's split-0 recipe run extended to 2400 training seconds", None, []),
]


def train(row, m1: str, out: Path) -> None:
    name, _, config, sets = row
    if (out / name / "metrics.json").exists() and config is not None:
        return
    if config is None:  # extend a copy of the table's split-0 run
        if (out / name / "metrics.json").exists() and json.loads((out / name / "metrics.json").read_text())[
                "seconds"] > 1300:
            return
        if not (out / name).exists():
            shutil.copytree(Path(m1).parent / "m1m2-split0", out / name)
        args = [SCNF, "train", str(out / name / "config.toml"), "--out", str(out / name), "--resume",
                "--set", "train.max_seconds=2400"]
        with open(out / f"{name}.log", "w") as log:
            subprocess.run(args, stdout=log, stderr=subprocess.STDOUT, check=True)
        return
    args = [SCNF, "train", f"configs/{config}", "--out", str(out / name), *BASE]
    for s in sets:
        args += ["--set", s.replace("{m1}", json.dumps(m1))]
    with open(out / f"{name}.log", "w") as log:
        subprocess.run(args, stdout=log, stderr=subprocess.STDOUT, check=True)


def summarise(out: Path) -> str:
    lines = ["| row | what changes | validation error % | steps | training s |", "|---|---|---|---|---|"]
    for name, what, _, _ in ROWS:
        f = out / name / "metrics.json"
        if f.exists():
            m = json.loads(f.read_text())
            lines.append(f"| {name} | {what} | {m['val_error_pct']:.2f} | {m['steps']} | {m['seconds']:.0f} |")
        else:
            lines.append(f"| {name} | {what} | not run | | |")
    text = "\n".join(lines) + "\n"
    (out / "ablation.md").write_text(text)
    return text


if __name__ == "__main__":
    m1, out = str(Path(sys.argv[1]).resolve()), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    only = sys.argv[3].split(",") if len(sys.argv) > 3 else None
    rows = [r for r in ROWS if only is None or r[0] in only]
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda r: train(r, m1, out), rows))
    print(summarise(out))
