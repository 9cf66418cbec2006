// expect: output_limit
// options: --output-limit 4K
// stdout: 0123456789
// message: Output limit of 4 KiB
//
// Writes digits forever, without a single newline. The output cap (4 KiB here)
// cuts it off exactly, then the program is stopped: output_limit.
#include <iostream>

int main() {
    for (;;) std::cout << "0123456789";
}
