// expect: compile_error
// message: error
//
// A type error the compiler catches: the status is compile_error and the
// program never runs.
#include <string>
#include <vector>

int main() {
    std::vector<int> numbers{1, 2, 3};
    std::string text = numbers;  // no conversion from vector<int> to string
    return 0;
}
