#!/usr/bin/env python3
"""Generate bindings/python/tsq/_ffi.py from the public headers include/tsq/*.h.

The headers follow a narrow ABI (docs/abi.md): only fixed-width scalars,
pointers to them, opaque handles and three callback typedefs cross it. This
script reads

  * ``TSQ_API <type> <name>(<params>);`` declarations,
  * ``enum { NAME = value, ... };`` constants (integer expressions),
  * ``#define NAME <integer expression>`` constants (and the version string),
  * ``typedef struct x x;`` opaque handles, ``typedef int32_t tsq_status;``
    aliases and ``typedef <ret> (*name)(<params>);`` callbacks,

and writes a Python module that declares ``argtypes`` and ``restype`` for every
call. It needs nothing but the standard library, so it runs anywhere the
headers are.

Usage::

    python3 bindings/python/gen_ffi.py              # rewrite tsq/_ffi.py
    python3 bindings/python/gen_ffi.py --check      # exit 1 if it is stale
    python3 bindings/python/gen_ffi.py --stdout     # print instead

The test tests/test_ffi.py regenerates the module and compares it with the
committed one.
"""

import ast
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
DEFAULT_INCLUDE = os.path.join(REPO, "include")
DEFAULT_OUTPUT = os.path.join(HERE, "tsq", "_ffi.py")

SCALARS = {
    "int8_t": "C.c_int8",
    "uint8_t": "C.c_uint8",
    "int16_t": "C.c_int16",
    "uint16_t": "C.c_uint16",
    "int32_t": "C.c_int32",
    "uint32_t": "C.c_uint32",
    "int64_t": "C.c_int64",
    "uint64_t": "C.c_uint64",
    "float": "C.c_float",
    "double": "C.c_double",
    "char": "C.c_char",
    "void": "None",
}


class HeaderError(Exception):
    """A construct of the headers that this generator does not understand."""


