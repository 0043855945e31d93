"""Tensors: round trips, zero-copy in both directions, errors."""

import array
import ctypes
import gc
import unittest

from tsqtest import TestCase, needs_numpy, np, tsq


@needs_numpy
class NumpyTensors(TestCase):

    def test_round_trips(self):
        rng = np.random.RandomState(1)
        cases = [rng.randn(7).astype(np.float32),
                 rng.randn(2, 3, 4, 5).astype(np.float32),
                 rng.randint(0, 256, size=(3, 4)).astype(np.uint8),
                 rng.randint(-128, 128, size=(2, 2, 2)).astype(np.int8)]
        for a in cases:
            t = tsq.Tensor(self.ctx, a)
            self.assertFalse(t.copied)
            self.assertEqual(t.shape, a.shape)
            self.assertEqual(t.ndim, a.ndim)
            self.assertEqual(t.size, a.size)
            self.assertEqual(t.nbytes, a.nbytes)
            self.assertEqual(t.dtype, a.dtype.name)
            self.assertEqual(t.dim(0), a.shape[0])
            self.assertEqual(len(t), a.shape[0])
            b = t.numpy(copy=True)
            self.assertEqual(b.dtype, a.dtype)
            np.testing.assert_array_equal(b, a)
            self.assertEqual(t.tolist(), a.tolist())
            self.assertEqual(t.tobytes(), a.tobytes())
            np.testing.assert_array_equal(np.asarray(t), a)
            t.close()

    def test_zero_copy_numpy_to_library(self):
        a = np.zeros((4, 5), np.float32)
        t = tsq.Tensor(self.ctx, a)
        self.assertEqual(t.data_ptr, a.ctypes.data)
        self.assertIs(t.base, a)
        a[1, 2] = np.nan
        a[3, 4] = np.inf
        self.assertEqual(t.count_nonfinite(), 2)         # read by the library
        raw = ctypes.c_void_p()
        tsq.lib.tsq_tensor_data(t.handle, ctypes.byref(raw))
        self.assertEqual(raw.value, a.ctypes.data)

    def test_zero_copy_library_to_numpy(self):
        a = np.zeros(6, np.uint8)
        t = tsq.Tensor(self.ctx, a)
        t.fill(7)                                       # written by the library
        self.assertEqual(a.tolist(), [7] * 6)
        # and the other way: a library-owned tensor seen through numpy
        u = tsq.Tensor.zeros(self.ctx, (2, 3), "int8")
        view = u.numpy()
        self.assertFalse(view.flags.owndata)
        u.fill(-3)
        self.assertEqual(view.tolist(), [[-3] * 3] * 2)
        view[0, 0] = 5
        self.assertEqual(u.tolist()[0][0], 5)
        self.assertEqual(view.ctypes.data, u.data_ptr)

    def test_wrapped_array_is_locked_while_used(self):
        a = np.zeros(8, np.float32)
        t = tsq.Tensor(self.ctx, a)
        with self.assertRaises((ValueError, BufferError)):
            a.resize(16)                        # the tensor holds it
        t.close()
        a.resize(16)
        self.assertEqual(a.size, 16)

    def test_in_place_never_copies(self):
        q = tsq.Quantizer(self.ctx, 2).set_channel(0, 0.5, 1.0)
        x64 = np.linspace(0, 3, 7)
        with self.assertRaises(ValueError):
            q.forward(x64, out=x64)             # a float32 copy would lose the result
        x = x64.astype(np.float32)
        g = np.ones(7, np.float32)
        self.assertIs(q.backward(x, g, out=g), g)
        self.assertEqual(g.tolist(), [0.0] + [1.0] * 5 + [0.0])

    def test_array_like_objects_are_used_in_place(self):
        class Exporter(object):            # e.g. a framework's CPU tensor
            def __init__(self, arr):
                self.arr = arr

            @property
            def __array_interface__(self):
                return self.arr.__array_interface__
        a = np.zeros((2, 3), np.float32)
        t = tsq.Tensor(self.ctx, Exporter(a))
        self.assertFalse(t.copied)
        t.fill(2.0)
        self.assertEqual(float(a.sum()), 12.0)

    def test_view_keeps_the_tensor_alive(self):
        u = tsq.Tensor.zeros(self.ctx, (1000,))
        u.fill(2.5)
        view = u.numpy()
        del u
        gc.collect()
        self.assertEqual(float(view.sum()), 2500.0)
        mv = tsq.Tensor.zeros(self.ctx, (3,), "uint8").fill(9).memoryview()
        gc.collect()
        self.assertEqual(mv.tolist(), [9, 9, 9])

    def test_tensor_keeps_the_array_alive(self):
        t = tsq.Tensor(self.ctx, np.full(10, 3.0, np.float32))
        gc.collect()
        self.assertEqual(t.tolist(), [3.0] * 10)

    def test_conversions_are_copies_and_say_so(self):
        a = np.arange(12, dtype=np.float64).reshape(3, 4)
        t = tsq.Tensor(self.ctx, a)
        self.assertTrue(t.copied)
        self.assertEqual(t.dtype, "float32")
        np.testing.assert_array_equal(t.numpy(), a.astype(np.float32))
        b = np.arange(12, dtype=np.float32).reshape(3, 4).T      # not C-contiguous
        t2 = tsq.Tensor(self.ctx, b)
        self.assertTrue(t2.copied)
        np.testing.assert_array_equal(t2.numpy(), b)
        t3 = tsq.Tensor(self.ctx, np.arange(4, dtype=np.int64), dtype="uint8")
        self.assertTrue(t3.copied)
        self.assertEqual(t3.tolist(), [0, 1, 2, 3])
        with self.assertRaises(TypeError):
            tsq.Tensor(self.ctx, np.arange(4, dtype=np.int64))
        ro = np.ones(3, np.float32)
        ro.flags.writeable = False
        t4 = tsq.Tensor(self.ctx, ro)                  # inputs may be read-only
        self.assertFalse(t4.copied)
        self.assertTrue(t4.readonly)

    def test_outputs_are_never_copied(self):
        q = tsq.Quantizer(self.ctx, 2).set_channel(0, 0.5, 1.0)
        x = np.linspace(-1, 4, 20).astype(np.float32)
        out = np.zeros(20, np.uint8)
        self.assertIs(q.encode(x, out=out), out)
        self.assertEqual(out.tolist(), q.encode(x).tolist())
        for bad in (np.zeros(20, np.int8), np.zeros((20, 2), np.uint8)[:, 0]):
            with self.assertRaises(ValueError):
                q.encode(x, out=bad)
        ro = np.zeros(20, np.uint8)
        ro.flags.writeable = False
        with self.assertRaises(ValueError):
            q.encode(x, out=ro)

    def test_reshape_and_fill(self):
        a = np.zeros(12, np.float32)
        t = tsq.Tensor(self.ctx, a)
        t.reshape(3, 4)
        self.assertEqual(t.shape, (3, 4))
        self.assertEqual(t.numpy().shape, (3, 4))
        t.reshape((2, 2, 3))
        self.assertEqual(t.shape, (2, 2, 3))
        t.fill(1.5)
        self.assertEqual(float(a.sum()), 18.0)

    def test_copy_in_and_out(self):
        t = tsq.Tensor.zeros(self.ctx, (2, 2))
        t.copy_in(np.array([[1, 2], [3, 4]], np.float32))
        self.assertEqual(t.tolist(), [[1, 2], [3, 4]])
        dst = np.zeros(4, np.float32)
        t.copy_out(dst)
        self.assertEqual(dst.tolist(), [1, 2, 3, 4])
        with self.assertRaisesTsq("TSQ_ERR_TOO_SMALL", "copy_out"):
            t.copy_out(bytearray(3))
        with self.assertRaisesTsq("TSQ_ERR_TOO_SMALL", "copy_in"):
            t.copy_in(np.zeros(3, np.float32))
        self.assertEqual(t.tolist(), [[1, 2], [3, 4]])     # untouched


