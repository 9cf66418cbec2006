// expect: ok
// stdout: primes below 3000000: 216816
//
// CPU-heavy but well within the limits: count primes by trial division
// (deliberately naive, about 0.3 s of CPU), far below the default 10 s CPU limit.
#include <stdio.h>

static int is_prime(unsigned n) {
    if (n < 2) return 0;
    if (n % 2 == 0) return n == 2;
    for (unsigned d = 3; d * d <= n; d += 2)
        if (n % d == 0) return 0;
    return 1;
}

int main(void) {
    const unsigned limit = 3000000;
    unsigned count = 0;
    for (unsigned n = 0; n < limit; n++) count += is_prime(n);
    printf("primes below %u: %u\n", limit, count);
    return 0;
}
