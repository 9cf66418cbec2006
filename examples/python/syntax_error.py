# expect: runtime_error
# message: status 1
#
# Python has no separate compile step here: a syntax error is reported when the
# interpreter starts, as a SyntaxError on stderr and exit status 1, so the
# status is runtime_error (not compile_error as for C and C++).
print("this line never runs"
