// expect: memory_limit
// options: --memory 64M
// stdout: allocated
// message: Memory limit of 64 MiB
//
// Allocates 1 MiB blocks (and touches them, so they are really used) until
// malloc returns NULL under the memory limit (here 64 MiB, default 512 MiB).
// The program notices, reports how far it got and exits with status 1; the
// engine sees the failure next to a peak close to the limit: memory_limit.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
    const size_t block = 1 << 20;
    size_t mib = 0;
    for (;;) {
        char *p = malloc(block);
        if (!p) break;
        memset(p, 1, block);  // touch every page so it counts as used memory
        mib++;
    }
    printf("allocated %zu MiB before malloc failed\n", mib);
    return 1;
}
