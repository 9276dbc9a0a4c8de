"""A small U-Net for ε-prediction with learned variance (Flax NNX, float32).

The architecture follows the improved-DDPM U-Net (Nichol & Dhariwal 2021,
the ``openai/improved-diffusion`` design), scaled down:

- input 3×3 convolution to ``base_channels``;
- per resolution level ``ℓ`` (channels ``base_channels · channel_mult[ℓ]``):
  ``num_res_blocks`` residual blocks (GroupNorm → SiLU → 3×3 conv, plus the
  projected timestep embedding, → GroupNorm → SiLU → 3×3 conv initialised at
  zero, plus a 1×1 skip projection when the width changes), each followed by
  multi-head self-attention when the level's resolution is in
  ``attention_resolutions``; then a stride-2 3×3 convolution down;
- middle: residual block, self-attention, residual block;
- decoder: mirror image with ``num_res_blocks + 1`` residual blocks per level,
  each fed the concatenation with the matching encoder activation (skip
  connection), nearest-neighbour ×2 upsampling + 3×3 convolution up;
- output GroupNorm → SiLU → 3×3 convolution to 2 channels (initialised at
  zero): ε̂ and the raw variance value in [-1, 1] nominal.

The timestep enters through a sinusoidal embedding of the (integer or real)
step ``t ∈ [0, T)`` followed by a 2-layer MLP (width ``4·base_channels``); every
residual block adds its own linear projection of it.

Images are channels-last: the network maps (B, n, n, 1) to (B, n, n, 2).
:func:`make_apply` returns the pure function the diffusion code uses,
``apply(params, x, t) -> (eps, v)`` on (B, n, n) images with
``v = (raw + 1) / 2`` the learned-range interpolation weight
(Σ = exp(v log β_t + (1 − v) log β̃_t)).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = ["UNetConfig", "UNet", "timestep_embedding", "make_apply", "init_params", "abstract_params",
           "count_params"]

_F32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """U-Net hyper-parameters.

    Attributes:
        image_size: n; the input is (B, n, n). Must be divisible by
            ``2 ** (len(channel_mult) - 1)``.
        base_channels: width of the first level.
        channel_mult: width multiplier per resolution level (one level per entry).
        num_res_blocks: residual blocks per level in the encoder (decoder: +1).
        attention_resolutions: resolutions (pixels per side) with self-attention.
        num_heads: attention heads.
        num_groups: GroupNorm groups (must divide every width).
        out_channels: 2 = ε̂ and the learned-range variance value.
        in_channels: input channels (1 for the prior's images; more for networks that
            take several images, such as the KTC2023 segmenter's linearised reconstructions).
    """

    image_size: int = 32
    base_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention_resolutions: tuple[int, ...] = (8,)
    num_heads: int = 4
    num_groups: int = 8
    out_channels: int = 2
    in_channels: int = 1

    def __post_init__(self):
        levels = len(self.channel_mult)
        if levels < 1:
            raise ValueError("channel_mult needs at least one level")
        if self.image_size % (2 ** (levels - 1)):
            raise ValueError(f"image_size {self.image_size} is not divisible by 2**{levels - 1} "
                             f"for {levels} levels")
        for m in self.channel_mult:
            ch = self.base_channels * m
            if ch % self.num_groups:
                raise ValueError(f"width {ch} is not divisible by num_groups={self.num_groups}")
            if ch % self.num_heads:
                raise ValueError(f"width {ch} is not divisible by num_heads={self.num_heads}")
        if self.num_res_blocks < 1:
            raise ValueError(f"num_res_blocks must be >= 1, got {self.num_res_blocks}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def timestep_embedding(t, dim: int, max_period: float = 10_000.0) -> jax.Array:
    """Sinusoidal embedding (B, dim) float32 of timesteps t (B,) (cos half, then sin half)."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=_F32) / half)
    args = jnp.asarray(t, _F32)[:, None] * freqs[None]
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    if dim % 2:
        emb = jnp.concatenate([emb, jnp.zeros_like(emb[:, :1])], axis=-1)
    return emb


def _conv(cin, cout, rngs, *, k=3, stride=1, zero=False):
    kw = {"kernel_init": nnx.initializers.zeros_init()} if zero else {}
    return nnx.Conv(cin, cout, (k, k), strides=stride, padding="SAME", rngs=rngs, **kw)


class ResBlock(nnx.Module):
    """GroupNorm–SiLU–conv, + timestep projection, GroupNorm–SiLU–conv(zero init), + skip."""

    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int, rngs: nnx.Rngs):
        self.norm1 = nnx.GroupNorm(cin, num_groups=groups, rngs=rngs)
        self.conv1 = _conv(cin, cout, rngs)
        self.emb = nnx.Linear(emb_dim, cout, rngs=rngs)
        self.norm2 = nnx.GroupNorm(cout, num_groups=groups, rngs=rngs)
        self.conv2 = _conv(cout, cout, rngs, zero=True)
        self.skip = _conv(cin, cout, rngs, k=1) if cin != cout else None

    def __call__(self, x, emb):
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        h = h + self.emb(jax.nn.silu(emb))[:, None, None, :]
        h = self.conv2(jax.nn.silu(self.norm2(h)))
        return (x if self.skip is None else self.skip(x)) + h


