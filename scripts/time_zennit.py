#!/usr/bin/env python3
"""Times the peers of `bench_vgg16 --method NAME`: zennit's composites and PyTorch autograd (VGG16, 224x224, batch 1, CPU).

One attribution per run, per image, median over the timed runs after untimed
warm-up runs, as `cargo run --release --example bench_vgg16 -- --method NAME`
times ours. The composites' hooks are registered once (zennit's attributor
context), as our network is built once; each timed call is zennit's
`attributor(input, one_hot)`: the forward pass and the modified backward pass.

| name (ours)        | peer timed here                                                        |
|--------------------|------------------------------------------------------------------------|
| epsilon-plus-flat  | zennit `EpsilonPlusFlat()` (the same maps, tests/suite/zennit.rs)            |
| epsilon-gamma-box  | zennit `EpsilonGammaBox(low, high)` (the same maps)                    |
| lrp-alpha1-beta0   | zennit `AlphaBeta(1, 0)` on every convolution and linear layer         |
| lrp-epsilon        | zennit `Epsilon(0.25)` on every convolution and linear layer           |
| gradient           | `torch.autograd`: forward, `backward` of the target logit              |
| gradient-x-input   | the same, times the input                                              |
| gradcam            | Grad-CAM at `features.29` with forward/backward hooks, bilinear upsampling |

The last two LRP rows are the same rule family as ours, not the same maps
(bias and first-layer handling differ; see docs/methods.md): they are timing
peers only. Weights are torchvision's random initialisation (seeded), like the
Rust benchmark: the timing does not depend on the values. Needs torch,
torchvision and zennit 0.5.1, in an environment outside the repository:

    python scripts/time_zennit.py --threads 2 --runs 5 --method epsilon-plus-flat --method gradient

Prints one JSON object per method (medians in ms); the last line is the last method's.
"""

import argparse
import json
import platform
import statistics
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs; the median is reported (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--low", type=float, default=-0.485 / 0.229, help="ZBox's lowest input (ImageNet's 0)")
    parser.add_argument("--high", type=float, default=(1 - 0.406) / 0.225, help="ZBox's highest input (ImageNet's 1)")
    parser.add_argument("--method", action="append", dest="methods", help="repeatable; default: every peer")
    args = parser.parse_args()

    import torch
    import torchvision
    import zennit
    from zennit.attribution import Gradient
    from zennit.composites import EpsilonGammaBox, EpsilonPlusFlat, LayerMapComposite
    from zennit.rules import AlphaBeta, Epsilon
    from zennit.types import Convolution, Linear

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = torchvision.models.vgg16(weights=None).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    image = torch.randn(1, 3, 224, 224)
    target = 0
    one_hot = torch.eye(1000)[[target]]

    def composite_run(composite):
        def run():
            with Gradient(model=model, composite=composite) as attributor:
                def once():
                    x = image.clone()
                    t0 = time.perf_counter()
                    _, relevance = attributor(x, one_hot)
                    t = time.perf_counter() - t0
                    assert relevance.shape == image.shape and bool(torch.isfinite(relevance).all())
                    return t

                return timed(once)

        return run

    def gradient(times_input):
        def once():
            x = image.clone().requires_grad_(True)
            t0 = time.perf_counter()
            out = model(x)
            (grad,) = torch.autograd.grad(out[0, target], x)
            result = grad * x if times_input else grad
            t = time.perf_counter() - t0
            assert bool(torch.isfinite(result).all())
            return t

        return lambda: timed(once)

    def gradcam():
        layer = model.features[29]
        saved = {}
        fwd = layer.register_forward_hook(lambda m, i, o: saved.__setitem__("act", o))

        def once():
            x = image.clone().requires_grad_(True)  # so the hooked activation carries a graph
            t0 = time.perf_counter()
            out = model(x)
            act = saved["act"]
            (grad,) = torch.autograd.grad(out[0, target], act)
            weights = grad.mean(dim=(2, 3), keepdim=True)
            cam = torch.relu((weights * act).sum(dim=1, keepdim=True))
            cam = torch.nn.functional.interpolate(cam, size=(224, 224), mode="bilinear", align_corners=False)
            t = time.perf_counter() - t0
            assert bool(torch.isfinite(cam).all())
            return t

        try:
            return timed(once)
        finally:
            fwd.remove()

    def timed(once):
        for _ in range(args.warmup):
            once()
        return [once() for _ in range(args.runs)]

    peers = {
        "epsilon-plus-flat": ("zennit EpsilonPlusFlat", composite_run(EpsilonPlusFlat())),
        "epsilon-gamma-box": (
            f"zennit EpsilonGammaBox(low={args.low:.4f}, high={args.high:.4f})",
            composite_run(EpsilonGammaBox(low=args.low, high=args.high)),
        ),
        "lrp-alpha1-beta0": (
            "zennit AlphaBeta(1, 0) on Convolution and Linear",
            composite_run(LayerMapComposite([(Convolution, AlphaBeta(alpha=1.0, beta=0.0)), (Linear, AlphaBeta(alpha=1.0, beta=0.0))])),
        ),
        "lrp-epsilon": (
            "zennit Epsilon(0.25) on Convolution and Linear",
            composite_run(LayerMapComposite([(Convolution, Epsilon(epsilon=0.25)), (Linear, Epsilon(epsilon=0.25))])),
        ),
        "gradient": ("torch.autograd gradient", gradient(False)),
        "gradient-x-input": ("torch.autograd gradient times input", gradient(True)),
        "gradcam": ("Grad-CAM at features.29 (torch hooks)", gradcam),
    }
    names = args.methods or list(peers)
    for name in names:
        if name not in peers:
            parser.error(f"--method {name}: no peer here (one of {', '.join(peers)})")
    for name in names:
        peer, run = peers[name]
        runs = run()
        median = statistics.median(runs) * 1e3
        print(f"{name:18s} {median:8.1f} ms  {peer}  (runs: {', '.join(f'{r * 1e3:.0f}' for r in runs)})")
        print(
            json.dumps(
                {
                    "model": "vgg16",
                    "method": name,
                    "peer": peer,
                    "batch": 1,
                    "threads": args.threads,
                    "total_ms": round(median, 1),
                    "runs": args.runs,
                    "torch": torch.__version__,
                    "torchvision": torchvision.__version__,
                    "zennit": getattr(zennit, "__version__", "0.5.1"),
                    "python": platform.python_version(),
                    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                }
            )
        )


if __name__ == "__main__":
    main()
