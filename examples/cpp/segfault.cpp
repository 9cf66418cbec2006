// expect: signaled
// stdout: reading past the end
// message: SIGSEGV
//
// Undefined behaviour that crashes: a dangling/NULL pointer read. The status
// is signaled (SIGSEGV).
#include <iostream>

struct Node {
    int value;
    Node *next;
};

int main() {
    Node last{2, nullptr};
    Node first{1, &last};
    Node *volatile p = &first;  // volatile: make the compiler follow the pointers at run time
    std::cout << "reading past the end" << std::endl;
    int sum = 0;
    for (int i = 0; i < 3; i++) {  // one step too many: the third node is nullptr
        sum += p->value;
        p = p->next;
    }
    std::cout << "sum = " << sum << '\n';
}
