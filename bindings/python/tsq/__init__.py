"""libtsq from Python: Two-Step Quantization for low-bit neural networks.

A pure-ctypes binding of libtsq's whole public API (include/tsq/*.h):
nothing to compile. ``tsq.lib`` is the loaded library with every call
declared (the raw C API); the classes below wrap it:

    Context        threads, seed, logging, allocator, build information
    Tensor         float32 / uint8 / int8 tensors, zero-copy over numpy and buffers
    Quantizer      TSQ step 1: the sparse activation quantizer, learn_codes
    Regressor      TSQ step 2: low-bit weights, fit_transform, streamed fits
    Net, layers    sequential networks, training, network-level TSQ, model files
    PackedWeights, Thresholds, lowbit_gemm ...   packed low-bit inference
    Plan           a converted Net compiled for integer inference
    tsq.torch      PyTorch models: prepare, convert, to_tsq, from_tsq (imports
                   torch; loaded on first use of ``tsq.torch``)

Errors raise TsqError (status, name, message). See docs/python.md.
"""

# The imports below are the package's public names.
# flake8: noqa: F401
from . import _ffi as ffi
from ._ffi import CONSTANTS
from ._lib import (TsqError, TsqVersionError, lib, status_name, status_string,
                   version_string, library_candidates, load_library, check_version)
from .context import Context, Allocator, CountingAllocator, PROGRESS_STAGES
from .tensor import Tensor, as_tensor
from .quantizer import Quantizer, LearnResult, learn_codes, EPS_MODES
from .regressor import Regressor, FitResult, fit_transform, LOSSES, HISTORY_SERIES
from .nn import (Layer, Dense, Conv2d, BatchNorm, ReLU, MaxPool2d, GlobalAvgPool, Flatten,
                 ActQuant, LowbitDense, LowbitConv2d, Net, Param, StepResult, EvalResult,
                 TsqProgress, softmax_cross_entropy, layer_kind_name)
from .plan import (KERNELS, LAYOUTS, kernel_name, kernel_available, available_kernels,
                   PackedWeights, Thresholds, lowbit_kernel_select, lowbit_workspace_size,
                   lowbit_gemm, lowbit_gemm_threshold, im2col_codes, Plan)

globals().update(CONSTANTS)                 # TSQ_OK, TSQ_EPS_JOINT, ... as in C

__version__ = lib.version
HEADER_VERSION = ffi.HEADER_VERSION_STRING


def __getattr__(name):
    """``tsq.torch`` is imported on first use, so ``import tsq`` never
    needs torch."""
    if name == "torch":
        import importlib
        return importlib.import_module(".torch", __name__)
    raise AttributeError("module 'tsq' has no attribute %r" % name)


def version_number():
    """The loaded library's TSQ_VERSION_NUMBER (MAJOR*10000 + MINOR*100 + PATCH)."""
    return lib.version_number
