#!/bin/sh
# The public header is plain C11 and compiles as C++11, and the C header
# compiles with -pedantic (no compiler extensions).
set -e
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/t.cpp" <<'CPP'
#include <tsq.h>
#include <cstdio>
int main() {
    tsq_context *ctx = nullptr;
    if (tsq_context_create(&ctx) != TSQ_OK) return 1;
    std::printf("%s\n", tsq_version_string());
    tsq_context_destroy(ctx);
    return tsq_version_number() == TSQ_VERSION_NUMBER ? 0 : 1;
}
CPP
g++ -std=c++11 -Wall -Wextra -Werror -pedantic -Iinclude "$tmp/t.cpp" -L"$BUILD" -ltsq \
    -Wl,-rpath,"$PWD/$BUILD" -o "$tmp/t"
"$tmp/t" >/dev/null
printf '#include <tsq.h>\nint main(void){return 0;}\n' > "$tmp/c.c"
gcc -std=c11 -pedantic-errors -Wall -Wextra -Werror -Iinclude -c "$tmp/c.c" -o "$tmp/c.o"
clang -std=c11 -pedantic-errors -Wall -Wextra -Werror -Iinclude -c "$tmp/c.c" -o "$tmp/c.o" 2>/dev/null \
    || ! command -v clang >/dev/null
