"""Layers (tsq_layer, include/tsq/nn.h): the Layer handle, one class per
kind, their options, information and parameters. Nets are in net.py."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple, Union

if TYPE_CHECKING:                                   # names used in annotations only
    from .context import Context  # noqa: F401
    from .quantizer import Quantizer  # noqa: F401

import collections
import ctypes
import weakref

from . import _buffers as B
from . import _ffi
from ._buffers import ArrayLike
from ._base import Handle, check_static
from ._call import Call
from ._keys import key_names, lookup
from ._lib import lib
from .tensor import Tensor

__all__ = ["Layer", "Dense", "Conv2d", "BatchNorm", "ReLU", "MaxPool2d", "GlobalAvgPool",
           "Flatten", "ActQuant", "LowbitDense", "LowbitConv2d", "Param", "layer_kind_name"]

Param = collections.namedtuple("Param", "name value grad layer_index")
Param.__doc__ = """A trainable parameter: its name ("weight", "bias", ...), value
and gradient Tensors (borrowed: valid while the net's layer list is not
changed) and the index of its layer (None for a standalone layer)."""

# "trainable", "bn_momentum", "bn_eps", "bn_frozen", "aq_output_codes",
# "tsq_select", "lowbit_train_alpha", "qat_weight_bits", "qat_scale",
# "aq_learn_delta".
_OPTIONS = key_names("TSQ_LAYER_OPT_", 0x0400)
# "in_channels", "out_channels", "kernel_h", "kernel_w", "stride", "pad",
# "weight_bits", "bits".
_INFO = key_names("TSQ_LAYER_INFO_", 0x0500)


def _kernel_hw(kernel):
    if isinstance(kernel, (tuple, list)):
        return B.int_arg(kernel[0], "kernel"), B.int_arg(kernel[1], "kernel")
    return B.int_arg(kernel, "kernel"), B.int_arg(kernel, "kernel")


def layer_kind_name(kind: Union[str, int]) -> str:
    """The name of a TSQ_LAYER_* kind ("dense", "conv2d", ...)."""
    return lib.tsq_layer_kind_name(B.int_arg(kind, "kind")).decode()


class Layer(Handle):
    """A layer (tsq_layer). Made by the subclasses' constructors; owned by
    the Python object until appended to a Net, which then owns it (the
    Python object stays usable as a view while the layer is in the net).

    Parameters and states are borrowed Tensors; ``params()`` lists them."""

    _destroy_name = "tsq_layer_destroy"
    _errmsg_name = "tsq_layer_errmsg"
    _net = None

    def _create(self, ctx, name, *args):
        """Runs tsq_layer_<name>_create(ctx, *args, &out) and owns the result."""
        out = ctypes.POINTER(_ffi.tsq_layer)()
        fn = "tsq_layer_%s_create" % name
        ctx._check(getattr(lib, fn)(ctx.handle, *(args + (ctypes.byref(out),))), fn)
        self._adopt(ctx, out)
        self._net = None

    @classmethod
    def _view(cls, ctx, ptr, net):
        layer = cls._new_borrowed(ctx, ptr, net)
        layer._net = weakref.ref(net)
        return layer

    @property
    def kind(self):
        """The TSQ_LAYER_* kind number."""
        v = ctypes.c_int32()
        self._call("tsq_layer_kind", ctypes.byref(v))
        return v.value

    @property
    def kind_name(self):
        """The kind's name ("dense", "conv2d", "act_quant"...)."""
        return layer_kind_name(self.kind)

    def info(self, key: Union[str, int]) -> Any:
        """A configuration value: "in_channels", "out_channels", "kernel_h",
        "kernel_w", "stride", "pad", "weight_bits", "bits" (or a number)."""
        v = ctypes.c_int64()
        self._call("tsq_layer_info", lookup(_INFO, key, "layer info key"), ctypes.byref(v))
        return v.value

    @property
    def sample_shapes(self):
        """(input sample shape, output sample shape), once in a net."""
        cap = 4
        ins, outs = (ctypes.c_int64 * cap)(), (ctypes.c_int64 * cap)()
        ni, no = ctypes.c_int32(), ctypes.c_int32()
        self._call("tsq_layer_sample_shapes", ins, ctypes.byref(ni), outs, ctypes.byref(no),
                   cap)
        return tuple(ins[:ni.value]), tuple(outs[:no.value])

    def set_option(self, key: Union[str, int], value: float) -> "Layer":
        """Sets an option (tsq_layer_set_option): "trainable", "bn_momentum",
        "bn_eps", "bn_frozen", "aq_output_codes", "aq_learn_delta",
        "tsq_select", "lowbit_train_alpha", "qat_weight_bits", "qat_scale"
        (or a TSQ_LAYER_OPT_* number); each applies to the kinds nn.h says."""
        self._call("tsq_layer_set_option", lookup(_OPTIONS, key, "layer option"),
                   B.real_arg(value, "value"))
        return self

    def get_option(self, key: Union[str, int]) -> float:
        """Reads an option, as a float (tsq_layer_get_option)."""
        v = ctypes.c_double()
        self._call("tsq_layer_get_option", lookup(_OPTIONS, key, "layer option"),
                   ctypes.byref(v))
        return v.value

    @staticmethod
    def option_bounds(key: Union[str, int]) -> Any:
        """The inclusive (lo, hi) range of an option
        (tsq_layer_option_bounds)."""
        lo, hi = ctypes.c_double(), ctypes.c_double()
        check_static(lib.tsq_layer_option_bounds(lookup(_OPTIONS, key, "layer option"),
                                                 ctypes.byref(lo), ctypes.byref(hi)),
                     "tsq_layer_option_bounds")
        return lo.value, hi.value

    @property
    def trainable(self):
        """Whether the built-in optimisers update this layer."""
        return bool(self.get_option("trainable"))

    @trainable.setter
    def trainable(self, v):
        self.set_option("trainable", 1 if v else 0)

    def _layer_index(self):
        net = self._net() if self._net is not None else None
        if net is None:
            return None
        addrs = net._layer_addresses()
        a = ctypes.addressof(self.handle.contents)
        return addrs.index(a) if a in addrs else None

    def params(self) -> List[Param]:
        """The trainable parameters, as Param(name, value, grad, layer_index)."""
        n = ctypes.c_int32()
        self._call("tsq_layer_param_count", ctypes.byref(n))
        out = []
        index = self._layer_index()
        for i in range(n.value):
            v = ctypes.POINTER(_ffi.tsq_tensor)()
            g = ctypes.POINTER(_ffi.tsq_tensor)()
            name = ctypes.c_char_p()
            self._call("tsq_layer_param", i, ctypes.byref(v), ctypes.byref(g),
                       ctypes.byref(name))
            out.append(Param(name.value.decode(), Tensor._view(self._ctx, v, self),
                             Tensor._view(self._ctx, g, self) if g else None, index))
        return out

    def param(self, name: str) -> Any:
        """The Param called `name` ("weight", "bias", "gamma", ...)."""
        for p in self.params():
            if p.name == name:
                return p
        raise KeyError("layer %s has no parameter %r" % (self.kind_name, name))

    def states(self) -> Dict[str, Tensor]:
        """The non-trainable tensors by name ("running_mean", "running_var",
        "weight_codes"), borrowed."""
        n = ctypes.c_int32()
        self._call("tsq_layer_state_count", ctypes.byref(n))
        out = collections.OrderedDict()
        for i in range(n.value):
            v = ctypes.POINTER(_ffi.tsq_tensor)()
            name = ctypes.c_char_p()
            self._call("tsq_layer_state", i, ctypes.byref(v), ctypes.byref(name))
            out[name.value.decode()] = Tensor._view(self._ctx, v, self)
        return out

    def _describe(self):
        """The configuration that matters, for repr."""
        kind = self.kind_name
        try:
            if kind in ("dense", "lowbit_dense"):
                d = "%d -> %d" % (self.info("in_channels"), self.info("out_channels"))
            elif kind in ("conv2d", "lowbit_conv2d"):
                d = "%d -> %d, %dx%d, stride %d, pad %d" % (
                    self.info("in_channels"), self.info("out_channels"), self.info("kernel_h"),
                    self.info("kernel_w"), self.info("stride"), self.info("pad"))
            elif kind == "batchnorm":
                d = "%d channels" % self.info("in_channels")
            elif kind == "maxpool2d":
                d = "%dx%d, stride %d" % (self.info("kernel_h"), self.info("kernel_h"),
                                          self.info("stride"))
            elif kind == "act_quant":
                n, bits, eps, delta = self.get_channel(0)
                d = "%d-bit, %s, %s" % (bits, "eps=%.4g delta=%.4g" % (eps, delta) if not n
                                        else "%d channels" % n,
                                        "codes" if self.output_codes else "values")
            else:
                d = ""
            if kind.startswith("lowbit"):
                d += ", %d-bit weights" % self.info("weight_bits")
        except Exception:               # pragma: no cover - a repr must not raise
            d = ""
        return kind + (" " + d if d else "")

    def __repr__(self) -> str:
        if self.closed:
            return "<tsq.%s closed>" % type(self).__name__
        return "<tsq.%s %s%s>" % (type(self).__name__, self._describe(),
                                  "" if self.owned else " (in a net)")


