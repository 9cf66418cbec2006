// expect: ok
// stdout: read back: 3 lines, longest "sandboxed programs"
//
// File I/O with fstream in the run's private working directory: write a file,
// read it back. The directory and the file vanish when the run ends.
#include <fstream>
#include <iostream>
#include <string>

int main() {
    {
        std::ofstream out("notes.txt");
        if (!out) { std::cerr << "cannot write notes.txt\n"; return 1; }
        out << "hello\nsandboxed programs\nbye\n";
    }  // closed (and flushed) here
    std::ifstream in("notes.txt");
    if (!in) { std::cerr << "cannot read notes.txt\n"; return 1; }
    int lines = 0;
    std::string line, longest;
    while (std::getline(in, line)) {
        lines++;
        if (line.size() > longest.size()) longest = line;
    }
    std::cout << "read back: " << lines << " lines, longest \"" << longest << "\"\n";
    return 0;
}
