// expect: ok
// stdout: circle area = 3.14
// stdout: total area = 15.14
// stdout: shapes destroyed: 2
//
// Classes, virtual functions, references and smart pointers: the shapes are
// owned by std::unique_ptr, so they are freed without a single `delete`.
#include <iomanip>
#include <iostream>
#include <memory>
#include <numbers>
#include <vector>

static int destroyed = 0;

class Shape {
public:
    virtual ~Shape() { destroyed++; }
    virtual double area() const = 0;
    virtual const char *name() const = 0;
};

class Circle : public Shape {
    double r_;
public:
    explicit Circle(double r) : r_(r) {}
    double area() const override { return std::numbers::pi * r_ * r_; }
    const char *name() const override { return "circle"; }
};

class Rectangle : public Shape {
    double w_, h_;
public:
    Rectangle(double w, double h) : w_(w), h_(h) {}
    double area() const override { return w_ * h_; }
    const char *name() const override { return "rectangle"; }
};

// A reference: no copy, no null.
static void grow(double &value, double by) { value += by; }

int main() {
    std::cout << std::fixed << std::setprecision(2);
    {
        std::vector<std::unique_ptr<Shape>> shapes;
        shapes.push_back(std::make_unique<Circle>(1.0));
        shapes.push_back(std::make_unique<Rectangle>(3.0, 4.0));
        double total = 0;
        for (const auto &s : shapes) {
            std::cout << s->name() << " area = " << s->area() << '\n';
            total += s->area();
        }
        std::cout << "total area = " << total << '\n';
        int raw[] = {1, 2, 3};
        int *p = raw;  // plain pointers still work as in C
        std::cout << "raw[2] via pointer = " << *(p + 2) << '\n';
        double x = 1.5;
        grow(x, 2.0);
        std::cout << "grown = " << x << '\n';
    }  // the vector and the shapes it owns are destroyed here
    std::cout << "shapes destroyed: " << destroyed << '\n';
    return 0;
}
