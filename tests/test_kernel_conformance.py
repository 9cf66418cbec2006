"""jupyter_kernel_test's protocol conformance suite, for each of the three DCodeX kernelspecs.

Left unset on purpose (the suite then reports them as skipped), because a kernel whose cells are
whole compiled programs has nothing to give for them:
- code_execute_result, code_history_pattern: a program has no value to show as Out[n]; it only
  writes to stdout and stderr (the suite's history test needs execute results too).
- code_display_data: a sandboxed program cannot send rich output, only text streams.
- code_page_something, code_clear_output: a program cannot reach the pager or clear the cell.
"""

from __future__ import annotations

import jupyter_kernel_test as jkt  # the module, so pytest does not collect its base classes

from .kernel_support import start_kernel, stop_kernel


class FromTestKernelspecs:
    """Start the kernel from the test kernelspecs (never the user's Jupyter dirs)."""

    @classmethod
    def setUpClass(cls):
        cls.km, cls.kc = start_kernel(cls.kernel_name)

    @classmethod
    def tearDownClass(cls):
        stop_kernel(cls.km, cls.kc)

    # Shift-Tab on the header line documents the header's options.
    code_inspect_sample = "%%dcodex --timeout 2"


class TestCKernel(FromTestKernelspecs, jkt.KernelTests):
    kernel_name = "dcodex-c"
    language_name = "c"
    file_extension = ".c"

    code_hello_world = '#include <stdio.h>\nint main(void) { printf("hello, world\\n"); return 0; }'
    code_stderr = '#include <stdio.h>\nint main(void) { fprintf(stderr, "oops\\n"); return 0; }'
    code_generate_error = "int main(void) { return 0 }"  # a compile error
    completion_samples = [
        {"text": "whil", "matches": {"while"}},
        {"text": "int total = 0;\nint main(void) { return tota", "matches": {"total"}},
    ]
    complete_code_samples = ["int main(void) { return 0; }", "%%dcodex c --timeout 2\nint x;"]
    incomplete_code_samples = ["int main(void) {", "int f(int a,", "/* a comment"]
    invalid_code_samples = ["int main(void) { return 0; }}", "int a[2] = {1, 2);"]


class TestCppKernel(FromTestKernelspecs, jkt.KernelTests):
    kernel_name = "dcodex-cpp"
    language_name = "c++"
    file_extension = ".cpp"

    code_hello_world = '#include <iostream>\nint main() { std::cout << "hello, world" << std::endl; }'
    code_stderr = '#include <iostream>\nint main() { std::cerr << "oops" << std::endl; }'
    code_generate_error = "int main() { return 1; }"  # builds, prints nothing, exits 1
    completion_samples = [
        {"text": "nullp", "matches": {"nullptr"}},
        {"text": "namesp", "matches": {"namespace"}},
    ]
    complete_code_samples = ["int main() { return 0; }", "template <class T> struct S { T t; };"]
    incomplete_code_samples = ["struct S {", "auto f = [](int x) {"]
    invalid_code_samples = ["int main() { return 0; )"]


class TestPythonKernel(FromTestKernelspecs, jkt.KernelTests):
    kernel_name = "dcodex-python"
    language_name = "python"
    file_extension = ".py"

    code_hello_world = 'print("hello, world")'
    code_stderr = 'import sys\nprint("oops", file=sys.stderr)'
    code_generate_error = "import sys\nsys.exit(3)"
    completion_samples = [
        {"text": "lambd", "matches": {"lambda"}},
        {"text": "answer = 42\nprint(answ", "matches": {"answer"}},
    ]
    complete_code_samples = ["x = 1", "print('hello')", "%%dcodex python\nx = 1"]
    incomplete_code_samples = ["for i in range(3):", "x = (1,", "def f(x):"]
    invalid_code_samples = ["x = (1))", "1 2"]


class TestIopubWelcome(jkt.IopubWelcomeTests):
    kernel_name = "dcodex-c"
    support_iopub_welcome = True  # ipykernel 7's XPUB IOPub socket greets each subscriber

    @classmethod
    def setUpClass(cls):
        cls.km, cls.kc = start_kernel(cls.kernel_name, channels=False)

    @classmethod
    def tearDownClass(cls):
        stop_kernel(cls.km, cls.kc)
