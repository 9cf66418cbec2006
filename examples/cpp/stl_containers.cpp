// expect: ok
// stdout: sorted: 1 1 2 3 4 5 6 9
// stdout: unique: 1 2 3 4 5 6 9
// stdout: the -> 3
// stdout: top 2 by length: sandbox, program
//
// The standard library: vector + algorithms, set, map, unordered_map,
// a priority_queue, and a range-based pipeline.
#include <algorithm>
#include <iostream>
#include <map>
#include <numeric>
#include <queue>
#include <ranges>
#include <set>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

template <typename Range>
static void print(const char *label, Range &&items) {  // &&: views are not const-iterable
    std::cout << label << ':';
    for (const auto &item : items) std::cout << ' ' << item;
    std::cout << '\n';
}

int main() {
    std::vector<int> v{3, 1, 4, 1, 5, 9, 2, 6};
    std::sort(v.begin(), v.end());
    print("sorted", v);
    std::set<int> unique(v.begin(), v.end());
    print("unique", unique);
    std::cout << "sum = " << std::accumulate(v.begin(), v.end(), 0) << '\n';

    auto evens = v | std::views::filter([](int x) { return x % 2 == 0; })
                   | std::views::transform([](int x) { return x * x; });
    print("even squares", evens);

    // Count words: std::map keeps its keys in order.
    std::istringstream text("the cat and the hat and the bat");
    std::map<std::string, int> counts;
    for (std::string word; text >> word;) counts[word]++;
    for (const auto &[word, n] : counts) std::cout << word << " -> " << n << '\n';

    std::unordered_map<std::string, int> ages{{"Ada", 36}, {"Grace", 85}};
    ages["Linus"] = 21;
    std::cout << "Grace is " << ages.at("Grace") << ", " << ages.size() << " people\n";

    // The two longest words with a priority queue ordered by length.
    std::priority_queue<std::pair<std::size_t, std::string>> by_length;
    for (std::string w : {"a", "sandbox", "runs", "program", "safely"}) by_length.push({w.size(), w});
    std::string first = by_length.top().second;
    by_length.pop();
    std::cout << "top 2 by length: " << first << ", " << by_length.top().second << '\n';
    return 0;
}
