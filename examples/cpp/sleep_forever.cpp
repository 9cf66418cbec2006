// expect: wall_timeout
// options: --timeout 1
// stdout: waiting
// message: Wall-clock limit
//
// Sleeps without using CPU: only the wall-clock limit (1 s here) ends it.
#include <chrono>
#include <iostream>
#include <thread>

int main() {
    std::cout << "waiting" << std::endl;
    for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
}