class Dense(Layer):
    """Fully connected y = W x + b, W (out, in), He-normal initialisation."""

    def __init__(self, ctx: Context, in_features: int, out_features: int) -> None:
        self._create(ctx, "dense", B.int_arg(in_features, "in_features"),
                     B.int_arg(out_features, "out_features"))


class Conv2d(Layer):
    """2-D convolution with bias: cin -> cout channels, kernel (int or
    (kh, kw)), one stride and zero padding for both directions."""

    def __init__(self, ctx: Context, cin: int, cout: int, kernel: Union[int, Tuple[int, int]],
                 stride: int = 1, pad: int = 0) -> None:
        kh, kw = _kernel_hw(kernel)
        self._create(ctx, "conv2d", B.int_arg(cin, "cin"), B.int_arg(cout, "cout"), kh, kw,
                     B.int_arg(stride, "stride"), B.int_arg(pad, "pad"))


class BatchNorm(Layer):
    """Batch normalisation over `channels` (1-d or 2-d by the input)."""

    def __init__(self, ctx: Context, channels: int) -> None:
        self._create(ctx, "batchnorm", B.int_arg(channels, "channels"))


class ReLU(Layer):
    """y = max(x, 0)."""

    def __init__(self, ctx: Context) -> None:
        self._create(ctx, "relu")


