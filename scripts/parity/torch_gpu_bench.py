#!/usr/bin/env python3
"""PyTorch on the GPU, for comparison with native/bench/bench_cuda_model.cpp: the SAFL network of
torch_reference.py (this folder; our own PyTorch implementation) run eagerly in bf16 autocast on
CUDA, for the tiny and base presets, random weights, in the benchmark's three modes —

    train     forward + backward with the focal loss, gradient-norm clipping at 5 and Adam
    greedy    greedy decoding with a key/value cache per decoder layer
    forward   teacher-forced inference forward (logits copied back to the host)

    python3 scripts/parity/torch_gpu_bench.py [--configs tiny,base] [--train-batches 64,128,256]
        [--infer-batches 1,64,256] [--seconds 0.5] [--json FILE] [--device cuda]

Prints a table and, with --json FILE, appends one JSON line per measurement
({"impl": "torch-bf16", "config", "mode", "batch", "img_per_s", "ms_per_iter", ...}) in the form of
bench_cuda_model's lines; scripts/gpu-check.sh joins the two. Without a GPU it prints
"no GPU: <reason>" and exits with 0. --device cpu runs the same code on the CPU, only to check the
script where no GPU is present (slow; use tiny batches).

Measuring as bench_cuda_model does: two warm-up iterations, then back-to-back iterations for at
least --seconds (at least 3), timed from a synchronisation before the first to one after the last.
As there (its Notes [EOS suppressed] and [images from the host]): the classifier's EOS bias is
-1e4 so greedy decoding runs all max_len + 1 steps, and each iteration copies its batch of images
from pinned host memory. Differences: torch_reference.py has no dropout (the presets train with
dropout 0.1), and its weights are drawn by random_state (the speed does not depend on them).
Needs PyTorch 2.0 or newer on CUDA (torch.set_default_device).
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_reference import Reference, focal_loss, random_state, sinusoid  # noqa: E402

# The presets of native/model/config.cpp (DESIGN.md §1, Configs), with the default charset's 97 classes.
GEOMETRY = {"in_h": 64, "in_w": 256, "loc_h": 32, "loc_w": 64, "rect_h": 32, "rect_w": 100, "fiducials": 20,
            "max_len": 25, "num_classes": 97, "dropout": 0.1}
PRESETS = {
    "tiny": dict(GEOMETRY, loc_channels=[16, 32, 64, 128, 128, 128], loc_fc=256,
                 res_channels=[16, 32, 64, 128, 256], res_blocks=[1, 2, 2, 2, 1],
                 d_model=256, heads=4, ffn=1024, enc_layers=2, dec_layers=2),
    "base": dict(GEOMETRY, loc_channels=[32, 64, 128, 256, 256, 256], loc_fc=512,
                 res_channels=[32, 64, 128, 256, 512], res_blocks=[3, 4, 6, 6, 3],
                 d_model=512, heads=8, ffn=2048, enc_layers=4, dec_layers=4),
}
WARMUP, MIN_ITERATIONS, MAX_NORM = 2, 3, 5.0


def measure(fn, seconds, sync):
    """(iterations, seconds): WARMUP calls, then calls for at least `seconds`, between two syncs."""
    for _ in range(WARMUP):
        fn()
    sync()
    start = time.perf_counter()
    iterations, elapsed = 0, 0.0
    while iterations < MIN_ITERATIONS or elapsed < seconds:
        fn()
        iterations += 1
        elapsed = time.perf_counter() - start
    sync()
    return iterations, time.perf_counter() - start


def host_images(cfg, batch, device):
    """Images in [-1, 1], (B, 3, in_h, in_w), in pinned host memory when the device is a GPU."""
    gen = torch.Generator().manual_seed(42)
    images = torch.rand(batch, 3, cfg["in_h"], cfg["in_w"], generator=gen, device="cpu") * 2.0 - 1.0
    return images.pin_memory() if device.type == "cuda" else images


def full_targets(cfg, batch, device):
    """(B, T): max_len characters, then EOS (as bench_cuda_model)."""
    T, charset = cfg["max_len"] + 1, cfg["num_classes"] - 3
    b = torch.arange(batch).view(batch, 1)
    t = torch.arange(T).view(1, T)
    targets = (b * 7 + t * 13) % charset
    targets[:, T - 1] = charset  # EOS
    return targets.to(device)


def greedy(net, images, cfg):
    """Greedy decoding with a key/value cache: (tokens (B, T), probs (B, T)) on the host."""
    B, d, T = images.shape[0], cfg["d_model"], cfg["max_len"] + 1
    eos, layers = cfg["num_classes"] - 3, cfg["dec_layers"]
    memory = net.encoder(net.backbone(net.rectify(images)))
    cross = []  # per layer: the cross-attention keys and values of the memory
    for i in range(layers):
        kv = net.linear(memory, f"decoder.layer{i}.cross_attn.kv_proj")
        cross.append((kv[..., :d], kv[..., d:]))
    cache_dtype = cross[0][0].dtype  # bf16 under autocast
    keys = [torch.empty(B, T, d, dtype=cache_dtype) for _ in range(layers)]  # (B, T, d) each
    values = [torch.empty(B, T, d, dtype=cache_dtype) for _ in range(layers)]
    pe = sinusoid(T, d, torch.float32)
    token = torch.full((B,), cfg["num_classes"], dtype=torch.int64)  # BOS
    finished = torch.zeros(B, dtype=torch.bool)
    tokens, probs = [], []
    for t in range(T):
        x = (net.p["decoder.embed.weight"][token] + pe[t]).unsqueeze(1)  # (B, 1, d)
        for i in range(layers):
            p = f"decoder.layer{i}"
            qkv = net.linear(x, p + ".self_attn.in_proj")
            keys[i][:, t] = qkv[:, 0, d:2 * d]
            values[i][:, t] = qkv[:, 0, 2 * d:]
            attended = net.attention(qkv[..., :d], keys[i][:, :t + 1], values[i][:, :t + 1], causal=False)
            x = net.layernorm(x + net.linear(attended, p + ".self_attn.out_proj"), p + ".norm1")
            q = net.linear(x, p + ".cross_attn.q_proj")
            attended = net.attention(q, cross[i][0], cross[i][1], causal=False)
            x = net.layernorm(x + net.linear(attended, p + ".cross_attn.out_proj"), p + ".norm2")
            x = net.layernorm(x + net.ffn(x, p + ".ffn"), p + ".norm3")
        logits = net.linear(net.layernorm(x, "decoder.norm"), "classifier")[:, 0]
        prob, token = torch.softmax(logits.float(), dim=-1).max(dim=-1)
        tokens.append(token)
        probs.append(prob)
        finished |= token == eos
        if bool(finished.all()):
            break
    return torch.stack(tokens, 1).cpu(), torch.stack(probs, 1).cpu()


def bench_config(name, args, device, gpu, out):
    cfg = PRESETS[name]
    params, buffers = random_state(cfg, 1)  # on the CPU, from a CPU generator
    params["classifier.bias"][cfg["num_classes"] - 3] = -1e4  # EOS suppressed
    params = {k: v.to(device).requires_grad_(True) for k, v in params.items()}
    buffers = {k: v.to(device) for k, v in buffers.items()}
    # torch_reference.py makes its tensors (TPS matrices, sinusoids, masks, BOS) on the default
    # device: the GPU while the network runs there.
    if device.type == "cuda":
        torch.set_default_device(device)
    try:
        run_modes(name, cfg, params, buffers, args, device, gpu, out)
    finally:
        if device.type == "cuda":
            torch.set_default_device("cpu")


def run_modes(name, cfg, params, buffers, args, device, gpu, out):
    net = Reference(cfg, params, buffers, training=False)
    autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16)  # noqa: E731
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def report(mode, batch, result):
        iterations, seconds = result
        row = {"impl": "torch-bf16", "config": name, "mode": mode, "batch": batch,
               "img_per_s": round(batch * iterations / seconds, 2),
               "ms_per_iter": round(1e3 * seconds / iterations, 3), "iterations": iterations, "gpu": gpu,
               "torch": torch.__version__}
        print(f"{name:6s} {mode:8s} {batch:6d} {row['img_per_s']:12.1f} {row['ms_per_iter']:11.2f} {iterations:6d}",
              flush=True)
        if out is not None:
            out.write(json.dumps(row) + "\n")
            out.flush()

    net.training = False
    with torch.no_grad():
        for batch in args.infer_batches:
            images = host_images(cfg, batch, device)

            def decode():
                with autocast():
                    greedy(net, images.to(device, non_blocking=True), cfg)
            report("greedy", batch, measure(decode, args.seconds, sync))
        for batch in args.infer_batches:
            images, targets = host_images(cfg, batch, device), full_targets(cfg, batch, device)

            def forward():
                with autocast():
                    logits = net.forward(images.to(device, non_blocking=True), targets)
                logits.float().cpu()
            report("forward", batch, measure(forward, args.seconds, sync))

    net.training = True
    trainable = list(params.values())
    optimizer = torch.optim.Adam(trainable, lr=1e-3, betas=(0.9, 0.98), eps=1e-9)
    pad = cfg["num_classes"] - 2
    for batch in args.train_batches:
        images, targets = host_images(cfg, batch, device), full_targets(cfg, batch, device)

        def step():
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                logits = net.forward(images.to(device, non_blocking=True), targets)
            loss = focal_loss(logits.float(), targets, pad, 2.0, 1.0)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, MAX_NORM)
            optimizer.step()
        report("train", batch, measure(step, args.seconds, sync))


def integers(text):
    return [max(1, int(x)) for x in text.split(",") if x]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="tiny,base")
    parser.add_argument("--train-batches", type=integers, default=[64, 128, 256])
    parser.add_argument("--infer-batches", type=integers, default=[1, 64, 256])
    parser.add_argument("--seconds", type=float, default=0.5)
    parser.add_argument("--json", help="append one JSON line per measurement to this file")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    args = parser.parse_args()
    configs = [c for c in args.configs.split(",") if c]
    for c in configs:
        if c not in PRESETS:
            parser.error(f"expected 'tiny' or 'base' in --configs but received '{c}'")

    if args.device == "cuda":
        if not torch.cuda.is_available():
            print("no GPU: torch.cuda.is_available() is False "
                  f"(PyTorch {torch.__version__}, built with CUDA {torch.version.cuda})")
            return 0
        if not hasattr(torch, "set_default_device"):
            print(f"torch_gpu_bench.py needs PyTorch 2.0 or newer (torch.set_default_device), found {torch.__version__}",
                  file=sys.stderr)
            return 1
    device = torch.device(args.device)
    gpu = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    print(f"PyTorch {torch.__version__} on {gpu}: torch_reference.py's network, eager, bf16 autocast; random weights, "
          f"EOS suppressed, images copied from the host each iteration; >= {args.seconds:.2f} s per row after "
          f"{WARMUP} warm-up iterations\n")
    print(f"{'config':6s} {'mode':8s} {'batch':>6s} {'images/s':>12s} {'ms/iter':>11s} {'iters':>6s}")
    out = open(args.json, "a") if args.json else None
    try:
        for name in configs:
            bench_config(name, args, device, gpu, out)
    finally:
        if out is not None:
            out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
