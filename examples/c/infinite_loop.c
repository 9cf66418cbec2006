// expect: time_limit
// options: --cpu-time 1
// message: CPU time limit
//
// A busy infinite loop uses CPU until the CPU-time limit (here 1 s, default 10 s)
// stops it: the status is time_limit.
int main(void) {
    volatile unsigned long spins = 0;  // volatile: the loop cannot be optimised away
    for (;;) spins++;
}
