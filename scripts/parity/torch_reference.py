#!/usr/bin/python3
"""An independent PyTorch implementation of the SAFL network (DESIGN.md §1) and the writer of the
parity fixture that native/tests/test_parity.cpp checks the C++ network against.

    /usr/bin/python3 scripts/parity/torch_reference.py            # writes test/fixtures/parity.safetensors
    /usr/bin/python3 scripts/parity/torch_reference.py --out X    # elsewhere
    /usr/bin/python3 scripts/parity/torch_reference.py --check    # also: a float32 run vs the fixture

Needs only PyTorch (Debian's python3-torch); CI does not run it. The fixture is deterministic for a
given seed and PyTorch build.

The network is written with plain functional ops (convolution, batch norm, linear, layer norm,
grid_sample) and hand-written attention, so that every convention the C++ side relies on is explicit:
the parameter names and shapes are those of native/model/layout.h, in its order; the Q/K/V packing
of in_proj is [query; key; value] rows, kv_proj is [key; value] rows; heads are contiguous column
blocks of head_dim. The reference computation runs in float64 from float32 weights, so the fixture
is an accurate target for a float32 implementation.

Fixture content (every tensor F32, little-endian):
    <param name>                   every parameter of the layout, the weights used for the step
    <buffer name>                  every batch-norm running_mean / running_var BEFORE the step
    input.images                   (B, 3, in_h, in_w) in [-1, 1]
    input.targets                  (B, T) the integer class ids stored as float32 values
                                   (T = max_len + 1: characters, EOS, then PAD)
    output.logits                  (B, T, num_classes) teacher-forced logits in training mode
                                   (batch statistics in every batch norm, dropout 0)
    output.loss                    (1) mean focal loss over the non-PAD targets, gamma 2, alpha 1
    grad.<param name>              d loss / d param for every parameter, same shape as the param
    output.running.<buffer name>   the running statistics after that one training forward
                                   (momentum 0.1, unbiased batch variance)
    output.logits_eval             (B, T, num_classes) logits in inference mode with the running
                                   statistics from BEFORE the step (a fresh copy, not the updated ones)
__metadata__: "config" (JSON with exactly the keys of config_to_json in native/model/config.cpp),
"description" (this summary in one line), "seed", "gamma", "alpha".
"""
import argparse
import json
import math
import os
import struct
import sys

import torch
import torch.nn.functional as F

# A narrow config with the real image geometry: small enough for a fixture under 1 MB, and
# with two blocks in stage 1 so that an identity-shortcut block is exercised.
FIXTURE_CONFIG = {
    "in_h": 64, "in_w": 256, "loc_h": 32, "loc_w": 64, "rect_h": 32, "rect_w": 100,
    "fiducials": 20,
    "loc_channels": [4, 4, 8, 8, 8, 8], "loc_fc": 16,
    "res_channels": [4, 8, 8, 16, 16], "res_blocks": [1, 2, 1, 1, 1],
    "d_model": 16, "heads": 2, "ffn": 32, "enc_layers": 2, "dec_layers": 2,
    "max_len": 6, "num_classes": 13, "dropout": 0.0,
}
# Note [batch of three]: with two images, the localisation head's BatchNorm1d (statistics over the
# batch alone) maps each feature to ±1 whatever its input, and its backward is a cancellation of
# O(1) terms down to an O(eps) result: float32 rounding alone then moves every localisation
# gradient by ~0.5%. Three images keep that batch norm well conditioned.
BATCH = 3
SEED = 20240613
GAMMA, ALPHA = 2.0, 1.0

BN_EPS, BN_MOMENTUM, LN_EPS = 1e-5, 0.1, 1e-5
STAGE_STRIDES = [(2, 2), (2, 2), (2, 1), (2, 1), (2, 1)]
TPS_TARGET_MARGIN, TPS_INITIAL_MARGIN = 0.05, 0.01


