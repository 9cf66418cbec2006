// expect: memory_limit
// options: --memory 64M
// message: Memory limit of 64 MiB
//
// Keeps growing a vector of 1 MiB strings until the memory limit (64 MiB here)
// is reached. With a memory cgroup (as root) the kernel stops the run there;
// without one `new` throws std::bad_alloc, nobody catches it and the program
// aborts. Either way the engine reports memory_limit, not a plain crash.
#include <string>
#include <vector>

int main() {
    std::vector<std::string> blocks;
    for (;;) blocks.emplace_back(1 << 20, 'x');  // 1 MiB, written, so really in use
}
