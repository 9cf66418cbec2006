// expect: ok
// stdout: 100000 squares, last = 9999800001
//
// Dynamic memory: a growable array with malloc/realloc (doubling the capacity),
// then free. Everything stays far below the default 512 MiB memory limit.
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    size_t len = 0, cap = 4;
    long long *items = malloc(cap * sizeof *items);
    if (!items) return 1;
    for (long long i = 0; i < 100000; i++) {
        if (len == cap) {
            cap *= 2;
            long long *bigger = realloc(items, cap * sizeof *items);
            if (!bigger) { free(items); return 1; }
            items = bigger;
        }
        items[len++] = i * i;
    }
    printf("%zu squares, last = %lld\n", len, items[len - 1]);
    printf("capacity grew to %zu\n", cap);
    free(items);
    return 0;
}