class MaxPool2d(Layer):
    """Max over k x k windows moved by stride (default k), no padding."""

    def __init__(self, ctx: Context, k: int, stride: Optional[int] = None) -> None:
        self._create(ctx, "maxpool2d", B.int_arg(k, "k"),
                     B.int_arg(k if stride is None else stride, "stride"))


class GlobalAvgPool(Layer):
    """(C, H, W) -> (C): the mean over positions."""

    def __init__(self, ctx: Context) -> None:
        self._create(ctx, "global_avgpool")


class Flatten(Layer):
    """Any sample shape -> a vector (element order kept)."""

    def __init__(self, ctx: Context) -> None:
        self._create(ctx, "flatten")


class ActQuant(Layer):
    """The sparse activation quantizer of TSQ step 1 as a layer (per
    tensor: bits, eps, delta; per channel via set_channel). Outputs k*delta,
    or the codes k with option aq_output_codes = 1."""

    def __init__(self, ctx: Context, bits: int = 2, eps: float = 0.0, delta: float = 1.0) -> None:
        self._create(ctx, "act_quant", B.int_arg(bits, "bits"), B.real_arg(eps, "eps"),
                     B.real_arg(delta, "delta"))

    @classmethod
    def from_quantizer(cls, ctx: Context, quantizer: Quantizer) -> "ActQuant":
        """A quantizer layer with a fitted Quantizer's parameters."""
        out = ctypes.POINTER(_ffi.tsq_layer)()
        ctx._check(lib.tsq_layer_act_quant_create_from(ctx.handle, quantizer,
                                                       ctypes.byref(out)),
                   "tsq_layer_act_quant_create_from")
        layer = cls.__new__(cls)
        layer._adopt(ctx, out)
        layer._net = None
        return layer

    def set_channel(self, channel: int, nchannels: int, bits: int, eps: float,
                    delta: float) -> "ActQuant":
        """Sets (bits, eps, delta) of one channel (channel -1: per tensor;
        channel >= 0 makes the layer per-channel over nchannels)."""
        self._call("tsq_layer_act_quant_set_channel", B.int_arg(channel, "channel"),
                   B.int_arg(nchannels, "nchannels"), B.int_arg(bits, "bits"),
                   B.real_arg(eps, "eps"), B.real_arg(delta, "delta"))
        return self

    def get_channel(self, channel: int = -1) -> Tuple:
        """(nchannels, bits, eps, delta) of a channel (nchannels 0: per tensor)."""
        n, b = ctypes.c_int64(), ctypes.c_int32()
        e, d = ctypes.c_float(), ctypes.c_float()
        self._call("tsq_layer_act_quant_get_channel", B.int_arg(channel, "channel"),
                   ctypes.byref(n),
                   ctypes.byref(b), ctypes.byref(e), ctypes.byref(d))
        return n.value, b.value, e.value, d.value

    @property
    def output_codes(self):
        """True when the layer outputs codes k instead of k * delta."""
        return bool(self.get_option("aq_output_codes"))

    @output_codes.setter
    def output_codes(self, v):
        self.set_option("aq_output_codes", 1 if v else 0)


