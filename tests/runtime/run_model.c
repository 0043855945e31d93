/* For tests/check_runtime.sh, linked against the inference-only archive
 * libtsq_runtime.a alone (core, kernels, runtime; no nn, quant or io):
 * loads DIR/model.tsq with tsq_plan_load, runs it on DIR/input.f32 and
 * writes DIR/out.f32. Usage: run_model DIR BATCH INPUT_SIZE OUTPUT_SIZE */
#include <stdio.h>
#include <stdlib.h>
#include <tsq.h>

static void *read_file(const char *dir, const char *name, long *size)
{
    char path[1024];
    FILE *f;
    void *p;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    f = fopen(path, "rb");
    if (!f || fseek(f, 0, SEEK_END) != 0 || (*size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET))
        return NULL;
    p = malloc((size_t)*size + 1);
    if (p && fread(p, 1, (size_t)*size, f) != (size_t)*size) {
        free(p);
        p = NULL;
    }
    fclose(f);
    return p;
}

int main(int argc, char **argv)
{
    tsq_context *ctx = NULL;
    tsq_plan *plan = NULL;
    tsq_tensor *x = NULL, *y = NULL;
    int64_t xs[2], ys[2];
    long msize = 0, isize = 0;
    void *model, *input, *out = NULL;
    char path[1024];
    FILE *f;
    if (argc != 5)
        return 2;
    xs[0] = ys[0] = atol(argv[2]);
    xs[1] = atol(argv[3]);
    ys[1] = atol(argv[4]);
    model = read_file(argv[1], "model.tsq", &msize);
    input = read_file(argv[1], "input.f32", &isize);
    if (!model || !input || isize != (long)(sizeof(float) * (size_t)(xs[0] * xs[1])))
        return 3;
    if (tsq_context_create(&ctx) != TSQ_OK ||
        tsq_plan_load(ctx, model, (uint64_t)msize, &plan) != TSQ_OK ||
        tsq_tensor_wrap(ctx, TSQ_DTYPE_F32, 2, xs, input, (uint64_t)isize, &x) != TSQ_OK ||
        tsq_tensor_create(ctx, TSQ_DTYPE_F32, 2, ys, &y) != TSQ_OK ||
        tsq_plan_run(ctx, plan, x, y, NULL, 0) != TSQ_OK ||
        tsq_tensor_data(y, &out) != TSQ_OK) {
        fprintf(stderr, "run_model: %s\n", ctx ? tsq_context_errmsg(ctx) : "no context");
        return 1;
    }
    snprintf(path, sizeof path, "%s/out.f32", argv[1]);
    f = fopen(path, "wb");
    if (!f || fwrite(out, sizeof(float), (size_t)(ys[0] * ys[1]), f) != (size_t)(ys[0] * ys[1]) ||
        fclose(f) != 0)
        return 4;
    tsq_tensor_destroy(x);
    tsq_tensor_destroy(y);
    tsq_plan_destroy(plan);
    tsq_context_destroy(ctx);
    free(model);
    free(input);
    return 0;
}
