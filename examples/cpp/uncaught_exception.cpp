// expect: signaled
// stdout: opening the file
// message: SIGABRT
//
// An exception nobody catches ends the program through std::terminate, which
// calls abort(): the status is signaled (SIGABRT), and the C++ runtime prints
// the exception's what() on stderr.
#include <iostream>
#include <stdexcept>

static void open_config() {
    throw std::runtime_error("config.txt: no such file");
}

int main() {
    std::cout << "opening the file" << std::endl;
    open_config();
    std::cout << "not reached\n";
}