class BufferTensors(TestCase):
    """Without numpy: array.array, bytearray, memoryview, lists."""

    def test_array_array_is_wrapped(self):
        a = array.array("f", [1.0, 2.0, 3.0])
        t = tsq.Tensor(self.ctx, a)
        self.assertFalse(t.copied)
        self.assertEqual(t.dtype, "float32")
        t.fill(4.0)
        self.assertEqual(a.tolist(), [4.0, 4.0, 4.0])
        a[1] = float("nan")
        self.assertEqual(t.count_nonfinite(), 1)
        with self.assertRaises(BufferError):
            a.append(1.0)                       # the export locks the size
        t.close()
        a.append(1.0)

    def test_bytearray_and_memoryview(self):
        b = bytearray(range(6))
        t = tsq.Tensor(self.ctx, b)
        self.assertEqual((t.dtype, t.shape, t.copied), ("uint8", (6,), False))
        t.fill(1)
        self.assertEqual(bytes(b), b"\x01" * 6)
        mv = memoryview(bytearray(6)).cast("b", (2, 3))
        t2 = tsq.Tensor(self.ctx, mv)
        self.assertEqual((t2.dtype, t2.shape), ("int8", (2, 3)))
        t2.fill(-1)
        self.assertEqual(mv.tolist(), [[-1] * 3] * 2)

    def test_read_only_buffers_are_copied(self):
        t = tsq.Tensor(self.ctx, b"\x01\x02\x03")
        self.assertTrue(t.copied)
        self.assertEqual(t.tolist(), [1, 2, 3])

    def test_lists(self):
        t = tsq.Tensor(self.ctx, [[1.5, 2.0], [3.0, -4.0]])
        self.assertTrue(t.copied)
        self.assertEqual((t.shape, t.dtype), ((2, 2), "float32"))
        self.assertEqual(t.tolist(), [[1.5, 2.0], [3.0, -4.0]])
        u = tsq.Tensor(self.ctx, [0, 255, 7], dtype="uint8")
        self.assertEqual(u.tolist(), [0, 255, 7])
        i = tsq.Tensor(self.ctx, [[-128], [127]], dtype="int8")
        self.assertEqual(i.tolist(), [[-128], [127]])
        with self.assertRaises(ValueError):
            tsq.Tensor(self.ctx, [256], dtype="uint8")
        with self.assertRaises(ValueError):
            tsq.Tensor(self.ctx, [1.5], dtype="int8")
        with self.assertRaises(ValueError):
            tsq.Tensor(self.ctx, [[1.0, 2.0], [3.0]])

    def test_memoryview_out(self):
        t = tsq.Tensor(self.ctx, [[1, 2, 3], [4, 5, 6]], dtype="uint8")
        mv = t.memoryview()
        self.assertEqual((mv.format, mv.shape), ("B", (2, 3)))
        mv[1, 1] = 50
        self.assertEqual(t.tolist()[1][1], 50)

    def test_format_mismatch(self):
        with self.assertRaises(TypeError):
            tsq.Tensor(self.ctx, array.array("d", [1.0]))
        with self.assertRaises(TypeError):
            tsq.Tensor(self.ctx, bytearray(4), dtype="float32")
        with self.assertRaises(TypeError):
            tsq.Tensor(self.ctx, object())


