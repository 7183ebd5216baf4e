"""CPU training throughput of mnist_scnf() (the Appendix E model), against the machine's
own limit for the model's convolutions.

For every batch size it reports

* train img/s — one full training step as the Trainer takes it: ``backward_objective``
  (log_joint + Eq. 1 loss with a TrainConfig, backward; with ``--micro-batch M`` in chunks
  of M rows whose gradients add up to the whole batch's), the gradients gathered into the
  Trainer's flat tensors (:class:`scnf.training.flat.FlatGroups`, one per parameter group), their
  finiteness check, one Adamax step per group;
* eval img/s — ``log_marginal`` in eval mode under ``no_grad``;
* conv share — the share of a training step's CPU time spent in convolution ops
  (aten::convolution / mkldnn_convolution / convolution_backward and their internals),
  from torch.profiler over ``--profile-steps`` steps;
* the limit — the FLOPs of every nn.Conv2d in the model (counted by forward hooks:
  ``2*Cin*Cout*k*k*Hout*Wout`` per image forward, backward ~ 2x forward) are timed in
  isolation at the same shapes and batch (forward+backward, the faster of NCHW and
  channels_last per shape); ``batch / sum(time)`` bounds the images/s of a step that
  did nothing but its convolutions. "% of limit" = achieved / bound. With
  ``--micro-batch M`` the sweep is also timed at batch M (the shapes the chunked step
  runs) and the step is compared with that bound as well, and with the whole-batch step
  (``micro_batch = 0``) timed in the same rounds. The same is done
  for evaluation with forward-only convolutions. Linear layers (the conditional flow h)
  and the 1x1 invertible convolutions are not counted, so this bound is optimistic: a
  step cannot reach it while h's matrix products take a tenth of it;
* the dense limit — the same bound with every dense op of the step timed in isolation: the
  convolutions above, every nn.Linear (h's nets, at B x K rows: log p(x) runs h over all K
  labels) and every invertible 1x1 map (F.conv2d with a 1x1 kernel on images, a matrix
  product on h's vectors), forward+backward for training and forward for evaluation.
  "% of dense limit" is what is left to win from everything that is not a dense op
  (element-wise work, copies, the optimiser, Python);
* the allocator — as the ``scnf`` command runs (:func:`scnf.training.allocator.keep_freed_memory`:
  freed large blocks are reused, not re-mapped); ``--system-malloc`` keeps glibc's defaults;
* page faults / system s — the median over the timed training steps of the process's minor
  page faults and system CPU seconds during the step (getrusage): memory the allocator maps
  afresh and the kernel zero-fills;
* peak memory — ``ru_maxrss`` of a fresh subprocess that builds the model, initialises
  it and runs one training step: the process's peak RSS (ru_maxrss), and that peak minus
  the RSS just before the step (activations kept for backward, gradients, Adamax state).

Model timings and the isolated-convolution sweep are interleaved in every repeat and the
medians are reported, since the CPUs may be shared. ``--compare`` also times the plain
(unfused) ResidualConvNet forward on the same model in the same rounds
(``scnf.nn.FUSED = False``) and reports the speed-up.

Usage: python benchmarks/train_throughput.py [--batches 64,256] [--repeats 3] [--threads 0]
       [--small] [--compare] [--micro-batch 0] [--device cpu] [--profile-steps 2] [--no-memory]
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections import Counter

import torch
import torch.nn.functional as F
from torch import nn

import scnf
import scnf.nn
from scnf.bijectors.conv1x1 import InvertibleConv2d, InvertibleConv2dLU
from scnf.config import TrainConfig
from scnf.training.flat import FlatGroups

try:
    from scnf.training.allocator import keep_freed_memory
except ImportError:  # an scnf from before the allocator setting (a "before" worktree)
    keep_freed_memory = None
from scnf.training.objective import backward_objective

CONV_OPS = {"aten::convolution", "aten::_convolution", "aten::conv2d", "aten::mkldnn_convolution",
            "aten::convolution_backward", "aten::mkldnn_convolution_backward", "aten::thnn_conv2d",
            "aten::_slow_conv2d_forward", "aten::_slow_conv2d_backward", "aten::_nnpack_spatial_convolution",
            "aten::cudnn_convolution", "aten::cudnn_convolution_backward",
            "aten::cudnn_convolution_backward_input", "aten::cudnn_convolution_backward_weight"}
DEVICE = torch.device("cpu")  # --device; on CUDA, timings synchronise and memory is the CUDA allocator's


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def build(small: bool):
    if small:
        return scnf.mnist_scnf(hidden=32, blocks=1, h_hidden=64, h_blocks=1)
    return scnf.mnist_scnf()


def make_batch(b: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randint(0, 256, (b, 1, 28, 28), generator=g).float() + torch.rand(b, 1, 28, 28, generator=g)) / 256
    y = torch.randint(0, 10, (b,), generator=g)
    y[: b - round(b / 3)] = -1  # a third labelled, as TrainConfig's default labelled_share
    return x, y


class _FlatAdamax:
    """The Trainer's optimiser: Adamax on one flat tensor per parameter group."""

    def __init__(self, model, cfg):
        groups = [{"params": list(ps), "name": n} for n, ps in model.parameter_groups().items()]
        self.flat = FlatGroups(groups)
        self.opt = torch.optim.Adamax(self.flat.optimizer_groups, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def zero_grad(self):
        self.flat.zero_grad()

    def step(self):
        self.flat.gather_grads()
        if self.flat.grads_finite():
            self.opt.step()


def setup(small: bool, b: int, micro_batch: int = 0):
    torch.manual_seed(0)
    model = build(small).to(DEVICE)
    x, y = (t.to(DEVICE) for t in make_batch(b))
    model.train()
    with torch.no_grad():
        model.log_joint(x)  # data-dependent ActNorm initialisation
    cfg = TrainConfig(batch_size=b, micro_batch=micro_batch)
    return model, x, y, cfg, _FlatAdamax(model, cfg)


def train_step(model, x, y, cfg, opt):
    model.train()
    opt.zero_grad()
    backward_objective(model, x, y, cfg)
    opt.step()


def eval_marginal(model, x):
    model.eval()
    with torch.no_grad():
        model.log_marginal(x)


def _sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def timed(fn, usage: list | None = None) -> float:
    """Wall seconds of ``fn()``; with ``usage``, also appends (minor page faults, system CPU
    seconds) of this process during the call (getrusage)."""
    _sync()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    fn()
    _sync()
    dt = time.perf_counter() - t0
    if usage is not None:
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        usage.append((r1.ru_minflt - r0.ru_minflt, r1.ru_stime - r0.ru_stime))
    return dt


# ---------------------------------------------------------------- convolution FLOPs and limit
def conv_shapes(model) -> Counter:
    """Every nn.Conv2d call in one forward pass of f: (Cin, Cout, k, H_in, W_in) -> count."""
    shapes: Counter = Counter()

    def hook(mod, inp, out):
        shapes[(mod.in_channels, mod.out_channels, mod.kernel_size[0], inp[0].shape[2], inp[0].shape[3],
                mod.groups, mod.padding[0])] += 1

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    fused, scnf.nn.FUSED = scnf.nn.FUSED, False  # the fused path calls F.conv2d directly
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            model.log_joint(make_batch(2)[0].to(DEVICE))
    finally:
        scnf.nn.FUSED = fused
        model.train(was)
        for h in handles:
            h.remove()
    return shapes


def dense_shapes(model) -> Counter:
    """Every nn.Linear and invertible 1x1 map in one log_joint pass, per image:
    ("linear", in, out, rows per image) or ("1x1", C, H, W) / ("1x1vec", C, rows per image) -> count."""
    shapes: Counter = Counter()
    n = 2  # images in the pass

    def linear(mod, inp, out):
        shapes[("linear", mod.in_features, mod.out_features, inp[0].shape[0] // n)] += 1

    def one_by_one(mod, inp, out):
        x = inp[0]
        key = ("1x1", x.shape[1], x.shape[2], x.shape[3]) if x.dim() == 4 else ("1x1vec", x.shape[1], x.shape[0] // n)
        shapes[key] += 1

    handles = [m.register_forward_hook(linear) for m in model.modules() if isinstance(m, nn.Linear)]
    handles += [m.register_forward_hook(one_by_one) for m in model.modules()
                if isinstance(m, (InvertibleConv2d, InvertibleConv2dLU))]
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            model.log_joint(make_batch(n)[0].to(DEVICE))
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    return shapes


class DenseSweep:
    """Times the model's linear layers and 1x1 maps in isolation at batch b (forward, and
    forward+backward with the gradients of the input and the weights)."""

    def __init__(self, shapes: Counter, b: int):
        g = torch.Generator().manual_seed(0)
        r = lambda *s: torch.randn(*s, generator=g).to(DEVICE)
        self.cases = []
        for key, n in shapes.items():
            if key[0] == "linear":
                _, fin, fout, rpi = key
                x, w, bias, grad = r(b * rpi, fin), r(fout, fin) * 0.05, r(fout), r(b * rpi, fout)
                fn = lambda x, w, bias: F.linear(x, w, bias)
                args = (x, w, bias)
            elif key[0] == "1x1":
                _, c, h, wd = key
                x = r(b, c, h, wd).contiguous(memory_format=torch.channels_last)
                w, grad = r(c, c, 1, 1) * 0.05, r(b, c, h, wd).contiguous(memory_format=torch.channels_last)
                fn = lambda x, w: F.conv2d(x, w)
                args = (x, w)
            else:
                _, c, rpi = key
                x, w, grad = r(b * rpi, c), r(c, c) * 0.05, r(b * rpi, c)
                fn = lambda x, w: x @ w.t()
                args = (x, w)
            args = tuple(a.requires_grad_() for a in args)
            self.cases.append(dict(key=key, n=n, fn=fn, args=args, grad=grad, fw=[], fb=[]))

    def run_once(self):
        for c in self.cases:
            with torch.no_grad():
                c["fw"].append(timed(lambda: c["fn"](*c["args"])))
            c["fb"].append(timed(lambda: torch.autograd.grad(c["fn"](*c["args"]), c["args"], c["grad"])))

    def reset(self):
        for c in self.cases:
            c["fw"], c["fb"] = [], []

    def seconds(self, which: str) -> float:
        return sum(c["n"] * statistics.median(c[which]) for c in self.cases)


def flops_per_image(shapes: Counter) -> float:
    total = 0.0
    for (cin, cout, k, h, w, groups, pad), n in shapes.items():
        ho, wo = h + 2 * pad - k + 1, w + 2 * pad - k + 1
        total += n * 2 * cin // groups * cout * k * k * ho * wo
    return total


class ConvSweep:
    """Times the model's conv shapes in isolation at batch b (both memory formats)."""

    def __init__(self, shapes: Counter, b: int):
        self.cases = []
        g = torch.Generator().manual_seed(0)
        for key, n in shapes.items():
            cin, cout, k, h, w, groups, pad = key
            for cl in (False, True):
                fmt = torch.channels_last if cl else torch.contiguous_format
                x = torch.randn(b, cin, h, w, generator=g).to(DEVICE).contiguous(memory_format=fmt).requires_grad_()
                wt = (torch.randn(cout, cin // groups, k, k, generator=g) * 0.05).to(DEVICE).contiguous(
                    memory_format=fmt).requires_grad_()
                bias = torch.zeros(cout, device=DEVICE, requires_grad=True)
                out = F.conv2d(x.detach(), wt.detach(), None, padding=pad, groups=groups)
                grad = torch.randn(out.shape, generator=g).to(DEVICE).contiguous(memory_format=fmt)
                self.cases.append(dict(key=key, n=n, cl=cl, x=x, w=wt, b=bias, grad=grad))
        self.fb = {(c["key"], c["cl"]): [] for c in self.cases}
        self.fw = {(c["key"], c["cl"]): [] for c in self.cases}

    def run_once(self):
        for c in self.cases:
            key, pad, groups = c["key"], c["key"][6], c["key"][5]
            with torch.no_grad():
                self.fw[(key, c["cl"])].append(
                    timed(lambda: F.conv2d(c["x"], c["w"], c["b"], padding=pad, groups=groups)))

            def fb():
                out = F.conv2d(c["x"], c["w"], c["b"], padding=pad, groups=groups)
                torch.autograd.grad(out, (c["x"], c["w"], c["b"]), c["grad"])

            self.fb[(key, c["cl"])].append(timed(fb))

    def limit_seconds(self, table) -> tuple[float, dict]:
        """Sum over shapes of count x the faster format's median time; and which format won."""
        total, best = 0.0, {}
        for key, n in {c["key"]: c["n"] for c in self.cases}.items():
            t_nchw, t_cl = statistics.median(table[(key, False)]), statistics.median(table[(key, True)])
            best[key] = "channels_last" if t_cl < t_nchw else "NCHW"
            total += n * min(t_nchw, t_cl)
        return total, best


# ---------------------------------------------------------------- profiler and memory
MATMUL_OPS = {"aten::mm", "aten::addmm", "aten::bmm"}


def conv_share(model, x, y, cfg, opt, steps: int, top_ops: int = 0) -> tuple[float, float]:
    """Shares of a training step's self time in convolution ops, and in all dense ops
    (convolutions and matrix products); with ``top_ops``, prints the profiler's table of the
    ops with the most self time."""
    from torch.profiler import ProfilerActivity, profile
    cuda = DEVICE.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        for _ in range(steps):
            train_step(model, x, y, cfg, opt)
    if top_ops:
        key = "self_device_time_total" if cuda else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=top_ops), file=sys.stderr, flush=True)
    conv = mat = total = 0.0
    for ev in prof.key_averages():
        t = ev.self_device_time_total if cuda else ev.self_cpu_time_total
        total += t
        if ev.key in CONV_OPS:
            conv += t
        elif ev.key in MATMUL_OPS:
            mat += t
    return (conv / total, (conv + mat) / total) if total else (float("nan"), float("nan"))


def memory_child(small: bool, b: int, fused: bool, micro_batch: int) -> None:
    scnf.nn.FUSED = fused
    model, x, y, cfg, opt = setup(small, b, micro_batch)
    with open("/proc/self/statm") as fh:  # current RSS before the step (Linux)
        before_kib = int(fh.read().split()[1]) * resource.getpagesize() / 1024
    train_step(model, x, y, cfg, opt)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # high-water mark, KiB on Linux
    print(json.dumps({"peak_mib": peak_kib / 1024, "step_mib": (peak_kib - before_kib) / 1024}))


def measure_memory(small: bool, b: int, threads: int, fused: bool = True, micro_batch: int = 0,
                   system_malloc: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--memory-child", str(b), "--threads", str(threads),
           "--micro-batch", str(micro_batch)]
    cmd += ["--small"] if small else []
    cmd += [] if fused else ["--unfused"]
    cmd += ["--system-malloc"] if system_malloc else []
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# ---------------------------------------------------------------- main
def run_batch(args, b: int) -> dict:
    micro = args.micro_batch if 0 < args.micro_batch < b else 0
    model, x, y, cfg, opt = setup(args.small, b, micro)
    shapes = conv_shapes(model)
    fpi = flops_per_image(shapes)
    sweep = ConvSweep(shapes, b)
    sweeps = [sweep] + ([ConvSweep(shapes, micro)] if micro else [])
    dense = DenseSweep(dense_shapes(model), b)
    variants = [True, False] if args.compare else [True]
    t_train = {v: [] for v in variants}
    usage = []  # (minor page faults, system seconds) of each timed training step
    t_eval = {v: [] for v in variants}
    t_whole, whole = [], TrainConfig(batch_size=b)
    if micro:
        train_step(model, x, y, whole, opt)
    # warm-up: oneDNN primitive creation, allocator, optimiser state
    for v in variants:
        scnf.nn.FUSED = v
        train_step(model, x, y, cfg, opt)
        eval_marginal(model, x)
    for sw in sweeps:
        sw.run_once()
        sw.fw = {k: [] for k in sw.fw}
        sw.fb = {k: [] for k in sw.fb}
    dense.run_once()
    dense.reset()
    for r in range(args.repeats):
        for v in variants:
            scnf.nn.FUSED = v
            t_train[v].append(timed(lambda: train_step(model, x, y, cfg, opt), usage if v else None))
            if micro and v:  # the same step over the whole batch at once, in the same round
                t_whole.append(timed(lambda: train_step(model, x, y, whole, opt)))
            t_eval[v].append(timed(lambda: eval_marginal(model, x)))
        for sw in sweeps:
            sw.run_once()
        dense.run_once()
        print(f"  batch {b} round {r + 1}/{args.repeats}: "
              + ", ".join(f"{'fused' if v else 'plain'} step {t_train[v][-1]:.2f}s eval {t_eval[v][-1]:.2f}s"
                          for v in variants), file=sys.stderr, flush=True)
    scnf.nn.FUSED = True
    share, dense_share = (conv_share(model, x, y, cfg, opt, args.profile_steps, args.top_ops) if args.profile_steps
                          else (float("nan"), float("nan")))
    lim_fb, best_fb = sweep.limit_seconds(sweep.fb)
    lim_fw, _ = sweep.limit_seconds(sweep.fw)
    res = dict(batch=b, flops_fwd=fpi, train=b / statistics.median(t_train[True]),
               eval=b / statistics.median(t_eval[True]), limit_train=b / lim_fb, limit_eval=b / lim_fw,
               rate_train=3 * fpi * b / lim_fb / 1e9, rate_eval=fpi * b / lim_fw / 1e9, conv_share=share, dense_share=dense_share,
               best_formats=Counter(best_fb.values()), micro_batch=micro,
               dense_train=b / (lim_fb + dense.seconds("fb")), dense_eval=b / (lim_fw + dense.seconds("fw")),
               faults=statistics.median(u[0] for u in usage), sys_s=statistics.median(u[1] for u in usage))
    if micro:
        lim_micro, _ = sweeps[1].limit_seconds(sweeps[1].fb)
        res["limit_train_micro"] = micro / lim_micro
        res["train_whole"] = b / statistics.median(t_whole)
        res["speedup_micro"] = statistics.median(w / m for w, m in zip(t_whole, t_train[True]))
    if args.compare:
        res["train_plain"] = b / statistics.median(t_train[False])
        res["eval_plain"] = b / statistics.median(t_eval[False])
        res["speedup_train"] = statistics.median(p / f for p, f in zip(t_train[False], t_train[True]))
        res["speedup_eval"] = statistics.median(p / f for p, f in zip(t_eval[False], t_eval[True]))
    if args.memory and DEVICE.type == "cuda":  # in this process: the CUDA allocator's peak
        torch.cuda.synchronize(DEVICE)
        before = torch.cuda.memory_allocated(DEVICE)
        torch.cuda.reset_peak_memory_stats(DEVICE)
        train_step(model, x, y, cfg, opt)
        peak = torch.cuda.max_memory_allocated(DEVICE)
        res["mem"] = {"peak_mib": peak / 2**20, "step_mib": (peak - before) / 2**20}
    elif args.memory:
        del model, opt, sweep, sweeps
        res["mem"] = measure_memory(args.small, b, args.threads, micro_batch=micro, system_malloc=args.system_malloc)
    print(f"  batch {b}: " + json.dumps({k: v for k, v in res.items() if k != "best_formats"}, default=str),
          file=sys.stderr, flush=True)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="64,256")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--small", action="store_true", help="hidden=32 blocks=1 h_hidden=64 h_blocks=1")
    ap.add_argument("--compare", action="store_true", help="also time the plain ResidualConvNet path")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (peak memory: CUDA allocator, in-process)")
    ap.add_argument("--micro-batch", type=int, default=0,
                    help="train in chunks of this many rows (TrainConfig.micro_batch; 0 = whole batch)")
    ap.add_argument("--profile-steps", type=int, default=2)
    ap.add_argument("--top-ops", type=int, default=0, help="print the profiled step's N ops with the most self time")
    ap.add_argument("--no-memory", dest="memory", action="store_false")
    ap.add_argument("--system-malloc", action="store_true",
                    help="keep glibc's malloc settings (the scnf command sets scnf.training.allocator.keep_freed_memory)")
    ap.add_argument("--memory-child", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--unfused", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    malloc = "system"
    if not args.system_malloc and keep_freed_memory is not None and keep_freed_memory():
        malloc = "freed memory kept (scnf.training.allocator)"
    if args.memory_child:
        memory_child(args.small, args.memory_child, not args.unfused, args.micro_batch)
        return
    batches = [int(b) for b in args.batches.split(",")]
    results = [run_batch(args, b) for b in batches]

    name = "mnist_scnf(hidden=32, blocks=1, h_hidden=64, h_blocks=1)" if args.small else "mnist_scnf()"
    print(f"\nmodel {name}; torch {torch.__version__}; {torch.get_num_threads()} threads; "
          f"{cpu_name() if DEVICE.type == 'cpu' else torch.cuda.get_device_name(DEVICE)}; "
          f"medians of {args.repeats} interleaved rounds; malloc: {malloc}")
    print(f"conv FLOPs per image (nn.Conv2d, forward): {results[0]['flops_fwd'] / 1e9:.3f} GFLOP; "
          "train step counts 3x (forward + grad input + grad weight)\n")
    head = ["batch", "train img/s", "limit img/s", "% of limit", "conv GFLOP/s (isolated)", "conv share of step", "dense share of step",
            "eval img/s", "eval limit img/s", "eval % of limit", "dense limit img/s (train / eval)",
            "% of dense limit (train / eval)", "page faults / system s a step", "peak RSS MiB (step +MiB)"]
    if args.compare:
        head += ["plain train img/s", "train speed-up", "plain eval img/s", "eval speed-up"]
    if args.micro_batch:
        head += ["micro-batch", "limit img/s at micro-batch shapes", "% of that limit",
                 "whole-batch train img/s", "micro-batch speed-up"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in results:
        mem = r.get("mem")
        row = [str(r["batch"]), f"{r['train']:.2f}", f"{r['limit_train']:.2f}",
               f"{100 * r['train'] / r['limit_train']:.0f} %", f"{r['rate_train']:.0f}",
               f"{100 * r['conv_share']:.0f} %", f"{100 * r['dense_share']:.0f} %", f"{r['eval']:.1f}", f"{r['limit_eval']:.1f}",
               f"{100 * r['eval'] / r['limit_eval']:.0f} %",
               f"{r['dense_train']:.2f} / {r['dense_eval']:.1f}",
               f"{100 * r['train'] / r['dense_train']:.0f} % / {100 * r['eval'] / r['dense_eval']:.0f} %",
               f"{r['faults']:.0f} / {r['sys_s']:.2f}",
               f"{mem['peak_mib']:.0f} (+{mem['step_mib']:.0f})" if mem else "-"]
        if args.compare:
            row += [f"{r['train_plain']:.2f}", f"{r['speedup_train']:.2f}x", f"{r['eval_plain']:.1f}",
                    f"{r['speedup_eval']:.2f}x"]
        if args.micro_batch:
            lim = r.get("limit_train_micro")
            row += [str(r["micro_batch"] or "-"), f"{lim:.2f}" if lim else "-",
                    f"{100 * r['train'] / lim:.0f} %" if lim else "-",
                    f"{r['train_whole']:.2f}" if lim else "-", f"{r['speedup_micro']:.2f}x" if lim else "-"]
        print("| " + " | ".join(row) + " |")
    for r in results:
        print(f"batch {r['batch']}: faster isolated format per conv shape: {dict(r['best_formats'])}")


if __name__ == "__main__":
    main()