class _Lowbit(Layer):
    def weight_shape(self) -> Tuple[int, ...]:
        """The one shape set() takes for the codes: (out, in) for a dense
        layer, (cout, cin, kh, kw) for a convolution (outputs first, as the
        layer's "weight" parameter)."""
        if self.kind == _ffi.TSQ_LAYER_LOWBIT_DENSE:
            return (self.info("out_channels"), self.info("in_channels"))
        return (self.info("out_channels"), self.info("in_channels"), self.info("kernel_h"),
                self.info("kernel_w"))

    def set(self, codes: ArrayLike, alpha: ArrayLike,
            bias: Optional[ArrayLike] = None) -> "_Lowbit":
        """Sets the weight codes, the scales alpha (> 0) and the offsets
        (None for 0) and resets the shadow weights to alpha * codes.

        codes: exactly weight_shape(), (out, in) or (cout, cin, kh, kw),
        int8 or integer-valued data in -m..m; any other shape, the
        transposed (in, out) one included (Regressor's FitResult.weights is
        (in, out): pass weights.T), raises ValueError. alpha and bias: (out,)
        float32 data."""
        want = self.weight_shape()
        out = want[0]
        with Call(self._ctx) as c:
            ct = c.input(codes, B.I8, "codes")
            at = c.input(alpha, B.F32, "alpha")
            bt = c.input(bias, B.F32, "bias")
            for name, t, shape in (("codes", ct, want), ("alpha", at, (out,)),
                                   ("bias", bt, (out,))):
                if t is not None and tuple(t.shape) != shape:
                    hint = " (that is the transposed shape: pass codes.T)" \
                        if name == "codes" and tuple(t.shape) == tuple(reversed(want)) else ""
                    raise ValueError("%s.set: %s must have shape %s, got %s%s"
                                     % (type(self).__name__, name, shape, tuple(t.shape), hint))
            self._call("tsq_layer_lowbit_set", ct, at, bt)
        return self


class LowbitDense(_Lowbit):
    """y_c = alpha_c (x . w_c) + b_c with integer codes w (weight_bits 2..8;
    2 = ternary). Set the codes with set()."""

    def __init__(self, ctx: Context, in_features: int, out_features: int,
                 weight_bits: int = 2) -> None:
        self._create(ctx, "lowbit_dense", B.int_arg(in_features, "in_features"),
                     B.int_arg(out_features, "out_features"),
                     B.int_arg(weight_bits, "weight_bits"))


class LowbitConv2d(_Lowbit):
    """The low-bit form of Conv2d (see LowbitDense)."""

    def __init__(self, ctx: Context, cin: int, cout: int, kernel: Union[int, Tuple[int, int]],
                 stride: int = 1, pad: int = 0, weight_bits: int = 2) -> None:
        kh, kw = _kernel_hw(kernel)
        self._create(ctx, "lowbit_conv2d", B.int_arg(cin, "cin"), B.int_arg(cout, "cout"), kh, kw,
                     B.int_arg(stride, "stride"),
                     B.int_arg(pad, "pad"), B.int_arg(weight_bits, "weight_bits"))


_KIND_CLASSES = {_ffi.TSQ_LAYER_DENSE: Dense, _ffi.TSQ_LAYER_CONV2D: Conv2d,
                 _ffi.TSQ_LAYER_BATCHNORM: BatchNorm, _ffi.TSQ_LAYER_RELU: ReLU,
                 _ffi.TSQ_LAYER_ACT_QUANT: ActQuant, _ffi.TSQ_LAYER_MAXPOOL2D: MaxPool2d,
                 _ffi.TSQ_LAYER_GLOBAL_AVGPOOL: GlobalAvgPool, _ffi.TSQ_LAYER_FLATTEN: Flatten,
                 _ffi.TSQ_LAYER_LOWBIT_DENSE: LowbitDense,
                 _ffi.TSQ_LAYER_LOWBIT_CONV2D: LowbitConv2d}
