#!/bin/sh
# The Python package installs like one, offline:
# 1. `pip install ./bindings/python` in a venv with the system site packages
#    (python3 -m venv --system-site-packages), with no index at all: the
#    build backend is in the tree (bindings/python/build_backend), so pip
#    downloads nothing; the venv's copy imports, finds the library through
#    TSQ_LIBRARY and loads tsq.torch lazily; pip uninstall removes it.
# 2. `make install DESTDIR=...` puts the package into
#    $(PREFIX)/lib/python3.X/dist-packages/tsq with _install.py naming LIBDIR,
#    and that copy loads the staged library.
# Environment (tests/run.sh): BUILD, BLAS. Needs python3-venv (make deps).
BUILD=${BUILD:-build/openblas}
fail() { echo "check_python_package: $*"; exit 1; }
py=/usr/bin/python3
[ -x $py ] || fail "$py not found (make deps)"
$py -c 'import venv, ensurepip' 2>/dev/null || fail "python3-venv is not installed (make deps)"
case "$BUILD" in /*) lib="$BUILD/libtsq.so" ;; *) lib="$PWD/$BUILD/libtsq.so" ;; esac
[ -f "$lib" ] || fail "$lib not found (build the library first)"
tmp=$(mktemp -d) || fail "mktemp failed"
trap 'rm -rf "$tmp"' EXIT

$py -m venv --system-site-packages "$tmp/venv" || fail "python3 -m venv failed"
PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 timeout 120 "$tmp/venv/bin/pip" install -q \
    ./bindings/python >"$tmp/pip.log" 2>&1 || { cat "$tmp/pip.log"; fail "pip install failed"; }
(cd "$tmp" && TSQ_LIBRARY="$lib" "$tmp/venv/bin/python" - "$tmp/venv" <<'PY') || fail "the venv's copy does not work"
import sys
import tsq
assert tsq.__file__.startswith(sys.argv[1]), tsq.__file__       # the installed copy
assert "torch" not in sys.modules                                 # import tsq needs no torch
with tsq.Context() as ctx:
    q = tsq.Quantizer(ctx, bits=2).set_channel(0, 0.5, 1.0)
    assert q.encode([0.2, 0.7, 9.0]).tolist() == [0, 1, 3]
try:
    import torch  # noqa: F401
except ImportError:
    pass
else:
    import tsq.torch
    assert callable(tsq.torch.prepare)
print("venv: tsq %s from %s" % (tsq.__version__, tsq.__file__))
PY
PIP_NO_INDEX=1 "$tmp/venv/bin/pip" uninstall -y -q tsq >/dev/null 2>&1 || fail "pip uninstall failed"
[ ! -d "$tmp/venv/lib/python3."*/site-packages/tsq ] || fail "pip uninstall left the package"

make --no-print-directory -s install BLAS="${BLAS:-openblas}" PREFIX=/opt/tsq-test DESTDIR="$tmp/stage" \
    >/dev/null || fail "make install failed"
site=$(ls -d "$tmp/stage/opt/tsq-test/lib/python3."*/dist-packages 2>/dev/null)
[ -f "$site/tsq/__init__.py" ] || fail "make install did not install the Python package"
[ -f "$site/tsq/torch/__init__.py" ] || fail "make install did not install tsq.torch"
grep -q '^LIBDIR = "/opt/tsq-test/lib"$' "$site/tsq/_install.py" || fail "_install.py lacks LIBDIR"
(cd "$tmp" && PYTHONPATH="$site" TSQ_LIBRARY="$tmp/stage/opt/tsq-test/lib/libtsq.so.0" $py -c '
import tsq, sys
assert tsq.__file__.startswith(sys.argv[1]) and tsq.lib.path.endswith("libtsq.so.0")
print("make install: tsq %s from %s" % (tsq.__version__, tsq.__file__))' "$site") ||
    fail "the installed copy does not load"
exit 0
