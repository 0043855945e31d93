/* The smallest libtsq program: check the version, print what runs here,
 * and make a tensor. Build: cc minimal.c $(pkg-config --cflags --libs tsq) */
#include <stdio.h>
#include <tsq.h>

int main(void)
{
    tsq_context *ctx = NULL;
    tsq_tensor *t = NULL;
    const char *info = NULL;
    const int64_t shape[2] = {2, 3};
    int64_t n = 0;
    tsq_status st;

    /* The major versions of header and library must match. */
    if (tsq_version_number() / 10000 != TSQ_VERSION_NUMBER / 10000) {
        fprintf(stderr, "libtsq %s does not match header %s\n", tsq_version_string(),
                TSQ_VERSION_STRING);
        return 1;
    }
    st = tsq_context_create(&ctx);
    if (st != TSQ_OK) {
        fprintf(stderr, "tsq_context_create: %s\n", tsq_status_string(st));
        return 1;
    }
    tsq_context_info(ctx, TSQ_INFO_SUMMARY, &info);
    printf("%s\n", info);

    st = tsq_tensor_create(ctx, TSQ_DTYPE_F32, 2, shape, &t);
    if (st == TSQ_OK)
        st = tsq_tensor_numel(t, &n);
    if (st != TSQ_OK)
        fprintf(stderr, "error: %s\n", tsq_context_errmsg(ctx));
    else
        printf("tensor of %lld elements\n", (long long)n);

    tsq_tensor_destroy(t);
    tsq_context_destroy(ctx);
    return st == TSQ_OK ? 0 : 1;
}
