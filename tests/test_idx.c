/* The demo's IDX reader: good files, truncated files, wrong magic, hostile
 * headers. It must report, never crash or over-allocate. */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "../examples/fmnist/idx.h"

#define TINY "tests/data/fmnist-tiny/"

START_TEST(test_tiny_files)
{
    idx_array img, lab;
    char err[256];
    int64_t i;
    ck_assert_msg(idx_load(TINY "train-images-idx3-ubyte.gz", 3, &img, err, sizeof err) == 0,
                  "%s", err);
    ck_assert_int_eq(img.count, 1000);
    ck_assert_int_eq(img.dims[1], 28);
    ck_assert_int_eq(img.dims[2], 28);
    ck_assert_int_eq(img.item_size, 784);
    ck_assert_msg(idx_load(TINY "train-labels-idx1-ubyte.gz", 1, &lab, err, sizeof err) == 0,
                  "%s", err);
    ck_assert_int_eq(lab.count, 1000);
    for (i = 0; i < lab.count; i++)
        ck_assert_int_lt(lab.data[i], 10);
    /* Fashion-MNIST's first training label is 9 (ankle boot). */
    ck_assert_int_eq(lab.data[0], 9);
    idx_free(&img);
    idx_free(&lab);
}
END_TEST

static void make_header(uint8_t *b, int ndim, const uint32_t *dims)
{
    int i;
    b[0] = 0; b[1] = 0; b[2] = 8; b[3] = (uint8_t)ndim;
    for (i = 0; i < ndim; i++) {
        b[4 + 4 * i] = (uint8_t)(dims[i] >> 24);
        b[5 + 4 * i] = (uint8_t)(dims[i] >> 16);
        b[6 + 4 * i] = (uint8_t)(dims[i] >> 8);
        b[7 + 4 * i] = (uint8_t)dims[i];
    }
}

START_TEST(test_parse_errors)
{
    uint8_t b[64 + 24];
    const uint32_t dims[3] = {2, 3, 4};
    idx_array a;
    char err[256];
    size_t n;
    memset(b, 7, sizeof b);
    make_header(b, 3, dims);
    ck_assert_int_eq(idx_parse(b, 16 + 24, 3, &a, err, sizeof err), 0);
    ck_assert_int_eq(a.count, 2);
    ck_assert_int_eq(a.item_size, 12);
    ck_assert_int_eq(a.data[23], 7);
    idx_free(&a);
    /* Every truncation of a valid buffer is refused. */
    for (n = 0; n < 16 + 24; n++) {
        ck_assert_int_eq(idx_parse(b, n, 3, &a, err, sizeof err), -1);
        ck_assert_ptr_null(a.data);
    }
    ck_assert_int_eq(idx_parse(b, 16 + 23, 3, &a, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "truncated"));
    ck_assert_int_eq(idx_parse(b, 16 + 25, 3, &a, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "trailing"));
    /* Wrong magic, wrong type, wrong rank. */
    b[0] = 0x1f;
    ck_assert_int_eq(idx_parse(b, 16 + 24, 3, &a, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "magic"));
    b[0] = 0;
    b[2] = 0x0D; /* float */
    ck_assert_int_eq(idx_parse(b, 16 + 24, 3, &a, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "type"));
    b[2] = 8;
    ck_assert_int_eq(idx_parse(b, 16 + 24, 1, &a, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "expected 1"));
}
END_TEST

START_TEST(test_hostile_sizes)
{
    uint8_t b[16];
    const uint32_t huge[3] = {0xffffffffu, 0xffffffffu, 0xffffffffu};
    const uint32_t big[3] = {100000000u, 100000u, 1000u};
    const uint32_t zero[3] = {0, 28, 28};
    idx_array a;
    char err[256];
    make_header(b, 3, huge);
    ck_assert_int_eq(idx_parse(b, sizeof b, 3, &a, err, sizeof err), -1);
    make_header(b, 3, big);
    ck_assert_int_eq(idx_parse(b, sizeof b, 3, &a, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "larger than"));
    make_header(b, 3, zero);
    ck_assert_int_eq(idx_parse(b, sizeof b, 3, &a, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "dimension 0 is 0"));
}
END_TEST

START_TEST(test_truncated_gzip_and_missing)
{
    char path[] = "/tmp/tsq-idx-XXXXXX";
    idx_array a;
    char err[256];
    FILE *src = fopen(TINY "t10k-labels-idx1-ubyte.gz", "rb");
    uint8_t buf[4096];
    size_t n;
    int fd;
    ck_assert_ptr_nonnull(src);
    n = fread(buf, 1, sizeof buf, src);
    fclose(src);
    ck_assert_int_gt((int)n, 40);
    fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq((int)write(fd, buf, n / 2), (int)(n / 2)); /* cut the gzip stream */
    close(fd);
    ck_assert_int_eq(idx_load(path, 1, &a, err, sizeof err), -1);
    ck_assert_ptr_null(a.data);
    unlink(path);
    ck_assert_int_eq(idx_load("/nonexistent/file.gz", 1, &a, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "cannot open"));
}
END_TEST

static Suite *idx_suite(void)
{
    Suite *s = suite_create("idx");
    TCase *tc = tcase_create("idx");
    tcase_add_test(tc, test_tiny_files);
    tcase_add_test(tc, test_parse_errors);
    tcase_add_test(tc, test_hostile_sizes);
    tcase_add_test(tc, test_truncated_gzip_and_missing);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return th_run(idx_suite()); }
