#!/usr/bin/env python3
"""Times the authors' released RSP code, or their RAP code, (VGG16, 224x224, batch 1) on the CPU.

The same phases as `cargo run --release --example bench_vgg16`, per image,
medians over the timed runs (after untimed warm-up runs):

* forward:      `model(input)`, as the released `main.py` calls it;
* start:        the Grad-CAM start map at `features.29` (the released
                `GradCam.generate_cam_without_sum`, which runs its own forward
                and backward pass) and its normalisation by the maximum, as in
                `main.py`;
* propagation:  `model.RSP(R=start)`, the released layer-by-layer rules, and the
                channel sum of the input relevance;
* total:        the three together.

With `--method rap` it times the authors' earlier method instead, as its
released `main.py` calls it (`model.RAP_relprop(R=T)` from the one-hot `T` of
the predicted class, then the channel sum), against
`bench_vgg16 --method rap`; its start phase is empty (0).

The released code is not vendored: pass the path of a checkout of
`wjNam/Relative_Sectional_Propagation` (tested at commit 68a1297), or for
`--method rap` of `wjNam/Relative_Attributing_Propagation` (tested at 7fa9682). Needs
PyTorch, torchvision, numpy, Pillow and matplotlib (the released modules import
them). The released code calls `.cuda()` in `main.py` only; the modules used
here run on the CPU unchanged. Weights are torchvision's random initialisation
(`pretrained=False`, seeded), like the Rust benchmark: the timing does not
depend on the values.

    python scripts/time_reference.py --checkout /path/to/Relative_Sectional_Propagation \
        --threads 2 --runs 5

The last line printed is one JSON object with the medians (seconds) and the
versions.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_commit(path):
    head = os.path.join(path, ".git", "HEAD")
    try:
        with open(head) as f:
            ref = f.read().strip()
        if ref.startswith("ref: "):
            with open(os.path.join(path, ".git", ref[5:])) as f:
                return f.read().strip()
        return ref
    except OSError:
        return "unknown"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", required=True, help="path of a checkout of the authors' released code")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs; the median is reported (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", choices=["rsp", "rap"], default="rsp", help="the released method to time (default rsp)")
    args = parser.parse_args()

    checkout = os.path.abspath(args.checkout)
    if not os.path.isfile(os.path.join(checkout, "modules", "vgg.py")):
        sys.exit(f"{checkout}: not a checkout of the released RSP or RAP code (no modules/vgg.py)")
    sys.path.insert(0, checkout)

    import numpy as np
    import torch
    import torchvision

    from modules.vgg import vgg16  # noqa: E402  (the released code)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = vgg16(pretrained=False).eval()
    image = torch.randn(1, 3, 224, 224)

    def rap_run():
        x = image.clone().requires_grad_(True)
        t0 = time.perf_counter()
        output = model(x)
        t1 = time.perf_counter()
        one_hot = torch.zeros(1, output.shape[1])
        one_hot[0, output.data.argmax()] = 1.0
        relevance = model.RAP_relprop(R=one_hot)
        heatmap = relevance.sum(dim=1, keepdim=True)
        t3 = time.perf_counter()
        assert heatmap.shape == (1, 1, 224, 224) and bool(torch.isfinite(heatmap).all())
        return t1 - t0, 0.0, t3 - t1, t3 - t0

    if args.method == "rsp":
        from baselines.gradcam import GradCam  # noqa: E402  (the released code)

        bp = GradCam(model, target_layer=29)  # the released main.py's saliency layer

    def one_run():
        if args.method == "rap":
            return rap_run()
        x = image.clone().requires_grad_(True)
        t0 = time.perf_counter()
        output = model(x)
        t1 = time.perf_counter()
        target = output.data.max(1, keepdim=True)[1].squeeze(1).item()
        cam = bp.generate_cam_without_sum(x, target)
        cam = cam.detach().cpu().numpy()
        cam = cam / (cam.max() + 1e-9)
        start = torch.tensor(cam)
        t2 = time.perf_counter()
        relevance = model.RSP(R=start)
        heatmap = relevance.sum(dim=1, keepdim=True)
        t3 = time.perf_counter()
        assert heatmap.shape == (1, 1, 224, 224) and bool(torch.isfinite(heatmap).all())
        return t1 - t0, t2 - t1, t3 - t2, t3 - t0

    for _ in range(args.warmup):
        one_run()
    runs = [one_run() for _ in range(args.runs)]
    medians = [statistics.median(r[k] for r in runs) for k in range(4)]
    names = ["forward", "start", "propagation", "total"]
    for name, value in zip(names, medians):
        print(f"{name:12s} {value * 1000:8.1f} ms  (runs: {', '.join(f'{r[names.index(name)] * 1000:.0f}' for r in runs)})")
    result = {name: round(value, 4) for name, value in zip(names, medians)}
    result.update(
        {
            "method": args.method,
            "runs": args.runs,
            "threads": args.threads,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "cpu": cpu_model(),
            "checkout_commit": git_commit(checkout),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