def strip_comments(text):
    """Removes /* */ and // comments, keeping line structure for #define."""
    def block(match):
        return "\n" * match.group(0).count("\n")
    text = re.sub(r"/\*.*?\*/", block, text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def header_order(include_dir):
    """The headers in the umbrella header's include order, then any others."""
    tsq_dir = os.path.join(include_dir, "tsq")
    names = sorted(n for n in os.listdir(tsq_dir) if n.endswith(".h"))
    order = []
    umbrella = os.path.join(include_dir, "tsq.h")
    if os.path.exists(umbrella):
        with open(umbrella) as f:
            for m in re.finditer(r'#\s*include\s+"tsq/([\w.]+\.h)"', f.read()):
                if m.group(1) in names and m.group(1) not in order:
                    order.append(m.group(1))
    return order + [n for n in names if n not in order]


def eval_int(expr, known):
    """Evaluates an integer constant expression of the headers (names of
    earlier constants, + - * / % << >> | & ~ and parentheses)."""
    expr = re.sub(r"(?<=\d)[uUlL]+\b", "", expr.strip())
    tree = ast.parse(expr, mode="eval")

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in known:
                raise HeaderError("unknown name %s in %r" % (node.id, expr))
            return known[node.id]
        if isinstance(node, ast.UnaryOp):
            v = ev(node.operand)
            if isinstance(node.op, ast.USub):
                return -v
            if isinstance(node.op, ast.UAdd):
                return v
            if isinstance(node.op, ast.Invert):
                return ~v
        if isinstance(node, ast.BinOp):
            a, b = ev(node.left), ev(node.right)
            ops = {ast.Add: lambda: a + b, ast.Sub: lambda: a - b, ast.Mult: lambda: a * b,
                   ast.FloorDiv: lambda: a // b, ast.Div: lambda: int(a / b),
                   ast.Mod: lambda: a % b, ast.LShift: lambda: a << b,
                   ast.RShift: lambda: a >> b, ast.BitOr: lambda: a | b,
                   ast.BitAnd: lambda: a & b, ast.BitXor: lambda: a ^ b}
            for op, fn in ops.items():
                if isinstance(node.op, op):
                    return fn()
        raise HeaderError("unsupported constant expression %r" % expr)
    return ev(tree)


class Parsed(object):
    """Everything read from the headers, in declaration order."""

    def __init__(self):
        self.constants = []      # (name, value, header)
        self.strings = []        # (name, value, header)
        self.opaque = []         # handle type names
        self.aliases = {}        # typedef name -> scalar C type
        self.callbacks = []      # (name, ret, [param types], [param names])
        self.functions = []      # (name, ret, [param types], [param names], header, experimental)


def split_decl(decl):
    """'const int64_t *shape' -> ('int64_t', 1, 'shape'); 'void' -> None."""
    decl = " ".join(decl.replace("*", " * ").split())
    if decl in ("void", ""):
        return None
    tokens = [t for t in decl.split(" ") if t not in ("const", "struct", "TSQ_API")]
    stars = tokens.count("*")
    words = [t for t in tokens if t != "*"]
    if len(words) == 2:
        return words[0], stars, words[1]
    if len(words) == 1:
        return words[0], stars, None
    raise HeaderError("cannot read declaration %r" % decl)


class Generator(object):
    """Parses the headers of an include directory and renders _ffi.py."""

    def __init__(self, include_dir):
        self.include_dir = include_dir
        self.p = Parsed()
        self.known = {}
        for name in header_order(include_dir):
            with open(os.path.join(include_dir, "tsq", name)) as f:
                self.parse(name, f.read())

    # ---- parsing -------------------------------------------------------

    def parse(self, header, text):
        text = strip_comments(text)
        text = re.sub(r"\\\n", " ", text)          # join continued lines
        experimental = self.experimental_spans(text)
        self.parse_defines(header, text)
        for m in re.finditer(r"typedef\s+struct\s+(\w+)\s+(\w+)\s*;", text):
            if m.group(1) != m.group(2):
                raise HeaderError("typedef struct %s %s: names differ" % m.groups())
            if m.group(2) not in self.p.opaque:
                self.p.opaque.append(m.group(2))
        for m in re.finditer(r"typedef\s+(\w+)\s+(\w+)\s*;", text):
            if m.group(1) in SCALARS:
                self.p.aliases[m.group(2)] = m.group(1)
        for m in re.finditer(r"typedef\s+([\w\s\*]+?)\(\s*\*\s*(\w+)\s*\)\s*\(([^)]*)\)\s*;", text):
            ret, name, params = m.group(1), m.group(2), m.group(3)
            types, names = self.parse_params(params)
            self.p.callbacks.append((name, self.parse_type(ret + " x"), types, names))
        for m in re.finditer(r"enum\s*\{([^}]*)\}\s*;", text):
            self.parse_enum(header, m.group(1))
        for m in re.finditer(r"TSQ_API\s+([^;(]+?)\b(tsq_\w+)\s*\(([^)]*)\)\s*;", text):
            ret, name, params = m.group(1), m.group(2), m.group(3)
            types, names = self.parse_params(params)
            exp = any(a <= m.start() < b for a, b in experimental)
            self.p.functions.append((name, self.parse_type(ret + " x"), types, names,
                                     header, exp))

    @staticmethod
    def experimental_spans(text):
        """Character ranges inside #ifdef TSQ_EXPERIMENTAL ... #endif."""
        spans, stack = [], []
        for m in re.finditer(r"^\s*#\s*(if|ifdef|ifndef|endif)\b([^\n]*)", text, re.M):
            kind, rest = m.group(1), m.group(2)
            if kind == "endif":
                if stack:
                    start, exp = stack.pop()
                    if exp:
                        spans.append((start, m.start()))
            else:
                stack.append((m.end(), "TSQ_EXPERIMENTAL" in rest and kind != "ifndef"))
        return spans

    def parse_defines(self, header, text):
        for m in re.finditer(r"^\s*#\s*define\s+(TSQ_\w+)[ \t]+([^\n]+)$", text, re.M):
            name, value = m.group(1), m.group(2).strip()
            if name == "TSQ_API" or name.endswith("_H"):
                continue
            sm = re.match(r'^"([^"\\]*)"$', value)
            if sm:
                self.p.strings.append((name, sm.group(1), header))
                continue
            try:
                v = eval_int(value, self.known)
            except (HeaderError, SyntaxError):
                continue            # not an integer constant (e.g. attributes)
            self.add_constant(name, v, header)

    def parse_enum(self, header, body):
        nxt = 0
        for item in body.split(","):
            item = item.strip()
            if not item:
                continue
            if "=" in item:
                name, expr = [s.strip() for s in item.split("=", 1)]
                value = eval_int(expr, self.known)
            else:
                name, value = item, nxt
            if not re.match(r"^[A-Z_][A-Z0-9_]*$", name):
                raise HeaderError("bad enum name %r" % name)
            self.add_constant(name, value, header)
            nxt = value + 1

    def add_constant(self, name, value, header):
        if name in self.known and self.known[name] != value:
            raise HeaderError("%s defined twice with different values" % name)
        if name not in self.known:
            self.known[name] = value
            self.p.constants.append((name, value, header))

    def parse_params(self, params):
        types, names = [], []
        params = params.strip()
        if params in ("", "void"):
            return types, names
        for i, param in enumerate(params.split(",")):
            d = split_decl(param)
            if d is None:
                raise HeaderError("void in a parameter list with others: %r" % params)
            types.append(self.ctype(d[0], d[1]))
            names.append(d[2] or "arg%d" % i)
        return types, names

    def parse_type(self, decl):
        d = split_decl(decl)
        return self.ctype(d[0], d[1])

    def ctype(self, base, stars):
        """The ctypes expression for `base` followed by `stars` asterisks."""
        base = self.p.aliases.get(base, base)
        if base in SCALARS:
            if base == "char" and stars >= 1:
                inner = "C.c_char_p"
                stars -= 1
            elif base == "void" and stars >= 1:
                inner = "C.c_void_p"
                stars -= 1
            else:
                inner = SCALARS[base]
        elif base in self.p.opaque:
            if stars < 1:
                raise HeaderError("struct %s passed by value" % base)
            inner = "C.POINTER(%s)" % base
            stars -= 1
        elif base in [c[0] for c in self.p.callbacks]:
            inner = base
        else:
            raise HeaderError("unknown type %s" % base)
        if inner == "None" and stars == 0:
            return inner
        for _ in range(stars):
            inner = "C.POINTER(%s)" % inner
        return inner

    # ---- rendering -----------------------------------------------------

    def render(self):
        p = self.p
        version = self.known.get("TSQ_VERSION_NUMBER")
        if version is None:
            raise HeaderError("TSQ_VERSION_NUMBER not found in the headers")
        out = []
        w = out.append
        w('"""ctypes declarations of libtsq\'s public API.')
        w("")
        w("GENERATED by bindings/python/gen_ffi.py from include/tsq/*.h: do not edit.")
        w("Regenerate with `python3 bindings/python/gen_ffi.py` after changing a header.")
        w('"""')
        w("# flake8: noqa")
        w("import ctypes as C")
        w("")
        w("# TSQ_VERSION_NUMBER of the headers this module was generated from.")
        w("HEADER_VERSION_NUMBER = %d" % version)
        for name, value, _ in p.strings:
            if name == "TSQ_VERSION_STRING":
                w("HEADER_VERSION_STRING = %r" % value)
        w("")
        w("# Opaque handle types (struct layouts are private to the library).")
        for name in p.opaque:
            w("class %s(C.Structure):" % name)
            w("    pass")
            w("")
        w("")
        w("# Callback types.")
        for name, ret, types, names in p.callbacks:
            w("%s = C.CFUNCTYPE(%s)" % (name, ", ".join([ret] + types)))
        w("")
        w("# Integer constants: enum values and #define NAME <int>, per header.")
        last = None
        for name, value, header in p.constants:
            if header != last:
                w("# %s" % header)
                last = header
            w("%s = %d" % (name, value))
        w("")
        w("CONSTANTS = {")
        for name, value, header in p.constants:
            w("    %r: %s," % (name, name))
        w("}")
        w("")
        w("# name: (restype, [argtypes], [parameter names], header, experimental)")
        w("FUNCTIONS = {")
        for name, ret, types, names, header, exp in p.functions:
            w("    %r: (" % name)
            w("        %s," % ret)
            w("        [%s]," % ", ".join(types))
            w("        %r," % (names,))
            w("        %r, %r)," % (header, exp))
        w("}")
        w("")
        w("")
        w("def bind(lib):")
        w('    """Sets restype and argtypes of every call found in the CDLL `lib`.')
        w("    Returns the names of the calls the library does not export.\"\"\"")
        w("    missing = []")
        w("    for name, (restype, argtypes, _names, _header, _exp) in FUNCTIONS.items():")
        w("        try:")
        w("            fn = getattr(lib, name)")
        w("        except AttributeError:")
        w("            missing.append(name)")
        w("            continue")
        w("        fn.restype = restype")
        w("        fn.argtypes = argtypes")
        w("    return missing")
        return "\n".join(out) + "\n"


def generate(include_dir=DEFAULT_INCLUDE):
    """Returns the text of _ffi.py for the headers under include_dir."""
    return Generator(include_dir).render()


def main(argv):
    include_dir = DEFAULT_INCLUDE
    output = DEFAULT_OUTPUT
    mode = "write"
    args = list(argv)
    while args:
        a = args.pop(0)
        if a == "--check":
            mode = "check"
        elif a == "--stdout":
            mode = "stdout"
        elif a == "--include":
            include_dir = args.pop(0)
        elif a == "--output":
            output = args.pop(0)
        else:
            sys.stderr.write(__doc__)
            return 2
    text = generate(include_dir)
    if mode == "stdout":
        sys.stdout.write(text)
        return 0
    if mode == "check":
        try:
            with open(output) as f:
                current = f.read()
        except IOError:
            current = None
        if current != text:
            sys.stderr.write("%s is out of date: run python3 %s\n" % (output, __file__))
            return 1
        return 0
    with open(output + ".tmp", "w") as f:
        f.write(text)
    os.replace(output + ".tmp", output)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
