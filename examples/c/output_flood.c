// expect: output_limit
// options: --output-limit 4K
// stdout: line 1:
// message: Output limit of 4 KiB
//
// Prints forever. Output (stdout + stderr together) is capped - here at 4 KiB,
// by default 1 MiB: exactly that much is delivered, then a marker, and the
// program is stopped. The status is output_limit.
#include <stdio.h>

int main(void) {
    for (unsigned long i = 1;; i++) printf("line %lu: all work and no play\n", i);
}
