"""tsq.torch: Two-Step Quantization of a PyTorch model in four calls.

    import tsq.torch as tt
    model = tt.prepare(model, calib)          # quantizers fitted, ReLUs swapped (step 1 starts)
    ... train model with your own loop ...    # step 1: code learning
    model = tt.convert(model, calib)          # step 2 in libtsq, layer by layer
    ... fine-tune model if you like ...
    net = tt.to_tsq(model)                    # a tsq.Net: tsq.Plan(ctx, net), net.save_file()

``calibration`` is any re-iterable source of input batches: a list of
tensors, or a DataLoader (``(input, target)`` pairs are accepted; the input
is taken). Every pass must give the same batches (a DataLoader with
``shuffle=False``); a one-shot iterator is read once into a list.

The modules made here keep their state (eps, delta, bits, codes mode, the
low-bit weights) in torch parameters and buffers only: ``state_dict``,
``torch.save``, ``copy.deepcopy``, pickling and DistributedDataParallel work,
and nothing is kept in the process between calls (each call makes its own
tsq.Context unless one is given). The method: docs/method.md §2 (step 1)
and §3 (step 2); the user guide: docs/python.md.

torch is imported by this module only: ``import tsq`` does not need it.
"""

from __future__ import annotations

from ._export import from_tsq, to_tsq
from ._modules import (ActQuant, InputSpec, LowbitConv2d, LowbitLinear, lowbit_modules,
                       quant_modules)
from ._steps import convert, prepare

__all__ = ["ActQuant", "InputSpec", "LowbitLinear", "LowbitConv2d", "prepare", "convert",
           "to_tsq", "from_tsq", "quant_modules", "lowbit_modules"]

# Pickles and torch.save files name the classes by this stable path.
for _cls in (ActQuant, InputSpec, LowbitLinear, LowbitConv2d):
    _cls.__module__ = __name__
del _cls
