// expect: memory_limit
// options: --memory 64M
// message: Memory limit of 64 MiB
//
// Keeps growing a vector of 1 MiB strings. When the memory limit (64 MiB here)
// is reached, `new` throws std::bad_alloc; nobody catches it, so the program
// aborts - and the engine reports memory_limit rather than a plain crash.
#include <string>
#include <vector>

int main() {
    std::vector<std::string> blocks;
    for (;;) blocks.emplace_back(1 << 20, 'x');  // 1 MiB, written, so really in use
}
