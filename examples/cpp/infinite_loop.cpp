// expect: time_limit
// options: --cpu-time 1
// message: CPU time limit
//
// Spins forever; the CPU-time limit (1 s here) ends it: time_limit.
#include <atomic>

int main() {
    std::atomic<unsigned long> spins{0};  // atomic: the loop has an effect and cannot be removed
    for (;;) spins.fetch_add(1, std::memory_order_relaxed);
}
