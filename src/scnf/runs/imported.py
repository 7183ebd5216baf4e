"""A run directory from the authors' released checkpoint (``scnf import-released``): the model
converted by :mod:`scnf.models.released`, the run config it is evaluated and analysed with,
and its checkpoint."""
from __future__ import annotations

from pathlib import Path

from ..config import RunConfig, dump_config, validate
from ..fileio import write_text_atomic
from ..models.flow import SemiConditionalFlow
from ..models.released import TOY_EMBED_ROWS, load_released_state_dict, read_released, toy_hidden
from ..training.checkpoint import save_checkpoint


def run_config(model: str, h_hidden: int = 256) -> RunConfig:
    """The run config an imported model is evaluated and analysed with: the paper profile
    (``configs/mnist-paper.toml``) for MNIST; moons with 10 labels for the toy."""
    cfg = RunConfig()
    if model == "mnist":
        cfg.data.dataset, cfg.data.n_labelled = "mnist", 100
        cfg.train.batch_size, cfg.train.steps, cfg.train.eval_every = 256, 117188, 2344
        cfg.train.checkpoint_every = 1000
    else:
        cfg.data.dataset, cfg.data.n_labelled = "moons", 10
        cfg.model.blocks, cfg.model.hidden, cfg.model.h_blocks = 2, 64, 3
        cfg.model.h_hidden, cfg.model.h_net, cfg.model.h_net_blocks = h_hidden, "resmlp", 4
        cfg.model.embed_dim = TOY_EMBED_ROWS
    return validate(cfg)


def import_released(checkpoint: str | Path, out: str | Path, model: str = "mnist",
                    overwrite: bool = False) -> SemiConditionalFlow:
    """Convert the authors' checkpoint into a scnf run directory ``out`` (``config.toml`` and
    ``checkpoint.pt``, written only after every key was checked); returns the model."""
    sd = read_released(checkpoint)
    net = load_released_state_dict(sd, model, source=str(checkpoint))
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file, not a directory")
    if (out / "checkpoint.pt").exists() and not overwrite:
        raise FileExistsError(f"--out {out} already holds a run (checkpoint.pt); choose another directory")
    cfg = run_config(model, toy_hidden(sd) if model == "toy" else 256)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "config.toml", dump_config(cfg))
    save_checkpoint(out / "checkpoint.pt", {"model": net.state_dict(), "step": 0,
                                            "imported_from": str(checkpoint), "source": "released"})
    return net