class TensorErrors(TestCase):
    """Every failing tensor call raises TsqError with the library's message."""

    def test_shapes(self):
        with self.assertRaisesTsq("TSQ_ERR_SHAPE", "tensor_create", "ndim 5"):
            tsq.Tensor.zeros(self.ctx, (1, 1, 1, 1, 1))
        with self.assertRaisesTsq("TSQ_ERR_SHAPE", "dimension 0 is 0"):
            tsq.Tensor.zeros(self.ctx, (0, 3))
        with self.assertRaisesTsq("TSQ_ERR_OVERFLOW", "tensor_create"):
            tsq.Tensor.zeros(self.ctx, (2 ** 40, 2 ** 40))
        t = tsq.Tensor.zeros(self.ctx, (2, 3))
        with self.assertRaisesTsq("TSQ_ERR_SHAPE", "reshape"):
            t.reshape(4, 2)
        self.assertEqual(t.shape, (2, 3))
        with self.assertRaisesTsq("TSQ_ERR_INVALID", "axis"):
            t.dim(2)

    @needs_numpy
    def test_wrap_errors(self):
        with self.assertRaisesTsq("TSQ_ERR_SHAPE", "tensor_wrap", "ndim 5"):
            tsq.Tensor(self.ctx, np.zeros((1, 1, 1, 1, 2), np.float32))
        with self.assertRaisesTsq("TSQ_ERR_SHAPE", "tensor_wrap"):
            tsq.Tensor(self.ctx, np.zeros((2, 0), np.float32))

    def test_fill_range(self):
        t = tsq.Tensor.zeros(self.ctx, (2,), "uint8")
        with self.assertRaisesTsq("TSQ_ERR_INVALID", "tensor_fill"):
            t.fill(300)
        f = tsq.Tensor.zeros(self.ctx, (2,))
        with self.assertRaisesTsq("TSQ_ERR_NOT_FINITE", "tensor_fill"):
            f.fill(float("nan"))

    def test_dtype(self):
        with self.assertRaises(ValueError):
            tsq.Tensor.zeros(self.ctx, (2,), 9)
        with self.assertRaises(TypeError):
            tsq.Tensor.zeros(self.ctx, (2,), "float64")
        raw = ctypes.POINTER(tsq.ffi.tsq_tensor)()
        shape = (ctypes.c_int64 * 1)(2)
        st = tsq.lib.tsq_tensor_create(self.ctx.handle, 9, 1, shape, ctypes.byref(raw))
        self.assertEqual(tsq.status_name(st), "TSQ_ERR_DTYPE")
        self.assertIn("unknown dtype 9", tsq.lib.tsq_context_errmsg(self.ctx.handle).decode())

    def test_closed(self):
        t = tsq.Tensor.zeros(self.ctx, (2,))
        with t:
            pass
        self.assertTrue(t.closed)
        with self.assertRaises(ValueError):
            t.shape
        with self.assertRaises(ValueError):
            with t:
                pass
        self.assertIn("closed", repr(t))


if __name__ == "__main__":
    unittest.main()
