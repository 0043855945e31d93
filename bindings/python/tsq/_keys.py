"""Names for the C library's keys: the tables of option, info and property
names of every handle, built from the header's constants, and the one
lookup that turns a name (or a number) into the key a call takes.

A key's name is its C constant's name without the family prefix,
lowercased: TSQ_REGRESSOR_WEIGHT_BITS is "weight_bits", TSQ_NET_TSQ_ACT_BITS
is "act_bits", TSQ_PLAN_STAGES is "stages". Each family owns a range of key
numbers (0x0100 context options, 0x0200 quantizer, 0x0300 regressor, 0x0400
layer options, 0x0500 layer info, 0x0600 net conversion options, 0x0700
plan, 0x0800 packed weights, 0x0900 thresholds, 0x0A00 context info), so a
table holds every key of its family and nothing else (the net's
TSQ_NET_TSQ_IDLE/LEARNING/FITTING stages share the prefix, not the range)."""

from typing import Dict, Mapping, Union

from . import _buffers as B
from ._ffi import CONSTANTS

__all__ = ["key_names", "lookup"]


def key_names(prefix: str, family: int) -> Dict[str, int]:
    """{name: key} for the constants named `prefix`... whose value is in the
    family's range [family + 1, family + 0xFF]."""
    return dict((name[len(prefix):].lower(), value) for name, value in CONSTANTS.items()
                if name.startswith(prefix) and family < value < family + 0x100)


def lookup(table: Mapping[str, int], key: Union[str, int], what: str,
           name: str = "key") -> int:
    """The number for `key`: a name of `table` or an int passed through (the
    library refuses an unknown number with its own message); `name` is the
    argument a TypeError names."""
    if isinstance(key, str):
        try:
            return table[key]
        except KeyError:
            raise ValueError("unknown %s %r (known: %s)" % (what, key, ", ".join(sorted(table))))
    return B.int_arg(key, name)
