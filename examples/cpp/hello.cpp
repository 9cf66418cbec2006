// expect: ok
// stdout: Hello from C++20!
//
// The smallest C++ program, with iostream.
#include <iostream>

int main() {
    std::cout << "Hello from C++" << __cplusplus / 100 % 100 << "!\n";
    return 0;
}
