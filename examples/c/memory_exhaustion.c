// expect: memory_limit
// options: --memory 64M
// stdout: allocated
// message: Memory limit of 64 MiB
//
// Allocates 1 MiB blocks (and touches them, so they are really used) until
// memory runs out under the limit (here 64 MiB, default 512 MiB), saying how
// far it got every 16 MiB. Where the run has a memory cgroup (as root) the
// kernel stops it at the run's limit; elsewhere malloc returns NULL under the
// address-space limit and the program exits with status 1. Either way the
// engine names the memory limit.
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
        if (++mib % 16 == 0) printf("allocated %zu MiB\n", mib);
    }
    printf("allocated %zu MiB before malloc failed\n", mib);
    return 1;
}