# ---- the tensor list (mirrors make_layout in native/model/layout.cpp) --------------------------
def make_layout(cfg):
    """Returns ([(param name, shape)], [(buffer name, shape)]) in the layout's order."""
    params, buffers = [], []
    d = cfg["d_model"]

    def batchnorm(prefix, c):
        params.extend([(prefix + ".weight", [c]), (prefix + ".bias", [c])])
        buffers.extend([(prefix + ".running_mean", [c]), (prefix + ".running_var", [c])])

    def linear(prefix, n_out, n_in):
        params.extend([(prefix + ".weight", [n_out, n_in]), (prefix + ".bias", [n_out])])

    def layernorm(prefix):
        params.extend([(prefix + ".weight", [d]), (prefix + ".bias", [d])])

    c_in = 3
    for i, c in enumerate(cfg["loc_channels"]):
        params.append((f"loc.conv{i}.weight", [c, c_in, 3, 3]))
        batchnorm(f"loc.conv{i}.bn", c)
        c_in = c
    linear("loc.fc1", cfg["loc_fc"], c_in * (cfg["loc_h"] // 32) * (cfg["loc_w"] // 32))
    batchnorm("loc.fc1.bn", cfg["loc_fc"])
    linear("loc.fc2", 2 * cfg["fiducials"], cfg["loc_fc"])

    params.append(("backbone.stem.weight", [cfg["res_channels"][0], 3, 3, 3]))
    batchnorm("backbone.stem.bn", cfg["res_channels"][0])
    c_in = cfg["res_channels"][0]
    for s, (c, blocks) in enumerate(zip(cfg["res_channels"], cfg["res_blocks"])):
        for b in range(blocks):
            p = f"backbone.stage{s}.block{b}"
            params.append((p + ".conv1.weight", [c, c_in, 1, 1]))
            batchnorm(p + ".bn1", c)
            params.append((p + ".conv2.weight", [c, c, 3, 3]))
            batchnorm(p + ".bn2", c)
            if b == 0:
                params.append((p + ".down.weight", [c, c_in, 1, 1]))
                batchnorm(p + ".down.bn", c)
            c_in = c
    if c_in != d:
        linear("backbone.proj", d, c_in)

    for i in range(cfg["enc_layers"]):
        p = f"encoder.layer{i}"
        linear(p + ".self_attn.in_proj", 3 * d, d)
        linear(p + ".self_attn.out_proj", d, d)
        layernorm(p + ".norm1")
        linear(p + ".ffn.fc1", cfg["ffn"], d)
        linear(p + ".ffn.fc2", d, cfg["ffn"])
        layernorm(p + ".norm2")
    layernorm("encoder.norm")

    params.append(("decoder.embed.weight", [cfg["num_classes"] + 1, d]))
    for i in range(cfg["dec_layers"]):
        p = f"decoder.layer{i}"
        linear(p + ".self_attn.in_proj", 3 * d, d)
        linear(p + ".self_attn.out_proj", d, d)
        layernorm(p + ".norm1")
        linear(p + ".cross_attn.q_proj", d, d)
        linear(p + ".cross_attn.kv_proj", 2 * d, d)
        linear(p + ".cross_attn.out_proj", d, d)
        layernorm(p + ".norm2")
        linear(p + ".ffn.fc1", cfg["ffn"], d)
        linear(p + ".ffn.fc2", d, cfg["ffn"])
        layernorm(p + ".norm3")
    layernorm("decoder.norm")
    linear("classifier", cfg["num_classes"], d)
    return params, buffers


# ---- random weights ---------------------------------------------------------------------------
def fiducial_points(K, margin, dtype=torch.float64):
    """(K, 2) (x, y) pairs: two rows of K/2, top row (y = margin) first."""
    xs = torch.linspace(margin, 1.0 - margin, K // 2, dtype=dtype)
    top = torch.stack([xs, torch.full_like(xs, margin)], dim=1)
    bottom = torch.stack([xs, torch.full_like(xs, 1.0 - margin)], dim=1)
    return torch.cat([top, bottom], dim=0)


def random_state(cfg, seed):
    """float32 parameters and buffers, every tensor non-trivial (no zeros, no ones)."""
    gen = torch.Generator().manual_seed(seed)
    params_spec, buffers_spec = make_layout(cfg)

    def uniform(shape, lo, hi):
        return lo + (hi - lo) * torch.rand(shape, generator=gen, dtype=torch.float32)

    def normal(shape, std):
        return std * torch.randn(shape, generator=gen, dtype=torch.float32)

    params = {}
    for name, shape in params_spec:
        is_norm = ".bn" in name or ".norm" in name  # batch norms and layer norms
        if name == "loc.fc2.weight":
            # Small: the predicted points stay near the initial ones, the grid is clamped only near
            # the border (Note [why the grid is clamped]).
            params[name] = uniform(shape, -0.6, 0.6)
        elif name == "loc.fc2.bias":
            initial = fiducial_points(cfg["fiducials"], TPS_INITIAL_MARGIN, torch.float32).reshape(-1)
            params[name] = initial + uniform(shape, -0.04, 0.04)
        elif is_norm and name.endswith(".weight"):
            params[name] = uniform(shape, 0.6, 1.4)
        elif is_norm and name.endswith(".bias"):
            params[name] = uniform(shape, -0.3, 0.3)
        elif name == "decoder.embed.weight":
            params[name] = normal(shape, 1.0)
        elif name.endswith(".bias"):
            params[name] = uniform(shape, -0.2, 0.2)
        elif len(shape) == 4:  # convolutions: He-normal
            fan_in = shape[1] * shape[2] * shape[3]
            params[name] = normal(shape, math.sqrt(2.0 / fan_in))
        else:  # linear weights: uniform with unit-ish output scale
            bound = math.sqrt(3.0 / shape[1])
            params[name] = uniform(shape, -bound, bound)
    buffers = {}
    for name, shape in buffers_spec:
        if name.endswith("running_mean"):
            buffers[name] = normal(shape, 0.2)
        else:
            buffers[name] = uniform(shape, 0.5, 2.0)
    return params, buffers


def random_inputs(cfg, batch, seed):
    """Smooth images in [-1, 1] and targets: characters, EOS, then PAD.

    Note [smooth fixture images]: the rectified image is the input sampled at the TPS grid. float32
    rounding in the localisation network moves the control points by ~1e-6, so every sample point
    moves by ~3e-4 pixel: on pixel-level noise that changes the rectified image by ~1e-4 (then the
    logits by ~1e-3 through the training-mode network), and where a point crosses a pixel boundary
    its grid gradient jumps to the neighbouring cell's slope. On sums of smooth waves and upsampled
    coarse noise a float32 run of this reference stays within ~1e-5 of the float64 rectified
    image, so a correct float32 implementation can be held to tight tolerances.
    """
    gen = torch.Generator().manual_seed(seed + 1)
    H, W = cfg["in_h"], cfg["in_w"]
    yy = torch.linspace(0, 1, H, dtype=torch.float64).view(1, 1, H, 1)
    xx = torch.linspace(0, 1, W, dtype=torch.float64).view(1, 1, 1, W)
    images = torch.zeros(batch, 3, H, W, dtype=torch.float64)
    for _ in range(3):
        fx = 0.5 + 1.5 * torch.rand(batch, 3, 1, 1, generator=gen, dtype=torch.float64)
        fy = 0.2 + 0.6 * torch.rand(batch, 3, 1, 1, generator=gen, dtype=torch.float64)
        phase = 2 * math.pi * torch.rand(batch, 3, 1, 1, generator=gen, dtype=torch.float64)
        images += 0.3 * torch.sin(2 * math.pi * (fx * xx + fy * yy) + phase)
    coarse = torch.randn(batch, 3, H // 16, W // 32, generator=gen, dtype=torch.float64)
    images += 0.3 * F.interpolate(coarse, size=(H, W), mode="bicubic", align_corners=True)
    images = images.clamp(-1.0, 1.0).to(torch.float32)

    n_chars = cfg["num_classes"] - 3
    eos, pad, unk = n_chars, n_chars + 1, n_chars + 2
    T = cfg["max_len"] + 1
    assert batch == 3 and T == 7, "the targets below are written for B = 3, T = 7"
    targets = torch.tensor([
        [3, 7, 1, eos, pad, pad, pad],          # a short word: EOS, then PAD
        [4, unk, 0, n_chars - 1, 2, 7, eos],    # a full-length word with an unknown character
        [5, 5, eos, pad, pad, pad, pad],        # a repeated character
    ], dtype=torch.int64)
    return images, targets


# ---- the network --------------------------------------------------------------------------------
def sinusoid(T, d, dtype):
    """pe[t, 2i] = sin(t · 10000^(−2i/d)), pe[t, 2i+1] = cos(t · 10000^(−2i/d))."""
    t = torch.arange(T, dtype=torch.float64).view(T, 1)
    rate = torch.pow(10000.0, -torch.arange(0, d, 2, dtype=torch.float64) / d).view(1, -1)
    pe = torch.zeros(T, d, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(t * rate)
    pe[:, 1::2] = torch.cos(t * rate)
    return pe.to(dtype)


def tps_kernel(r2):
    """U as a function of the squared distance: 0.5 · r² · log r² (= r² log r), 0 at r = 0."""
    safe = torch.where(r2 > 0, r2, torch.ones_like(r2))
    return torch.where(r2 > 0, 0.5 * r2 * torch.log(safe), torch.zeros_like(r2))


def tps_matrices(cfg):
    """R (H·W, K+3) and L⁻¹ ((K+3)×(K+3)), built and inverted in float64."""
    K, H, W = cfg["fiducials"], cfg["rect_h"], cfg["rect_w"]
    C = fiducial_points(K, TPS_TARGET_MARGIN)
    L = torch.zeros(K + 3, K + 3, dtype=torch.float64)
    L[:K, :K] = tps_kernel(((C[:, None, :] - C[None, :, :]) ** 2).sum(-1))
    L[:K, K] = 1.0
    L[:K, K + 1:] = C
    L[K, :K] = 1.0
    L[K + 1:, :K] = C.t()
    L_inv = torch.linalg.inv(L)
    ys = torch.arange(H, dtype=torch.float64) / (H - 1)
    xs = torch.arange(W, dtype=torch.float64) / (W - 1)
    P = torch.stack([xs.view(1, W).expand(H, W), ys.view(H, 1).expand(H, W)], dim=-1).reshape(H * W, 2)
    R = torch.cat([tps_kernel(((P[:, None, :] - C[None, :, :]) ** 2).sum(-1)),
                   torch.ones(H * W, 1, dtype=torch.float64), P], dim=1)
    return R, L_inv


class Reference:
    """The SAFL network over a dict of parameter tensors (layout names) and a dict of buffers."""

    def __init__(self, cfg, params, buffers, training):
        self.cfg, self.p, self.buf, self.training = cfg, params, buffers, training
        self.dtype = next(iter(params.values())).dtype
        self.R, self.L_inv = tps_matrices(cfg)
        self.trace = {}  # intermediate activations by stage name, for investigating mismatches

    def batchnorm(self, x, prefix):
        return F.batch_norm(x, self.buf[prefix + ".running_mean"], self.buf[prefix + ".running_var"],
                            self.p[prefix + ".weight"], self.p[prefix + ".bias"],
                            training=self.training, momentum=BN_MOMENTUM, eps=BN_EPS)

    def linear(self, x, prefix):
        return F.linear(x, self.p[prefix + ".weight"], self.p[prefix + ".bias"])

    def layernorm(self, x, prefix):
        return F.layer_norm(x, (x.shape[-1],), self.p[prefix + ".weight"], self.p[prefix + ".bias"], LN_EPS)

    # -- rectification --
    def localisation(self, images):
        cfg = self.cfg
        x = F.interpolate(images, size=(cfg["loc_h"], cfg["loc_w"]), mode="bilinear", align_corners=True)
        for i in range(6):
            x = F.relu(self.batchnorm(F.conv2d(x, self.p[f"loc.conv{i}.weight"], padding=1), f"loc.conv{i}.bn"))
            if i < 5:
                x = F.max_pool2d(x, 2)
        x = x.flatten(1)  # (C, H, W) order
        x = F.relu(self.batchnorm(self.linear(x, "loc.fc1"), "loc.fc1.bn")) * 0.1
        return self.linear(x, "loc.fc2").view(x.shape[0], cfg["fiducials"], 2)

    def rectify(self, images):
        cfg = self.cfg
        B, K = images.shape[0], cfg["fiducials"]
        points = self.localisation(images)
        # The TPS map is fixed and linear: it runs in float64 even when the network does not, as
        # an implementation that precomputes R·L⁻¹ in double would (see --check).
        Y = torch.cat([points.double(), torch.zeros(B, 3, 2, dtype=torch.float64)], dim=1)  # (B, K+3, 2)
        raw = (self.R @ (self.L_inv @ Y)).to(self.dtype).view(B, cfg["rect_h"], cfg["rect_w"], 2)
        grid = raw.clamp(0.0, 1.0) * 2.0 - 1.0
        self.trace.update(control_points=points, raw_grid=raw)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=True)

    # -- backbone --
    def backbone(self, x):
        cfg = self.cfg
        x = F.relu(self.batchnorm(F.conv2d(x, self.p["backbone.stem.weight"], padding=1), "backbone.stem.bn"))
        for s, blocks in enumerate(cfg["res_blocks"]):
            for b in range(blocks):
                p = f"backbone.stage{s}.block{b}"
                stride = STAGE_STRIDES[s] if b == 0 else (1, 1)
                y = F.relu(self.batchnorm(F.conv2d(x, self.p[p + ".conv1.weight"], stride=stride), p + ".bn1"))
                y = self.batchnorm(F.conv2d(y, self.p[p + ".conv2.weight"], padding=1), p + ".bn2")
                shortcut = self.batchnorm(F.conv2d(x, self.p[p + ".down.weight"], stride=stride), p + ".down.bn") if b == 0 else x
                x = F.relu(y + shortcut)
        assert x.shape[2] == 1, "the backbone must bring the height to 1"
        x = x.squeeze(2).transpose(1, 2)  # (B, W', C)
        if "backbone.proj.weight" in self.p:
            x = self.linear(x, "backbone.proj")
        return x

    # -- transformer --
    def attention(self, q, k, v, causal):
        """q (B, Tq, d), k and v (B, S, d): heads are contiguous blocks of head_dim columns."""
        B, Tq, d = q.shape
        S, h = k.shape[1], self.cfg["heads"]
        hd = d // h
        q = q.view(B, Tq, h, hd).transpose(1, 2)
        k = k.view(B, S, h, hd).transpose(1, 2)
        v = v.view(B, S, h, hd).transpose(1, 2)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        if causal:
            mask = torch.ones(Tq, S, dtype=torch.bool).triu(1)
            scores = scores.masked_fill(mask, float("-inf"))
        out = torch.softmax(scores, dim=-1) @ v
        return out.transpose(1, 2).reshape(B, Tq, d)

    def self_attention(self, x, prefix, causal):
        d = x.shape[-1]
        qkv = self.linear(x, prefix + ".in_proj")  # rows of in_proj: [query; key; value]
        out = self.attention(qkv[..., :d], qkv[..., d:2 * d], qkv[..., 2 * d:], causal)
        return self.linear(out, prefix + ".out_proj")

    def cross_attention(self, x, memory, prefix):
        d = x.shape[-1]
        q = self.linear(x, prefix + ".q_proj")
        kv = self.linear(memory, prefix + ".kv_proj")  # rows of kv_proj: [key; value]
        return self.linear(self.attention(q, kv[..., :d], kv[..., d:], False), prefix + ".out_proj")

    def ffn(self, x, prefix):
        return self.linear(F.relu(self.linear(x, prefix + ".fc1")), prefix + ".fc2")

    def encoder(self, feat):
        x = feat + sinusoid(feat.shape[1], feat.shape[2], self.dtype)
        for i in range(self.cfg["enc_layers"]):
            p = f"encoder.layer{i}"
            x = self.layernorm(x + self.self_attention(x, p + ".self_attn", causal=False), p + ".norm1")
            x = self.layernorm(x + self.ffn(x, p + ".ffn"), p + ".norm2")
        return self.layernorm(x, "encoder.norm")

    def decoder(self, memory, targets):
        cfg = self.cfg
        B = targets.shape[0]
        bos = torch.full((B, 1), cfg["num_classes"], dtype=torch.int64)
        tokens = torch.cat([bos, targets[:, :-1]], dim=1)
        x = self.p["decoder.embed.weight"][tokens]
        x = x + sinusoid(x.shape[1], x.shape[2], self.dtype)
        for i in range(cfg["dec_layers"]):
            p = f"decoder.layer{i}"
            x = self.layernorm(x + self.self_attention(x, p + ".self_attn", causal=True), p + ".norm1")
            x = self.layernorm(x + self.cross_attention(x, memory, p + ".cross_attn"), p + ".norm2")
            x = self.layernorm(x + self.ffn(x, p + ".ffn"), p + ".norm3")
        return self.linear(self.layernorm(x, "decoder.norm"), "classifier")

    def forward(self, images, targets):
        rect = self.rectify(images)
        feat = self.backbone(rect)
        memory = self.encoder(feat)
        logits = self.decoder(memory, targets)
        self.trace.update(rectified=rect, features=feat, memory=memory, logits=logits)
        return logits


def focal_loss(logits, targets, pad, gamma, alpha):
    """Mean over non-PAD tokens of −α (1 − p_t)^γ log p_t."""
    log_p = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    fl = -alpha * (1.0 - log_p.exp()) ** gamma * log_p
    keep = targets != pad
    return fl[keep].sum() / keep.sum()


def run_step(cfg, params32, buffers32, images32, targets, dtype):
    """One training forward + backward in `dtype`; also inference logits with the original buffers."""
    params = {k: v.to(dtype).requires_grad_(True) for k, v in params32.items()}
    buffers = {k: v.to(dtype).clone() for k, v in buffers32.items()}
    images = images32.to(dtype)
    net = Reference(cfg, params, buffers, training=True)
    logits = net.forward(images, targets)
    loss = focal_loss(logits, targets, cfg["num_classes"] - 2, GAMMA, ALPHA)
    loss.backward()
    with torch.no_grad():
        fresh = {k: v.to(dtype).clone() for k, v in buffers32.items()}
        eval_logits = Reference(cfg, {k: v.detach() for k, v in params.items()}, fresh, training=False).forward(images, targets)
    grads = {k: v.grad for k, v in params.items()}
    return dict(logits=logits.detach(), loss=loss.detach(), grads=grads, running=buffers,
                logits_eval=eval_logits, trace={k: v.detach() for k, v in net.trace.items()})


# ---- tolerances -------------------------------------------------------------------------------
# Those of native/tests/test_parity.cpp (Note [parity tolerances] there explains them), so that
# --check shows how close a float32 run of this reference comes to failing the test. An element
# passes when |actual − ref| <= atol + rtol·|ref|; a gradient tensor's atol scales with its largest
# magnitude, floored for loc.fc1.bias, whose exact gradient is zero.
OUTPUT_ATOL, OUTPUT_RTOL = 1e-4, 1e-3      # output.logits, output.logits_eval, output.loss
RUNNING_ATOL, RUNNING_RTOL = 1e-5, 1e-4    # output.running.*
GRAD_SCALED_ATOL, GRAD_RTOL, GRAD_SCALE_FLOOR = 2e-3, 1e-3, 1e-2  # grad.*


def error_over_tolerance(name, actual, ref):
    """max over elements of |actual − ref| / (atol + rtol·|ref|) for the tensor's tolerance class."""
    if name.startswith("grad."):
        atol, rtol = GRAD_SCALED_ATOL * max(ref.abs().max().item(), GRAD_SCALE_FLOOR), GRAD_RTOL
    elif name.startswith("output.running."):
        atol, rtol = RUNNING_ATOL, RUNNING_RTOL
    else:
        atol, rtol = OUTPUT_ATOL, OUTPUT_RTOL
    return ((actual - ref).abs() / (atol + rtol * ref.abs())).max().item()


# ---- safetensors ---------------------------------------------------------------------------------
def write_safetensors(path, tensors, metadata):
    """tensors: list of (name, tensor) written as F32 in that order; metadata: str → str."""
    header = {"__metadata__": metadata}
    blobs, offset = [], 0
    for name, t in tensors:
        data = t.detach().to(torch.float32).contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def describe_grid(trace):
    raw = trace["raw_grid"]
    clamped = ((raw < 0) | (raw > 1)).double().mean().item()
    return f"grid coordinates clamped: {100 * clamped:.1f}%, raw range [{raw.min().item():.3f}, {raw.max().item():.3f}]"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--out", default=os.path.join(here, "..", "..", "test", "fixtures", "parity.safetensors"))
    parser.add_argument("--check", action="store_true",
                        help="also run the reference in float32 and print its error per tensor against the test's tolerances")
    args = parser.parse_args()
    torch.set_num_threads(1)

    cfg = FIXTURE_CONFIG
    params32, buffers32 = random_state(cfg, SEED)
    images32, targets = random_inputs(cfg, BATCH, SEED)
    ref = run_step(cfg, params32, buffers32, images32, targets, torch.float64)
    print(describe_grid(ref["trace"]))
    print(f"loss {ref['loss'].item():.6f}")

    if args.check:
        f32 = run_step(cfg, params32, buffers32, images32, targets, torch.float32)
        print("float32 run of this reference vs the float64 fixture, with the tolerances of test_parity.cpp:")
        rows = [("output.logits", f32["logits"], ref["logits"]), ("output.loss", f32["loss"], ref["loss"]),
                ("output.logits_eval", f32["logits_eval"], ref["logits_eval"])]
        rows += [("grad." + k, f32["grads"][k], ref["grads"][k]) for k in ref["grads"]]
        rows += [("output.running." + k, f32["running"][k], ref["running"][k]) for k in ref["running"]]
        print(f"  {'tensor':56s} {'max |ref|':>10s} {'max |err|':>10s} {'err/tol':>8s}")
        worst = 0.0
        for name, a, r in rows:
            ratio = error_over_tolerance(name, a.double(), r)
            worst = max(worst, ratio)
            print(f"  {name:56s} {r.abs().max().item():10.3e} {(a.double() - r).abs().max().item():10.3e} {ratio:8.3f}")
        print(f"worst err/tol {worst:.3f} (the test passes below 1)")

    params_spec, buffers_spec = make_layout(cfg)
    tensors = [(n, params32[n]) for n, _ in params_spec] + [(n, buffers32[n]) for n, _ in buffers_spec]
    tensors += [("input.images", images32), ("input.targets", targets.to(torch.float32)),
                ("output.logits", ref["logits"]), ("output.loss", ref["loss"].reshape(1))]
    tensors += [("grad." + n, ref["grads"][n]) for n, _ in params_spec]
    tensors += [("output.running." + n, ref["running"][n]) for n, _ in buffers_spec]
    tensors += [("output.logits_eval", ref["logits_eval"])]
    metadata = {
        "config": json.dumps(cfg, separators=(",", ":")),
        "description": ("SAFL parity fixture from scripts/parity/torch_reference.py (float64 PyTorch "
                        "reference from these float32 weights): params and running stats before the "
                        "step; input.images; input.targets (class ids as float32); output.logits "
                        "(training mode); output.loss (focal, mean over non-PAD); grad.<param>; "
                        "output.running.<buffer> after one training forward; output.logits_eval "
                        "(inference mode, running stats from before the step)"),
        "seed": str(SEED), "gamma": repr(GAMMA), "alpha": repr(ALPHA),
    }
    out = os.path.normpath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    write_safetensors(out, tensors, metadata)
    print(f"wrote {out}: {len(tensors)} tensors, {os.path.getsize(out)} bytes")


if __name__ == "__main__":
    sys.exit(main())