class Attention(nnx.Module):
    """Multi-head self-attention over all pixels, with a zero-initialised output projection."""

    def __init__(self, ch: int, heads: int, groups: int, rngs: nnx.Rngs):
        self.heads = heads
        self.norm = nnx.GroupNorm(ch, num_groups=groups, rngs=rngs)
        self.qkv = nnx.Linear(ch, 3 * ch, rngs=rngs)
        self.proj = nnx.Linear(ch, ch, kernel_init=nnx.initializers.zeros_init(), rngs=rngs)

    def __call__(self, x):
        B, H, W, C = x.shape
        d = C // self.heads
        qkv = self.qkv(self.norm(x)).reshape(B, H * W, 3, self.heads, d)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]               # (B, L, heads, d)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d)
        att = jax.nn.softmax(logits, axis=-1)
        out = jnp.einsum("bhqk,bkhd->bqhd", att, v).reshape(B, H, W, C)
        return x + self.proj(out)


class Downsample(nnx.Module):
    def __init__(self, ch: int, rngs: nnx.Rngs):
        self.conv = _conv(ch, ch, rngs, stride=2)

    def __call__(self, x):
        return self.conv(x)


class Upsample(nnx.Module):
    def __init__(self, ch: int, rngs: nnx.Rngs):
        self.conv = _conv(ch, ch, rngs)

    def __call__(self, x):
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return self.conv(x)


class UNet(nnx.Module):
    """The ε / variance U-Net; ``model(x, t)`` maps (B, n, n, in_channels), (B,) to (B, n, n, out_channels)
    float32 (the prior: 1 → 2 channels, ε̂ and the variance value; ``t`` conditions every block)."""

    def __init__(self, config: UNetConfig, *, rngs: nnx.Rngs):
        self.config = config
        c = config
        ch0, g = c.base_channels, c.num_groups
        emb_dim = 4 * ch0
        self.emb1 = nnx.Linear(ch0, emb_dim, rngs=rngs)
        self.emb2 = nnx.Linear(emb_dim, emb_dim, rngs=rngs)
        self.conv_in = _conv(c.in_channels, ch0, rngs)

        down, skips = [], [ch0]
        ch, res = ch0, c.image_size
        for level, mult in enumerate(c.channel_mult):
            for _ in range(c.num_res_blocks):
                out = ch0 * mult
                block = [ResBlock(ch, out, emb_dim, g, rngs)]
                if res in c.attention_resolutions:
                    block.append(Attention(out, c.num_heads, g, rngs))
                down.append(nnx.List(block))
                ch = out
                skips.append(ch)
            if level != len(c.channel_mult) - 1:
                down.append(nnx.List([Downsample(ch, rngs)]))
                skips.append(ch)
                res //= 2
        self.down = nnx.List(down)

        self.mid1 = ResBlock(ch, ch, emb_dim, g, rngs)
        self.mid_attn = Attention(ch, c.num_heads, g, rngs)
        self.mid2 = ResBlock(ch, ch, emb_dim, g, rngs)

        up = []
        for level, mult in reversed(list(enumerate(c.channel_mult))):
            for i in range(c.num_res_blocks + 1):
                out = ch0 * mult
                block = [ResBlock(ch + skips.pop(), out, emb_dim, g, rngs)]
                if res in c.attention_resolutions:
                    block.append(Attention(out, c.num_heads, g, rngs))
                if level and i == c.num_res_blocks:
                    block.append(Upsample(out, rngs))
                    res *= 2
                up.append(nnx.List(block))
                ch = out
        self.up = nnx.List(up)
        self.norm_out = nnx.GroupNorm(ch, num_groups=g, rngs=rngs)
        self.conv_out = _conv(ch, c.out_channels, rngs, zero=True)

    @staticmethod
    def _run(block, h, emb):
        for layer in block:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        return h

    def __call__(self, x, t):
        x = jnp.asarray(x, _F32)
        t = jnp.broadcast_to(jnp.asarray(t, _F32), x.shape[:1])
        emb = self.emb2(jax.nn.silu(self.emb1(timestep_embedding(t, self.config.base_channels))))
        h = self.conv_in(x)
        hs = [h]
        for block in self.down:
            h = self._run(block, h, emb)
            hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for block in self.up:
            h = self._run(block, jnp.concatenate([h, hs.pop()], axis=-1), emb)
        return self.conv_out(jax.nn.silu(self.norm_out(h)))


