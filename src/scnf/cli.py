"""The ``scnf`` command: a thin shell over the library.

Exit codes: 0 success; 2 a usage, config, data, run-directory or checkpoint error (one
line on stderr); 3 a training failure the user can act on (divergence, ODE solver failure,
out of memory, a lost process; one line naming the last good checkpoint and how to resume);
130/143 stopped by SIGINT/SIGTERM (training finishes its step and checkpoints first); 141
(quietly) the reader of the output went away (``scnf evaluate RUN | head``); 1 a bug (the
traceback, and a line asking for a report).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path

from .config import IMAGE_DATASETS, TOY_DATASETS

EXIT_BUG = 1
EXIT_USAGE = 2
EXIT_TRAINING = 3
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}")
    return v


def _positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {s!r}") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {s!r}")
    return v


def _dims(s: str) -> list[int]:
    try:
        dims = [int(d) for d in s.split(",") if d.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None
    if not dims or any(not 1 <= d <= 784 for d in dims):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers in [1, 784], got {s!r}")
    return dims


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="scnf", description="Semi-supervised learning with Semi-Conditional Normalizing Flows")
    from . import __version__

    p.add_argument("--version", action="version", version=f"scnf {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    d = sub.add_parser("demo", help="train SCNF-GLOW on moons with 10 labels (the embedded default)")
    d.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")

    t = sub.add_parser("train", help="train from a TOML config")
    t.add_argument("config", help="TOML config file")
    t.add_argument("--out", help="run directory (default: runs/<config name>)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    t.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override train.device")
    t.add_argument("--seed", type=int, help="override the config's seed")
    t.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config key, e.g. --set data.split_seed=1 (repeatable)")
    t.add_argument("--nproc", type=_positive_int, default=1, help="processes (DistributedDataParallel)")
    _allow_changed_data(t, "--resume: continue")

    e = sub.add_parser("evaluate", help="evaluate a run directory's checkpoint on its test set (error, NLL, "
                       "calibration; writes reliability.png)")
    e.add_argument("run_dir")
    _allow_changed_data(e, "evaluate")

    r = sub.add_parser("reproduce", help="reproduce a table of the paper")
    rsub = r.add_subparsers(dest="what", required=True, parser_class=_Parser)
    t1 = rsub.add_parser("table1", help="Table 1: the toy problems (moons, circles), 10 labels, 5 seeds")
    t1.add_argument("--seeds", type=_positive_int, default=5, help="seeds (default 5)")
    t1.add_argument("--out", help="output directory (default: runs/table1)")
    t1.add_argument("--rows", help="comma-separated f-h rows, e.g. glow-glow,glow-gmm,ffjord-glow,ffjord-gmm "
                    "(default glow-glow,glow-gmm)")
    t1.add_argument("--datasets", help="datasets (default moons,circles)")
    t1.add_argument("--steps", type=_positive_int, help="override training steps (quick looks)")
    t1.add_argument("--jobs", type=_positive_int, default=1, help="trainings run at once (one thread each)")
    t1.add_argument("--clf-weight", type=float,
                    help="the classification-loss weight (default 1, chosen on validation points)")
    t1.add_argument("--labelled-share", type=float,
                    help="share of every batch (drawn with replacement) taken from the 10 labelled points, "
                         "in [0, 1) (default 0.1: the authors' 1/3 grew density spikes on the labelled "
                         "points, test NLL on moons 1.22-1.30 instead of ~1.14; 0.02 on ffjord-glow, "
                         "chosen on validation points)")
    t1.add_argument("--ffjord-train-tol", type=_positive_float,
                    help="FFJORD rows: solver rtol = atol while training (default 1e-3, chosen on "
                         "validation points; evaluation keeps 1e-5)")
    t1.add_argument("--evaluate-on", choices=["test", "validation"], default="test",
                    help="score on the test points (default) or on validation points drawn from the "
                         "training distribution (to choose settings without the test set)")
    t2 = rsub.add_parser("table2", help="Table 2: MNIST with 100 labels, SCNF rows and the VAE baselines")
    t2.add_argument("--profile", choices=["cpu", "paper"], default="cpu",
                    help="cpu (configs/mnist-cpu*.toml, default) or paper (the authors' recipe, GPU)")
    t2.add_argument("--out", help="output directory (default: runs/table2-<profile>)")
    t2.add_argument("--rows", help="comma-separated rows, e.g. glow-sgd,gmm-emsgd-clf,m2,m1m2 "
                    "(default: the profile's rows)")
    t2.add_argument("--splits", default="0,1,2", help="comma-separated split seeds (default 0,1,2)")
    t2.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override a config key of every row (repeatable)")
    t2.add_argument("--configs", help="the configs directory (default: the repository's configs/)")
    t2.add_argument("--jobs", type=_positive_int, default=1, help="trainings run at once (one thread each)")

    da = sub.add_parser("data", help="datasets")
    dsub = da.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    f = dsub.add_parser("fetch", help="download/verify a dataset into the cache")
    f.add_argument("name", choices=IMAGE_DATASETS)
    f.add_argument("--data-dir", help="cache directory (default: $SCNF_DATA or the per-user cache)")

    cf = sub.add_parser("config", help="print every config key with its default and meaning (TOML)")
    cf.add_argument("--defaults", action="store_true", help="(the only mode) the default of every key")

    im = sub.add_parser("import-released", help="convert the authors' released checkpoint (pretrained/model.torch) "
                                                "into a run directory")
    im.add_argument("checkpoint", help="the authors' state dict (torch.save(model.state_dict()))")
    im.add_argument("--out", required=True, help="run directory to write (config.toml, checkpoint.pt)")
    im.add_argument("--model", choices=["mnist", "toy"], default="mnist",
                    help="which of the authors' models the file holds (default mnist)")

    s = sub.add_parser("summary", help="build a model and print its layers and parameter counts")
    s.add_argument("model", choices=["mnist", "mnist-gmm", "toy"], nargs="?", default="mnist")
    s.add_argument("--layers", action="store_true", help="also print every layer (thousands of lines for mnist)")

    an = sub.add_parser("analyse", help="analyses of a trained image run (paper Figs. 2-4, Sec. 4.4, Table 3)")
    an.add_argument("run_dir", help="run directory (config.toml, checkpoint.pt)")
    an.add_argument("what", choices=["reconstructions", "label-swap", "samples", "tsne", "obfuscation",
                                     "dimension-ablation"])
    an.add_argument("--out", help="where figures and analysis.md go (default: RUN_DIR)")
    an.add_argument("--seed", type=int, help="seed (default 0; dimension-ablation: the run's seed)")
    an.add_argument("--device", choices=["auto", "cpu", "cuda"],
                    help="device (default cpu; dimension-ablation: the config's train.device)")
    an.add_argument("--temperature", type=_positive_float, help="samples: prior scale factor (default 1)")
    an.add_argument("--n", type=_positive_int, help="tsne: test images (default 2000)")
    an.add_argument("--n-train", type=_positive_int, help="obfuscation: training images (default 10000)")
    an.add_argument("--n-test", type=_positive_int, help="obfuscation: test images (default all)")
    an.add_argument("--steps", type=_positive_int, help="dimension-ablation: override training steps")
    an.add_argument("--dims", type=_dims, help="dimension-ablation: comma-separated deep_dims "
                                               "(default 49,98,196,392,784)")
    _allow_changed_data(an, "analyse")

    o = sub.add_parser("ood", help="out-of-distribution detection with an image run's density: AUROC of log p(x), "
                                   "a complexity-corrected score and a typicality test against another data set")
    o.add_argument("run_dir", help="run directory of an image run (mnist or fashion-mnist)")
    o.add_argument("--against", required=True, choices=IMAGE_DATASETS,
                   help="the out-of-distribution data set (its test split)")
    o.add_argument("--n", type=_positive_int, default=2000, help="test images of each data set (default 2000)")
    o.add_argument("--n-train", type=_positive_int, default=2000,
                   help="training images that give the typical set's mean -log p (default 2000)")
    o.add_argument("--out", help="where ood.json and ood.png go (default: RUN_DIR)")
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    _allow_changed_data(o, "score")

    sg = sub.add_parser("suggest", help="which unlabelled training images of a run to label next: "
                                        "suggestions.csv and a grid of the images")
    sg.add_argument("run_dir", help="run directory of an image run")
    sg.add_argument("--n", type=_positive_int, default=100, help="rows to suggest (default 100)")
    sg.add_argument("--strategy", default="density",
                    choices=["density", "entropy", "margin", "novelty", "discovery", "random"],
                    help="density: uncertainty weighted by the exact density (default); entropy, margin: "
                         "uncertainty; novelty: lowest log p(x) (outliers); discovery: the largest groups "
                         "of images no label covers (a class with no label yet); random")
    sg.add_argument("--max-candidates", type=_positive_int, default=None,
                    help="score only the first N unlabelled rows of the training pool (default: all)")
    sg.add_argument("--no-diversity", action="store_true", help="the best scores, without spreading the batch")
    sg.add_argument("--out", help="where suggestions.csv and suggestions.png go (default: RUN_DIR)")
    sg.add_argument("--seed", type=int, default=0)
    _allow_changed_data(sg, "suggest")
    return p


def _allow_changed_data(parser, verb: str) -> None:
    parser.add_argument("--allow-changed-data", action="store_true",
                        help=f"{verb} even if your data file or folder changed since the run recorded it "
                             "(data.json; a warning names what changed)")


def _cmd_ood(args) -> int:
    from .analysis.ood import run_ood

    print(json.dumps(run_ood(args.run_dir, args.against, n=args.n, n_train=args.n_train, out=args.out,
                             device=args.device, seed=args.seed), indent=2))
    return 0


def _cmd_suggest(args) -> int:
    from .analysis.active import suggest

    res = suggest(args.run_dir, n=args.n, strategy=args.strategy, out=args.out, seed=args.seed,
                  max_candidates=args.max_candidates, diversity=not args.no_diversity,
                  allow_changed_data=args.allow_changed_data)
    print(f"{len(res['rows'])} rows to label: {res['csv']}" + (f", {res['png']}" if res["png"] else ""))
    print("fill in their label column and train a new run with data.extra_labels = \"" + res["csv"] + "\"")
    return 0


def _cmd_demo(args) -> int:
    from .config import demo_config
    from .runs.run import run

    cfg = demo_config(seed=args.seed)
    cfg.train.device = args.device
    m = run(cfg, args.out, overwrite=True)
    print(f"demo: SCNF-GLOW on moons, 10 labels: test error {m['error_pct']:.2f} %, test NLL {m['nll']:.3f} nats, "
          f"{m['seconds']:.0f} s; wrote {args.out}/metrics.json, decision_boundary.png, report.md")
    return 0


def _cmd_train(args) -> int:
    from .config import load_config, resolve_paths, with_overrides

    if args.allow_changed_data and not args.resume:
        raise ValueError("--allow-changed-data applies with --resume only (a new run records the data it reads)")
    cfg = load_config(args.config)  # its relative paths are read against its folder
    if args.set:
        cfg = with_overrides(cfg, args.set)
    if args.device:
        cfg.train.device = args.device
    if args.seed is not None:
        cfg.seed = args.seed
    cfg = resolve_paths(cfg, Path.cwd())  # paths given with --set: against the working directory
    out = Path(args.out or Path("runs") / Path(args.config).stem)
    if args.nproc > 1:
        from .runs.rundir import check_run_dir
        from .training.launch import launch

        if cfg.train.batch_size % args.nproc:  # checked here too, so that it is one line, once
            raise ValueError(f"train.batch_size = {cfg.train.batch_size} is not divisible by --nproc {args.nproc}")
        check_run_dir(out, cfg, args.resume)
        return launch(args.nproc, list(args.argv))
    from .runs.run import run

    m = run(cfg, out, resume=args.resume, allow_changed_data=args.allow_changed_data)
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps(m, indent=2))
    return 0


def _cmd_evaluate(args) -> int:
    from .runs.run import evaluate_run

    print(json.dumps(evaluate_run(args.run_dir), indent=2))
    return 0


def _cmd_reproduce(args) -> int:
    from .runs.reproduce import table1, table2

    if args.what == "table2":
        try:
            splits = [int(s) for s in args.splits.split(",") if s.strip()]
        except ValueError:
            raise ValueError(f"--splits must be comma-separated integers, got {args.splits!r}") from None
        rows = None if args.rows is None else [r.strip() for r in args.rows.split(",") if r.strip()]
        text = table2(args.out or f"runs/table2-{args.profile}", profile=args.profile, rows=rows, splits=splits,
                      jobs=args.jobs, overrides=args.set, configs_dir=args.configs,
                      log=lambda line: print(line, file=sys.stderr, flush=True))
        print(text)
        return 0
    rows = [tuple(r.split("-")) for r in (args.rows or "glow-glow,glow-gmm").split(",") if r]
    for r in rows:
        if len(r) != 2 or r[0] not in ("glow", "ffjord") or r[1] not in ("glow", "gmm", "ffjord"):
            raise ValueError(f"bad row {'-'.join(r)!r}: expected f-h with f in glow/ffjord, h in glow/gmm/ffjord")
    datasets = [d for d in (args.datasets or "moons,circles").split(",") if d]
    for d in datasets:
        if d not in TOY_DATASETS:
            raise ValueError(f"bad dataset {d!r}: expected moons or circles")
    text = table1(args.out or "runs/table1", seeds=args.seeds, rows=rows, datasets=datasets, steps=args.steps,
                  jobs=args.jobs, clf_weight=args.clf_weight, ffjord_train_tol=args.ffjord_train_tol,
                  evaluate_on=args.evaluate_on, labelled_share=args.labelled_share)
    print(text)
    return 0


def _cmd_data(args) -> int:
    from .data import fetch_dataset

    path = fetch_dataset(args.name, args.data_dir)
    print(f"{args.name}: verified in {path}")
    return 0


def _cmd_config(args) -> int:
    from .config import reference_toml

    print(reference_toml(), end="")
    return 0


def _cmd_import_released(args) -> int:
    from .runs.imported import import_released

    net = import_released(args.checkpoint, args.out, model=args.model)
    n = net.parameter_counts()
    print(f"imported the released {args.model} model ({n['f']:,} + {n['h']:,} parameters) into {args.out}: "
          f"scnf evaluate {args.out}" + (f", scnf analyse {args.out} ..." if args.model == "mnist" else ""))
    return 0


def _cmd_summary(args) -> int:
    import scnf

    m = {"mnist": lambda: scnf.mnist_scnf(), "mnist-gmm": lambda: scnf.mnist_scnf("gmm"),
         "toy": lambda: scnf.vector_scnf(2, 2)}[args.model]()
    if args.layers:
        print(m)
    n = m.parameter_counts()
    print(f"parameters: f {n['f']:,}, h {n['h']:,}, z_f dim {m.deep_dim}, z_aux dim {m.aux_dim}")
    return 0


def _cmd_analyse(args) -> int:
    from .analysis import analyse

    opts = {"temperature": args.temperature, "n": args.n, "n_train": args.n_train, "n_test": args.n_test,
            "steps": args.steps, "dims": args.dims}
    if args.what != "dimension-ablation":
        opts["device"] = args.device or "cpu"
    else:
        opts["device"] = args.device
    res = analyse(args.run_dir, args.what, out=args.out, seed=args.seed, **opts)
    out = Path(args.out) if args.out else Path(args.run_dir)
    print(json.dumps({"analysis": res.name, "numbers": res.numbers, "figures": [str(f) for f in res.figures],
                      "markdown": str(out / "analysis.md")}, indent=2, default=str))
    return 0


COMMANDS = {"demo": _cmd_demo, "train": _cmd_train, "evaluate": _cmd_evaluate, "reproduce": _cmd_reproduce,
            "data": _cmd_data, "summary": _cmd_summary, "import-released": _cmd_import_released,
            "config": _cmd_config,
            "analyse": _cmd_analyse, "ood": _cmd_ood, "suggest": _cmd_suggest}


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _continue_hint(args) -> str:
    """How to continue a stopped training, for the command that was run."""
    if args.command == "train":
        out = Path(args.out or Path("runs") / Path(args.config).stem)
        return f"continue with: scnf train {args.config} --out {out} --resume"
    if args.command == "reproduce":
        return "run the same scnf reproduce command again: finished runs are reused, the stopped one resumes"
    if args.command == "demo":
        return "run scnf demo again"
    return "fix the cause and run the command again"


def _training_failure(e: BaseException, args) -> str:
    from .errors import TrainingFailed

    if isinstance(e, TrainingFailed):
        if e.checkpoint is None:
            return f"training stopped: {_one_line(e.reason)}; no checkpoint was written; fix the cause and train again"
        return (f"training stopped: {_one_line(e.reason)}; the last good checkpoint is {e.checkpoint}; "
                f"after fixing the cause {_continue_hint(args)}")
    msg = _one_line(e)
    if _is_out_of_memory(e):
        msg = f"out of memory ({msg.split('. ')[0]}); lower train.batch_size or set train.micro_batch"
    return f"{msg}; {_continue_hint(args)}"


def _interrupted(e, args) -> str:
    if e.checkpoint is None:
        return f"scnf: {_one_line(e)}; train again"
    return f"scnf: stopped by {e.signal_name} after step {e.step}; checkpoint {e.checkpoint}; {_continue_hint(args)}"


@contextmanager
def _graceful_stop(args):
    """SIGINT/SIGTERM finish the training step and checkpoint (one process, one training at a time)."""
    from .training.signals import stop_on_signals

    one_at_a_time = getattr(args, "jobs", 1) == 1 and getattr(args, "nproc", 1) == 1
    if one_at_a_time and os.environ.get("WORLD_SIZE", "1") == "1":
        with stop_on_signals():
            yield
    else:
        yield


def _oom_class():
    import torch

    return getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)


def _is_out_of_memory(e: BaseException) -> bool:
    oom = _oom_class()
    return oom is not None and isinstance(e, oom)


def _actionable_failures() -> tuple:
    from .bijectors.ffjord import ODESolverError
    from .training.process_group import DistributedError
    from .errors import TrainingFailed

    return tuple(c for c in (TrainingFailed, ODESolverError, DistributedError, _oom_class()) if c is not None)


def _usage_errors() -> tuple:
    from .data import DatasetFetchError

    return ValueError, OSError, DatasetFetchError


def _fail(code: int, e: BaseException, line: str, quiet: bool = False) -> int:
    """Print the one-line error, or, in a process started by ``--nproc``, hand it to the
    launcher, which prints it once for the whole job."""
    from .training.launch import WORKER_ERRORS_ENV

    errors = os.environ.get(WORKER_ERRORS_ENV)
    if errors and os.environ.get("RANK") is not None:
        try:
            Path(errors, f"rank{os.environ['RANK']}").write_text(f"{code}\t{type(e).__name__}\t{line}")
            return code
        except OSError:
            pass
    if not quiet:
        print(f"scnf: error: {line}", file=sys.stderr)
    return code


EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a command killed by it


def _broken_pipe() -> int:
    """The reader of our output went away (``scnf evaluate RUN | head``): stop quietly, and keep
    Python from complaining when it flushes stdout at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file behind stdout
        pass
    return EXIT_BROKEN_PIPE


