// expect: ok
// options: --ldflags -lm
// stdout: hypot(3, 4) = 5.000000
// stdout: cbrt(27) = 3.000000
//
// The math library is a separate library in C: link it with `--ldflags -lm`.
// The inputs are `volatile` so the compiler cannot fold the calls away at
// compile time - the program really calls into libm, and without -lm it
// fails to link (compile_error: "undefined reference to `cbrt'").
#include <math.h>
#include <stdio.h>

int main(void) {
    volatile double three = 3.0, four = 4.0, cube = 27.0, angle = 1.0;
    printf("hypot(3, 4) = %f\n", hypot(three, four));
    printf("cbrt(27) = %f\n", cbrt(cube));
    printf("sin(1)^2 + cos(1)^2 = %f\n", pow(sin(angle), 2) + pow(cos(angle), 2));
    printf("pi = %.10f\n", 4 * atan(1.0));
    return 0;
}