#: Layers whose kernels start at zero (the improved-DDPM ``zero_module``s).
_ZERO_INIT = ("conv2", "proj", "conv_out")
#: Std of a standard normal truncated to [-2, 2] (flax's variance_scaling constant).
_TRUNC_STD = 0.87962566103423978


def init_params(config: UNetConfig, key) -> tuple[nnx.GraphDef, nnx.State]:
    """Initial ``(graphdef, params)`` of a :class:`UNet` from ``key``.

    Same distributions as the layers' own initialisers (LeCun truncated normal
    kernels, zero biases, unit GroupNorm scales, zero kernels for the layers in
    :data:`_ZERO_INIT`), but all random numbers come from one truncated-normal
    draw split over the kernels in parameter order: one random op to compile
    instead of one per parameter shape (seconds instead of a minute on a small CPU).
    """
    graphdef, abstract = abstract_params(config)
    pure = nnx.to_pure_dict(abstract)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(pure)
    sizes = [math.prod(leaf.shape) for _, leaf in leaves]
    z = np.asarray(jax.random.truncated_normal(key, -2.0, 2.0, (sum(sizes),), _F32))
    out, offset = [], 0
    for (path, leaf), size in zip(leaves, sizes):
        names = [getattr(p, "key", None) for p in path]
        if names[-1] == "kernel" and names[-2] not in _ZERO_INIT:
            fan_in = math.prod(leaf.shape[:-1])
            value = z[offset:offset + size].reshape(leaf.shape) / (math.sqrt(fan_in) * _TRUNC_STD)
        elif names[-1] == "scale":
            value = np.ones(leaf.shape, np.float32)
        else:                                           # biases and zero-initialised kernels
            value = np.zeros(leaf.shape, np.float32)
        offset += size
        out.append(jnp.asarray(value, leaf.dtype))
    params = abstract
    nnx.replace_by_pure_dict(params, jax.tree_util.tree_unflatten(treedef, out))
    return graphdef, params


@contextlib.contextmanager
def _without_tracer_origins():
    """Skip JAX's search for a tracer's origin while a network is built abstractly.

    Each RNG draw of a Flax module updates a counter, and Flax compares the old and new values'
    ``sharding``; on a tracer that attribute raises an AttributeError whose message JAX builds
    by searching the whole trace for the value's origin: a cost quadratic in the network's size
    (about 70 % of the U-Net's abstract build) for a message that ``getattr(..., None)`` drops.
    Only the message changes (to none), and only inside this block.
    """
    try:
        from jax._src.interpreters import partial_eval as pe
        tracer = pe.DynamicJaxprTracer
        original = tracer.__dict__["_origin_msg"]
    except (ImportError, AttributeError, KeyError):   # another JAX layout: nothing to skip
        yield
        return
    tracer._origin_msg = lambda self: ""
    try:
        yield
    finally:
        tracer._origin_msg = original


def abstract_params(config: UNetConfig) -> tuple[nnx.GraphDef, nnx.State]:
    """``(graphdef, params)`` with ``jax.ShapeDtypeStruct`` leaves: no arrays are built (fast)."""
    with _without_tracer_origins():
        return nnx.split(nnx.eval_shape(lambda: UNet(config, rngs=nnx.Rngs(0))))


def count_params(params) -> int:
    """Number of scalar parameters in a state / pytree."""
    return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))


def make_apply(graphdef: nnx.GraphDef):
    """The pure, jitted network function ``apply(params, x, t) -> (eps, v)``.

    Args (of the returned function):
        params: the state from ``nnx.split(model)``.
        x: (B, n, n) (or (n, n)) images in the prior's [-1, 1] units, any float dtype.
        t: integer timesteps in [0, T), scalar or (B,).

    Returns:
        ``(eps, v)``: ε̂ and the variance interpolation weight ``v = (raw + 1) / 2``,
        both float32 of x's shape.
    """

    @jax.jit
    def apply(params, x, t):
        x = jnp.asarray(x, _F32)
        single = x.ndim == 2
        if single:
            x = x[None]
        model = nnx.merge(graphdef, params)
        out = model(x[..., None], t)
        eps, v = out[..., 0], 0.5 * (out[..., 1] + 1.0)
        if single:
            eps, v = eps[0], v[0]
        return eps, v

    return apply