@contextmanager
def _warnings_as_lines():
    """The data-changed warning (``--allow-changed-data``) as one line on stderr."""
    import warnings

    from .errors import ChangedDataWarning

    with warnings.catch_warnings():
        previous = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, ChangedDataWarning):
                print(f"scnf: warning: {_one_line(message)}", file=sys.stderr)
            else:
                previous(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        warnings.simplefilter("always", ChangedDataWarning)
        yield


@contextmanager
def _changed_data(args):
    if getattr(args, "allow_changed_data", False):
        from .runs.run import changed_data_allowed

        with changed_data_allowed():
            yield
    else:
        yield


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    from .training.allocator import keep_freed_memory
    from .errors import TrainingInterrupted

    keep_freed_memory()  # large activations are reused, not re-mapped and zero-filled every step

    try:
        with _warnings_as_lines(), _changed_data(args):
            if args.command in ("train", "demo", "reproduce"):
                with _graceful_stop(args):
                    code = COMMANDS[args.command](args)
            else:
                code = COMMANDS[args.command](args)
        sys.stdout.flush()  # a closed pipe is found here, not at exit
        return code
    except TrainingInterrupted as e:
        print(_interrupted(e, args), file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        hint = f"; {_continue_hint(args)}" if args.command in ("train", "reproduce") else ""
        print(f"scnf: interrupted{hint}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return _broken_pipe()
    except Exception as e:  # noqa: BLE001 - sorted into the exit codes below
        if os.environ.get("SCNF_DEBUG"):
            raise
        if isinstance(e, _actionable_failures()):
            return _fail(EXIT_TRAINING, e, _training_failure(e, args))
        if isinstance(e, _usage_errors()):
            return _fail(EXIT_USAGE, e, _one_line(e))
        _fail(EXIT_BUG, e, f"internal error ({type(e).__name__}): {_one_line(e)}", quiet=True)
        traceback.print_exc()
        print(f"scnf: internal error ({type(e).__name__}): this is a bug in scnf; please report it with the "
              "command you ran and the traceback above", file=sys.stderr)
        return EXIT_BUG


if __name__ == "__main__":
    raise SystemExit(main())
