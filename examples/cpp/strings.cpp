// expect: ok
// stdout: upper: HELLO, SANDBOX
// stdout: fields: [name] [age] [city]
// stdout: palindrome? yes
//
// std::string and friends: case mapping, splitting, searching, formatting.
#include <algorithm>
#include <cctype>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

static std::vector<std::string> split(const std::string &s, char sep) {
    std::vector<std::string> parts;
    std::string part;
    std::istringstream in(s);
    while (std::getline(in, part, sep)) parts.push_back(part);
    return parts;
}

int main() {
    std::string greeting = "Hello, sandbox";
    std::string upper = greeting;
    std::transform(upper.begin(), upper.end(), upper.begin(),
                   [](unsigned char c) { return std::toupper(c); });
    std::cout << "upper: " << upper << '\n';

    std::cout << "fields:";
    for (const auto &f : split("name,age,city", ',')) std::cout << " [" << f << ']';
    std::cout << '\n';

    std::string word = "racecar";
    bool palindrome = std::equal(word.begin(), word.begin() + word.size() / 2, word.rbegin());
    std::cout << "palindrome? " << (palindrome ? "yes" : "no") << '\n';

    auto at = greeting.find("sandbox");
    std::cout << "'sandbox' found at " << at << ", length " << greeting.size()
              << ", starts with Hello: " << greeting.starts_with("Hello") << '\n';
    std::cout << "joined: " << greeting.substr(0, 5) + " " + std::to_string(2026) << '\n';
    return 0;
}
