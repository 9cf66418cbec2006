// expect: ok
// options: --stdin '1.5 2.5\n-1 7\n'
// stdout: 4 numbers, sum = 10
//
// Reading numbers from standard input (given with --stdin) until end-of-file.
#include <iostream>

int main() {
    double value, sum = 0;
    int count = 0;
    while (std::cin >> value) {
        sum += value;
        count++;
    }
    std::cout << count << " numbers, sum = " << sum << '\n';
    return 0;
}
